"""Unit families: score-function gradients by finite differences, sampling statistics, greedy
actions, state normalisations and the entropy definition (paper_method.md §2.1, §2.2, §2.5, §4.3)."""

import math

import numpy as np
import pytest

from async_coagents.core.units import (
    LOG_EPS,
    Bernoulli,
    Categorical,
    Gaussian,
    make_unit,
)
from async_coagents.errors import ConfigError
from tests.gradcheck import assert_grad_close, numeric_grad

RNG = np.random.default_rng(1234)


@pytest.mark.parametrize("k", [2, 3, 5])
def test_categorical_score_grad_matches_finite_differences(k):
    unit = Categorical(k, "unit")
    z = RNG.normal(size=(4, 3 * k)) * 2.0
    dist = unit.policy(z)
    action = unit.sample(dist, RNG)

    def total_log_prob():
        return float(unit.log_prob(unit.policy(z), action).sum())

    assert_grad_close(unit.score_grad(dist, action), numeric_grad(total_log_prob, z))


def test_bernoulli_score_carries_the_epsilon_inside_the_log():
    unit = Bernoulli()
    z = np.array([[0.0, 9.0]])  # pi(0) ~ 1.2e-4: comparable to the 1e-5 inside the log
    dist = unit.policy(z)
    a = np.array([[0]])
    p0 = dist[0, 0, 0]
    assert unit.log_prob(dist, a)[0, 0] == pytest.approx(math.log(p0 + LOG_EPS))
    # d/dz0 log(p0 + eps) = p0/(p0+eps) * (1 - p0), not (1 - p0)
    assert unit.score_grad(dist, a)[0, 0] == pytest.approx(p0 / (p0 + LOG_EPS) * (1 - p0))


@pytest.mark.parametrize("activation", ["identity", "relu"])
def test_gaussian_score_grad_matches_finite_differences_on_the_pre_activation(activation):
    unit = Gaussian(0.7, activation)
    mu = RNG.normal(size=(5, 4))
    action = unit.sample(mu, RNG)

    def total_log_prob():
        return float(unit.log_prob(mu, action).sum())

    assert_grad_close(unit.score_grad(mu, action), numeric_grad(total_log_prob, mu))


def test_categorical_sampling_frequencies_match_the_policy():
    unit = Categorical(3, "index")
    z = np.log(np.array([[0.2, 0.5, 0.3, 0.9, 0.05, 0.05]]))
    dist = unit.policy(np.repeat(z, 40_000, axis=0))
    actions = unit.sample(dist, np.random.default_rng(0))
    for u, probs in enumerate([[0.2, 0.5, 0.3], [0.9, 0.05, 0.05]]):
        freq = np.bincount(actions[:, u], minlength=3) / len(actions)
        # 40,000 draws: the standard error of a frequency is <= 0.0025; 4 s.e. tolerance
        np.testing.assert_allclose(freq, probs, atol=0.01)


def test_bernoulli_sampling_frequency_and_greedy():
    unit = Bernoulli()
    z = np.tile([[0.0, math.log(3.0)]], (40_000, 1))  # P(a=1) = 3/4
    dist = unit.policy(z)
    a = unit.sample(dist, np.random.default_rng(1))
    assert abs(a.mean() - 0.75) < 0.01
    assert (unit.greedy(dist) == 1).all()
    assert unit.transition(a).dtype == np.float64 and set(np.unique(unit.transition(a))) <= {0, 1}


def test_gaussian_sampling_moments_and_greedy_mean():
    unit = Gaussian(0.5, "relu")
    mu = np.full((50_000, 1), 0.3)
    a = unit.sample(mu, np.random.default_rng(2))
    assert abs(a.mean() - 0.3) < 0.01 and abs(a.std() - 0.5) < 0.01
    assert unit.greedy(mu) is mu
    assert (unit.transition(np.array([[-1.0, 2.0]])) == [[0.0, 2.0]]).all()


@pytest.mark.parametrize(
    "normalisation, expected",
    [("index", [0, 1, 2, 3, 4]), ("unit", [0, 0.25, 0.5, 0.75, 1]),
     ("symmetric", [-1, -0.5, 0, 0.5, 1])],
)
def test_categorical_state_normalisations(normalisation, expected):
    unit = Categorical(5, normalisation)
    np.testing.assert_allclose(unit.transition(np.arange(5)[None, :]), [expected])


def test_symmetric_binary_state_is_plus_minus_one():
    unit = Categorical(2, "symmetric")
    np.testing.assert_array_equal(unit.transition(np.array([[0, 1]])), [[-1.0, 1.0]])


def test_entropy_definition_adds_1e_minus_9():
    unit = Categorical(2, "unit")
    dist = np.array([[[0.5, 0.5], [1.0, 0.0]]])
    h = unit.entropy(dist)
    assert h[0, 0] == pytest.approx(-2 * (0.5 + 1e-9) * math.log(0.5 + 1e-9))
    assert h[0, 1] == pytest.approx(-(1 + 1e-9) * math.log(1 + 1e-9) - 1e-9 * math.log(1e-9))
    g = Gaussian(2.0)
    assert g.entropy(np.zeros((1, 3)))[0, 0] == pytest.approx(0.5 * math.log(2 * math.pi * math.e * 4))


def test_activity_is_normalised_greedy_index():
    np.testing.assert_allclose(Categorical(5).activity(np.array([[0, 2, 4]])), [[0, 0.5, 1]])
    np.testing.assert_allclose(Gaussian(1.0, "relu").activity(np.array([[-1.0, 0.5]])), [[0, 1]])


@pytest.mark.parametrize(
    "kwargs, message",
    [(dict(family="binary"), "unit family"),
     (dict(family="categorical", n_actions=1), "n_actions"),
     (dict(family="categorical", normalisation="scaled"), "normalisation"),
     (dict(family="gaussian", sigma=0.0), "sigma"),
     (dict(family="gaussian", sigma=float("nan")), "sigma"),
     (dict(family="gaussian", activation="tanh"), "activation")],
)
def test_bad_unit_settings_are_named(kwargs, message):
    family = kwargs.pop("family")
    with pytest.raises(ConfigError, match=message):
        make_unit(family, **kwargs)


def test_a_one_hot_output_unit_passes_on_the_code_of_its_class():
    from async_coagents.core.units import OneHotCategorical

    unit = OneHotCategorical(4)
    h = unit.transition(np.array([[2], [0]]), np.float32)
    assert h.dtype == np.float32 and h.tolist() == [[0, 0, 1, 0], [1, 0, 0, 0]]
    assert unit.width(1) == 4 and unit.n_logits == 4


@pytest.mark.parametrize("activation", ["relu", "identity"])
def test_gaussian_activity_and_entropy_sums_are_those_of_their_definitions(activation):
    from async_coagents.core.metrics import LayerActivity

    unit = Gaussian(1.7, activation)
    action = np.array([[-1.0, 0.0, -0.0, 2.0, np.nan, 1e-30]] * 3, dtype=np.float32)
    expected = (unit.transition(action) != 0).astype(np.float32)  # phi(mu) != 0, NaN active
    np.testing.assert_array_equal(unit.activity(action), expected)
    dist = np.random.default_rng(0).normal(size=(1000, 6)).astype(np.float32)
    sums = LayerActivity.of(unit, dist, dist)
    by_definition = unit.entropy(dist).sum(axis=-2, dtype=np.float64)
    assert np.array_equal(sums.entropy_sum, by_definition)  # bit for bit
    assert sums.activity_sum == float((unit.transition(dist) != 0).sum())


def test_two_action_fast_path_gives_the_general_formulas_numbers() -> None:
    """Bernoulli units (K = 2) skip numpy's reductions over an axis of length 2; the policy,
    greedy action and entropy must stay the general softmax's numbers bit for bit (the regression
    fixture relies on it), in float32 and float64, at ties and at large logits."""
    rng = np.random.default_rng(3)
    unit = Bernoulli()
    for dtype in (np.float32, np.float64):
        for scale in (1e-3, 1.0, 40.0):
            z = (rng.standard_normal((5, 3, 16)) * scale).astype(dtype)
            z[0] = 0.0  # exact ties
            pairs = z.reshape(5, 3, 8, 2)
            expected = np.exp(pairs - pairs.max(axis=-1, keepdims=True))
            expected /= expected.sum(axis=-1, keepdims=True)
            dist = unit.policy(z)
            assert dist.dtype == expected.dtype and np.array_equal(dist, expected)
            assert np.array_equal(unit.greedy(dist), expected.argmax(axis=-1))
            p = expected + 1e-9
            assert np.array_equal(unit.entropy(dist), -(p * np.log(p)).sum(axis=-1))
