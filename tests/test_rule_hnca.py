"""HNCA (Young 2022, ``core/rules/hnca.py``): the message against a brute-force recomputation, the
estimator's expectation against the exact gradient of the expected reward (every joint action
enumerated), Young's baseline schedule, the routing, the networks it refuses, and learning the
6-bit multiplexer from the command line's own path."""

import itertools

import numpy as np
import pytest

from async_coagents.core.layers import CoagentLayer
from async_coagents.core.network import NetworkSpec, build_network
from async_coagents.core.rules import Hnca, HncaPlain, Step
from async_coagents.core.rules.hnca import credit_factor
from async_coagents.errors import ConfigError
from async_coagents.testing import train_in_process

TINY = dict(n_inputs=3, n_outputs=3, output="categorical", dtype="float64")


def random_network(hidden, rule="hnca", seed=0, scale=3.0, **spec):
    """A float64 HNCA network with weights larger than the initialisation's (probabilities away
    from 1/2, so every term of the estimator matters)."""
    net = build_network(NetworkSpec(**{**TINY, **spec}, hidden=hidden, rule=rule), seed)
    for layer in net.layers:
        layer.net.params *= scale
    return net


def layer_step(layer: CoagentLayer, state, action, reward=None, feedback=None) -> Step:
    """The Step ``layer``'s rule sees for ``state (B, J)`` and a given ``action (B, U)``."""
    z = layer.policy(state)
    dist = layer.unit.policy(z)
    return Step(state, layer.unit.transition(action, layer.dtype), dist, action, reward, feedback,
                layer.unit, layer.dtype, 0, layer.policy)


# ---- the message -----------------------------------------------------------------------------
@pytest.mark.parametrize("above", [1, 2], ids=["bernoulli-layer-above", "categorical-output"])
def test_the_message_is_the_log_probability_of_the_action_above_with_each_input_set_to_0_and_1(
        above):
    net = random_network((6, 5), n_outputs=4)
    layer, below = net.layers[above], net.layers[above - 1]
    rng = np.random.default_rng(1)
    state = rng.integers(0, 2, (7, below.n_units)).astype(np.float64)
    action = layer.unit.sample(layer.unit.policy(layer.policy(state)), rng)
    step = layer_step(layer, state, action)
    sent = layer.rule.message(step)
    assert sent.shape == (7, *layer.rule.message_shape(below.n_units)) == (7, below.n_units, 2)
    assert below.feedback_shape == (below.n_units, 2)
    brute = np.empty_like(sent)
    for j, v in itertools.product(range(below.n_units), (0, 1)):
        s = state.copy()
        s[:, j] = v
        dist = layer.unit.policy(layer.policy(s))  # a full forward of the layer above
        chosen = np.take_along_axis(dist, action[:, :, None], axis=2)[:, :, 0]
        brute[:, j, v] = np.log(chosen).sum(axis=1)
    np.testing.assert_allclose(sent, brute, rtol=1e-12, atol=1e-12)
    assert np.ptp(sent, axis=2).min() > 0  # every input changes the action's probability


def test_the_bottom_layer_sends_nothing_and_every_layer_takes_the_reward():
    net = random_network((4, 3))
    assert [layer.sends_feedback for layer in net.layers] == [False, True, True]
    assert [layer.listens_to_feedback for layer in net.layers] == [True, True, False]
    assert all(layer.needs_reward for layer in net.layers)
    step = layer_step(net.layers[0], np.ones((2, 3)), np.zeros((2, 4), dtype=np.intp))
    assert net.layers[0].rule.message(step) is None


# ---- the estimator against the exact gradient -------------------------------------------------
def enumerate_network(net, x, y):
    """Every joint action of the network on one input ``x (d,)`` with label ``y``: per layer the
    Steps of all joint actions at once (one row each), their probabilities ``(N,)`` and the
    reward ``(N,)``."""
    layers = net.layers
    choices = [range(layer.unit.n_actions) for layer in layers for _ in range(layer.n_units)]
    rows = np.array(list(itertools.product(*choices)), dtype=np.intp)
    state = np.repeat(x[None, :], len(rows), axis=0)
    prob = np.ones(len(rows))
    steps, start = [], 0
    for layer in layers:
        action = rows[:, start:start + layer.n_units]
        start += layer.n_units
        step = layer_step(layer, state, action)
        prob *= np.take_along_axis(step.dist, action[:, :, None], axis=2)[:, :, 0].prod(axis=1)
        steps.append(step)
        state = step.out
    reward = net.objective.reward(state, np.full(len(rows), y))
    return steps, prob, reward


def expected_reward(net, x, y) -> float:
    _, prob, reward = enumerate_network(net, x, y)
    return float(prob @ reward)


def exact_gradient(net, layer, x, y, eps=1e-6) -> np.ndarray:
    """Central differences of the enumerated expected reward in ``layer``'s parameters."""
    params, grad = layer.net.params, np.empty_like(layer.net.params)
    for i in range(params.size):
        keep = params[i]
        params[i] = keep + eps
        up = expected_reward(net, x, y)
        params[i] = keep - eps
        down = expected_reward(net, x, y)
        params[i] = keep
        grad[i] = (up - down) / (2 * eps)
    return grad


def with_messages(net, steps, reward) -> list[Step]:
    """The Steps of every layer with the reward and, top-down, the message of the layer above
    (each computed before that layer's step, as the layer sends it)."""
    feedback, done = None, []
    for layer, step in reversed(list(zip(net.layers, steps, strict=True))):
        step = Step(step.state, step.out, step.dist, step.action, reward, feedback, step.unit,
                    step.dtype, 0, step.policy)
        feedback = layer.rule.message(step)
        done.append(step)
    return done[::-1]


def expected_estimate(net, x, y) -> list[np.ndarray]:
    """Per layer, the expectation over every joint action of the rule's estimate of the gradient
    of the expected reward in the layer's parameters (its step is ``-lr`` times the estimate)."""
    steps, prob, reward = enumerate_network(net, x, y)
    estimates = []
    for layer, step in zip(net.layers, with_messages(net, steps, reward), strict=True):
        d = layer.rule.policy_grad(step)  # dJ/dz = -(1/N) estimate_b
        _, cache = layer.policy.forward(step.state)
        layer.policy.backward(cache, d * (-len(prob) * prob)[:, None])  # sum_b P_b estimate_b
        estimates.append(layer.policy.grad.copy())
    return estimates


@pytest.mark.parametrize("hidden", [(3,), (3, 2)], ids=["1-hidden-layer", "2-hidden-layers"])
@pytest.mark.parametrize("rule,baseline", [("hnca", 0.37), ("hnca-plain", None)])
def test_the_estimate_of_every_layer_is_unbiased_for_the_gradient_of_the_expected_reward(
        hidden, rule, baseline):
    net = random_network(hidden, rule=rule, seed=2, miss_reward=-0.5)
    for layer in net.layers:
        if baseline is not None:
            layer.rule.baseline.value = baseline  # any baseline: it adds nothing in expectation
    x, y = np.array([1.0, -0.5, 0.25]), 1
    for layer, estimate in zip(net.layers, expected_estimate(net, x, y), strict=True):
        exact = exact_gradient(net, layer, x, y)
        assert np.abs(exact).max() > 1e-2
        # the output's REINFORCE step keeps the log(pi + 1e-5) score, off by pi/(pi + 1e-5)
        tol = 1e-7 if layer is not net.output else 1e-4
        np.testing.assert_allclose(estimate, exact, rtol=0, atol=tol * np.abs(exact).max(),
                                   err_msg=layer.name)


def test_the_hidden_estimate_is_not_reinforces():
    """For the same sampled actions HNCA's hidden step differs from REINFORCE's (the two agree
    only in expectation): the credit is not the score."""
    net = random_network((3,), rule="hnca-plain", seed=2)
    steps, _, reward = enumerate_network(net, np.array([1.0, -0.5, 0.25]), 1)
    hidden = net.layers[0]
    step = with_messages(net, steps, reward)[0]
    reinforce = super(Hnca, hidden.rule).policy_grad(step)  # GlobalBaseline's score step
    assert not np.allclose(hidden.rule.policy_grad(step), reinforce, rtol=0.1, atol=0)


def test_the_credit_factor_is_youngs_closed_form():
    """``rho_1 - rho_0`` with Young's ``compute_credit_factor``: ``delta = log P_0 - log P_1``,
    ``rho_1 = 1 / (p + (1 - p) e^delta)``, ``rho_0 = 1 / (p e^-delta + 1 - p)``."""
    rng = np.random.default_rng(3)
    p = rng.uniform(0.01, 0.99, (5, 4))
    message = rng.normal(scale=2.0, size=(5, 4, 2)) - 3.0
    delta = message[..., 0] - message[..., 1]
    young = 1 / (p + (1 - p) * np.exp(delta)) - 1 / (p * np.exp(-delta) + (1 - p))
    np.testing.assert_allclose(credit_factor(p, message), young, rtol=1e-12)
    assert np.all(np.isfinite(credit_factor(np.full(2, 1e-5), np.array([[-800.0, 0.0],
                                                                       [0.0, -800.0]]))))


# ---- baseline and configuration --------------------------------------------------------------
def test_the_baseline_follows_youngs_schedule_and_hnca_plain_has_none():
    spec = dict(n_inputs=4, n_outputs=3, hidden=(5, 4), output="categorical", miss_reward=0.0,
                baseline_decay=0.9)
    net = build_network(NetworkSpec(**spec, rule="hnca"), 0)
    assert all(layer.baseline.value == 0.0 for layer in net.layers)  # b = 0 before the first batch
    rng = np.random.default_rng(0)
    data = [(sid, rng.normal(size=(16, 4)).astype(np.float32), rng.integers(0, 3, 16))
            for sid in range(2)]
    (loss,) = train_in_process(net, data[:1])
    assert [layer.baseline.value for layer in net.layers] == pytest.approx([0.1 * -loss] * 3)
    plain = build_network(NetworkSpec(**spec, rule="hnca-plain"), 0)
    train_in_process(plain, data)
    assert all(layer.baseline.name == "none" for layer in plain.layers)
    assert type(plain.layers[0].rule) is HncaPlain


@pytest.mark.parametrize("change,match", [
    (dict(output="readout"), "categorical output coagent"),
    (dict(output=None), "categorical output coagent"),
    (dict(units="categorical", n_actions=3), "Bernoulli hidden units"),
    (dict(units="gaussian", output="gaussian", task="regression", n_outputs=1),
     "Bernoulli hidden units"),
    (dict(units_per_agent=2), "node groups"),
    (dict(subset=2), "every unit to sample"),
    (dict(freeze_at=(None, 3)), "freeze no earlier than the layer below"),
])
def test_networks_hnca_cannot_train_are_refused_by_name(change, match):
    spec = {**dict(n_inputs=4, n_outputs=3, hidden=(5, 4), output="categorical"), **change}
    for rule in ("hnca", "hnca-plain"):
        with pytest.raises(ConfigError, match=match):
            NetworkSpec(**spec, rule=rule)


def test_staged_freezing_bottom_up_is_allowed():
    NetworkSpec(n_inputs=4, n_outputs=3, hidden=(5, 4), output="categorical", rule="hnca",
                freeze_at=(2, None))


# ---- learning --------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("hidden", ["[32]", "[32, 32]"])
def test_hnca_learns_the_6_bit_multiplexer(tmp_path, hidden):
    """``coagents train quickstart --set network.rule="hnca" --set network.output="categorical"``
    with a bounded budget and a fixed seed."""
    from async_coagents.experiment import config as cfg
    from async_coagents.experiment.run import train

    ((config, _),) = cfg.load("quickstart", [
        'network.rule="hnca"', 'network.output="categorical"', f"network.hidden={hidden}",
        "run.updates=1500", "run.eval_every=500", "run.seed=0"])
    summary = train(config, tmp_path / "run", progress=False)
    # measured (seeds 0-5, 1500 updates): greedy test accuracy >= 0.95 from update 1,250 at the
    # latest, 1.0 at the end, for [32] and [32, 32]
    assert summary["final"]["test_accuracy"] >= 0.95
