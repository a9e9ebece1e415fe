"""Generated tasks: the multiplexer truth table and the statistics of the correlated stream (§5.3).

Statistical tolerances are 5 standard errors of the estimator (computed in each test from the
sampling model), so a correct generator fails with probability below 1e-6 per check, while a
wrong variance, walk coefficient or stationary start moves the estimate by many standard errors.
"""

import math

import numpy as np
import pytest

from async_coagents.data.streams import CorrelatedStream
from async_coagents.data.tasks import (
    STATIONARY_VARIANCE,
    CorrelatedSpec,
    correlated_eval_sets,
    correlated_means,
    multiplexer,
    multiplexer_labels,
)
from async_coagents.errors import ConfigError

V = STATIONARY_VARIANCE
DIFFICULTIES = [0.0, 0.5, 0.85, 0.95, 0.98, 1.0]
M, S, B = 20_000, 2, 8  # 20,000 mean-blocks of 16 samples: 320,000 samples per difficulty


def test_multiplexer_6_bits():
    task = multiplexer(2)
    assert (task.n_features, task.n_classes, len(task.train)) == (6, 2, 64)
    assert task.train is task.valid is task.test
    assert set(np.unique(task.train.x)) == {-1.0, 1.0} and task.train.x.dtype == np.float32
    x, y = task.train.x, task.train.y
    # address 10 (binary) = 2 selects data bit d2, the 5th input
    row = np.flatnonzero((x == [1, -1, -1, -1, 1, -1]).all(axis=1))
    assert y[row].tolist() == [1]
    row = np.flatnonzero((x == [1, -1, 1, 1, -1, 1]).all(axis=1))
    assert y[row].tolist() == [0]
    assert len(np.unique(x, axis=0)) == 64 and y.sum() == 32


@pytest.mark.parametrize("k", [1, 2, 3])
def test_multiplexer_labels_match_definition(k):
    task = multiplexer(k)
    n = k + 2**k
    assert task.train.x.shape == (2**n, n)
    for pattern, label in zip(task.train.x, task.train.y, strict=True):
        address = int("".join("1" if b > 0 else "0" for b in pattern[:k]), 2)
        assert label == (pattern[k + address] > 0)
    np.testing.assert_array_equal(multiplexer_labels((task.train.x + 1) / 2, k), task.train.y)


@pytest.mark.parametrize(("bits", "match"), [(0, ">= 1"), (5, "at most 4"), (2.0, "integer")])
def test_multiplexer_bad_address_bits(bits, match):
    with pytest.raises(ConfigError, match=f"address_bits.*{match}"):
        multiplexer(bits)


@pytest.fixture(scope="module", params=DIFFICULTIES)
def collected(request):
    """(d, stream, x (M, S·B), y (M, S·B)) for one difficulty."""
    d = request.param
    stream = CorrelatedStream(d, M, S, B, seed=7)
    batches = list(stream)
    assert [b.sid for b in batches] == list(range(M * S))
    assert all(b.x.shape == (B, 1) and b.x.dtype == np.float32 for b in batches[:3])
    x = np.concatenate([b.x[:, 0] for b in batches]).reshape(M, S * B).astype(np.float64)
    y = np.concatenate([b.y for b in batches]).reshape(M, S * B)
    return d, stream, x, y


def test_marginal_variance_is_one_quarter(collected):
    d, _, x, _ = collected
    # E[x²] = V for every d. Var of the mean of x² over the stream, from the model
    # x = m_k + σ z (m an AR(1) walk of variance dV, ρ² = 1 − d): 2V²[d(2 − d)/M + (1 − d²)/n].
    n = x.size
    se = math.sqrt(2 * V**2 * (d * (2 - d) / M + (1 - d**2) / n))
    assert abs(np.mean(x**2) - V) < 5 * se


def test_within_block_variance(collected):
    d, _, x, _ = collected
    within = x.var(axis=1, ddof=1).mean()
    if d == 1.0:
        assert within == 0.0  # σ_seg = 0: a block is one point repeated S·B times
        return
    # mean of M unbiased variances of S·B normal samples: SE = σ² √(2 / (M (S·B − 1)))
    sigma2 = (1 - d) * V
    assert abs(within - sigma2) < 5 * sigma2 * math.sqrt(2 / (M * (S * B - 1)))


def test_batches_are_centred_on_the_walk(collected):
    d, stream, x, _ = collected
    residual = x.mean(axis=1) - stream.block_means
    # block-mean residuals are N(0, σ²/(S·B)); the mean of their squares has SE √(2/M) of that
    expected = (1 - d) * V / (S * B)
    assert abs(np.mean(residual**2) - expected) <= 5 * expected * math.sqrt(2 / M) + 1e-12


def test_lag_one_correlation_of_block_means(collected):
    d, stream, _, _ = collected
    m = stream.block_means
    assert m.shape == (M,)
    if d == 0.0:
        assert np.all(m == 0.0)  # the means are exactly 0, the stream is i.i.d. N(0, V)
        return
    rho = math.sqrt(1 - d)
    r1 = np.corrcoef(m[:-1], m[1:])[0, 1]
    # Bartlett: the lag-1 sample autocorrelation of an AR(1) has SE √((1 − ρ²)/M); its bias,
    # about (1 + 3ρ)/M <= 2e-4, is covered by the 1e-3 margin
    assert abs(r1 - rho) < 5 * math.sqrt((1 - rho**2) / M) + 1e-3
    # stationary variance dV: the mean of m² has SE √(2V² d(2 − d)/M)
    assert abs(np.mean(m**2) - d * V) < 5 * math.sqrt(2 * V**2 * d * (2 - d) / M)


def test_targets(collected):
    _, _, x, y = collected
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, np.sin(2 * np.pi * x**2), atol=1e-6)


@pytest.mark.parametrize("d", [0.5, 1.0])
def test_walk_starts_stationary(d):
    # m_1 ~ N(0, dV) (not 0): over 4,000 independent walks, Var(m_1) has SE dV √(2/4000)
    spec = CorrelatedSpec(d, means=1, segments=1, batch=1)
    rng = np.random.default_rng(3)
    first = np.array([correlated_means(spec, rng)[0] for _ in range(4000)])
    assert abs(np.mean(first**2) - d * V) < 5 * d * V * math.sqrt(2 / 4000)


def test_eval_sets():
    spec = CorrelatedSpec(0.95, means=1000, segments=100, batch=32)
    valid, test = correlated_eval_sets(spec, seed=1)
    assert len(valid) == len(test) == 32_000 == spec.eval_size
    assert valid.x.shape == (32_000, 1) and valid.x.dtype == np.float32
    # i.i.d. N(0, V): the mean of x² has SE V √(2/n) = 0.002, the mean SE √(V/n) = 0.0028
    for split in (valid, test):
        assert abs(np.mean(split.x.astype(np.float64) ** 2) - V) < 5 * V * math.sqrt(2 / 32_000)
        assert abs(split.x.mean()) < 5 * math.sqrt(V / 32_000)
        np.testing.assert_allclose(split.y, np.sin(2 * np.pi * split.x[:, 0].astype(float) ** 2), atol=1e-6)
    assert not np.array_equal(valid.x, test.x)
    again, _ = correlated_eval_sets(spec, seed=1)
    np.testing.assert_array_equal(again.x, valid.x)
    assert CorrelatedSpec(0.0, means=3, segments=7, batch=5).eval_size == 1  # ⌊105/100⌋


def test_spec_derived_quantities_match_the_paper_table():
    spec = CorrelatedSpec(0.85, means=200, segments=1600)
    assert spec.batch == 32 and spec.total_batches == 320_000 and spec.eval_size == 102_400
    assert spec.segment_variance == pytest.approx(0.0375)
    assert spec.noise_variance == pytest.approx(0.1806, abs=1e-4)
    assert spec.rho == pytest.approx(0.387, abs=1e-3)


@pytest.mark.parametrize(
    ("knobs", "match"),
    [
        ({"difficulty": 1.5}, "difficulty must be a number in"),
        ({"difficulty": -0.1}, "difficulty"),
        ({"difficulty": float("nan")}, "difficulty"),
        ({"means": 0}, "means must be an integer >= 1"),
        ({"segments": -3}, "segments"),
        ({"batch": 0}, "batch"),
        ({"batch": 2.5}, "batch"),
    ],
)
def test_bad_correlated_knobs(knobs, match):
    args = {"difficulty": 0.5, "means": 2, "segments": 2, "batch": 4} | knobs
    with pytest.raises(ConfigError, match=match):
        CorrelatedSpec(**args)
    with pytest.raises(ConfigError, match=match):
        CorrelatedStream(**args, seed=0)
