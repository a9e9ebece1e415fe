"""Weight Maximization (``weight-max``, Chung AAAI 2022): the message a layer sends down is, per
example and per unit below, the change of that unit's outgoing squared L2 norm along the layer's
per-example update at its post-step weights — checked against a brute-force computation from the
weights alone; the per-unit returns reach the layer below with the right shape and sign; the
shared checks with subsets, clock rates, staged freezing, categorical and Gaussian units; the
networks it refuses; and, seeded and bounded, it learns the 6-bit multiplexer through two hidden
layers."""

import numpy as np
import pytest

from async_coagents import testing
from async_coagents.core.metrics import evaluate
from async_coagents.core.network import NetworkSpec, build_network
from async_coagents.core.optim import SGD
from async_coagents.core.rules import WeightMax
from async_coagents.core.units import LOG_EPS
from async_coagents.data import UniformPatterns, multiplexer
from async_coagents.errors import ConfigError
from async_coagents.testing import FAMILIES, _can_train, train_in_process

EPS = 1e-6


def tiny_network(seed: int = 3, hidden=(4, 5), n_outputs: int = 3, lr: float = 0.1):
    """Bernoulli hidden layers under a categorical output (K = n_outputs logits), in float64 and
    with SGD, so that a step is exactly ``lr`` times the batch-mean ascent direction."""
    spec = NetworkSpec(n_inputs=3, n_outputs=n_outputs, hidden=hidden, units="bernoulli",
                       output="categorical", rule="weight-max", dtype="float64", lr=lr)
    net = build_network(spec, seed)
    for layer in net.layers:
        layer.set_optimizer(SGD(layer.net.params.size, lr, np.float64))
    return net


def forward(net, x: np.ndarray, sid: int = 0) -> list[np.ndarray]:
    """The input of every layer and the network's one-hot output, bottom to top."""
    states = [x]
    for layer in net.layers:
        states.append(layer.forward(sid, states[-1]))
    return states


def brute_force_update(w: np.ndarray, b: np.ndarray, k: int, s: np.ndarray, action: np.ndarray,
                       g: np.ndarray) -> np.ndarray:
    """Per-example ascent direction ``G_bu d log(pi(a_bu | s_b; W) + 1e-5) / dW`` of a layer of
    K-logit softmax units (``(B, n_in, U*K)``), by central differences in ``W``."""
    def log_pi(w_):
        z = (s @ w_ + b).reshape(len(s), -1, k)
        p = np.exp(z - z.max(axis=2, keepdims=True))
        p /= p.sum(axis=2, keepdims=True)
        chosen = np.take_along_axis(p, action[:, :, None], axis=2)[:, :, 0]
        return (g * np.log(chosen + LOG_EPS)).sum(axis=1)  # (B,)

    update = np.zeros((len(s), *w.shape))
    for i in np.ndindex(w.shape):
        up, down = w.copy(), w.copy()
        up[i] += EPS
        down[i] -= EPS
        update[(slice(None), *i)] = (log_pi(up) - log_pi(down)) / (2 * EPS)
    return update


def brute_force_norm_change(w_after: np.ndarray, update: np.ndarray) -> np.ndarray:
    """``d/de ||W'_j + e Delta_{b,j}||^2`` at 0 for every example b and row j, by central
    differences of the squared norm: ``(B, n_in)``."""
    up = ((w_after[None] + EPS * update) ** 2).sum(axis=2)
    down = ((w_after[None] - EPS * update) ** 2).sum(axis=2)
    return (up - down) / (2 * EPS)


def test_the_output_sends_the_change_of_each_units_outgoing_squared_norm():
    net = tiny_network()
    out = net.layers[-1]
    x = np.random.default_rng(0).normal(size=(6, 3))
    states = forward(net, x)
    s, action = states[-2], states[-1].argmax(axis=1)[:, None]  # the output unit's sampled class
    w, b = out.policy.weights[0].copy(), out.policy.biases[0].copy()
    r = np.array([1.0, -1.0, 1.0, 1.0, -1.0, 0.5])

    sent = out.reward(0, r)

    update = brute_force_update(w, b, 3, s, action, r[:, None])
    w_after = out.policy.weights[0]
    # the update is the one the step applied: SGD ascent on the batch mean
    np.testing.assert_allclose(w_after, w + 0.1 * update.mean(axis=0), atol=1e-8)
    assert sent.shape == (6, 5)
    np.testing.assert_allclose(sent, brute_force_norm_change(w_after, update), atol=1e-6)
    # a unit that passed 0 changed none of its outgoing weights: it is paid nothing
    assert not sent[s == 0].any() and (s == 0).any()
    # Chung's softmax drops its last logit (K - 1 columns): his sum, with his weight replaced by
    # ours minus the dropped logit's column, is our sum over all K columns
    chung = 2 * (update[:, :, :2] * (w_after[:, :2] - w_after[:, 2:])[None]).sum(axis=2)
    np.testing.assert_allclose(sent, chung, atol=1e-6)


def test_a_hidden_layer_sends_the_change_made_by_its_per_unit_returns():
    net = tiny_network()
    middle = net.layers[1]
    x = np.random.default_rng(1).normal(size=(6, 3))
    states = forward(net, x)
    s, action = states[1], states[2].astype(np.intp)  # Bernoulli: the state is the action
    w, b = middle.policy.weights[0].copy(), middle.policy.biases[0].copy()
    g = np.random.default_rng(2).normal(size=(6, 5))  # per-unit returns R from the output

    sent = middle.feedback(0, g)

    update = brute_force_update(w, b, 2, s, action, g)
    w_after = middle.policy.weights[0]
    np.testing.assert_allclose(w_after, w + 0.1 * update.mean(axis=0), atol=1e-8)
    assert sent.shape == (6, 4)
    np.testing.assert_allclose(sent, brute_force_norm_change(w_after, update), atol=1e-6)


def test_per_unit_returns_reach_the_layer_below_with_the_right_shape_and_sign():
    """One example per batch, SGD with a small step: the return of each unit below is what the
    layer above sent, and it has the sign of the change the layer above's step made to the
    unit's outgoing squared norm (a unit whose outgoing weights grew is rewarded)."""
    lr = 1e-3
    net = tiny_network(seed=5, hidden=(6, 5), lr=lr)
    assert [layer.needs_reward for layer in net.layers] == [False, False, True]
    assert [layer.sends_feedback for layer in net.layers] == [False, True, True]
    received = {layer.name: [] for layer in net.layers[:-1]}
    sent, grown = {layer.name: [] for layer in net.layers[1:]}, {}

    def record(layer, below):
        signal, learn = layer.rule.signal, layer._learn
        returns = []  # G of the batch being learnt (the step's, then the message's recomputation)

        def recording_signal(step):
            returns.append(np.array(signal(step)))
            return returns[-1]

        def recording_learn(entry):
            returns.clear()
            before = (layer.policy.weights[0] ** 2).sum(axis=1)
            message = learn(entry)
            if entry.feedback is not None:
                received[layer.name].append(returns[0])
            if below is not None:
                sent[layer.name].append(message)
                grown.setdefault(layer.name, []).append(
                    (layer.policy.weights[0] ** 2).sum(axis=1) - before)
            return message

        layer.rule.signal, layer._learn = recording_signal, recording_learn

    for i, layer in enumerate(net.layers):
        record(layer, net.layers[i - 1] if i else None)
    rng = np.random.default_rng(0)
    data = [(sid, rng.normal(size=(1, 3)), rng.integers(0, 3, 1)) for sid in range(40)]
    train_in_process(net, data)

    for lower, upper in zip(net.layers[:-1], net.layers[1:], strict=True):
        got, sent_down = np.array(received[lower.name]), np.array(sent[upper.name])
        assert got.shape == (40, 1, lower.n_units)
        np.testing.assert_array_equal(got, sent_down)  # G of the unit below = R sent to it
        change = np.array(grown[upper.name])[:, None, :] / lr  # the step's change, per unit lr
        moved = np.abs(change) > 1e-3
        assert moved.sum() > 20
        assert np.array_equal(np.sign(got[moved]), np.sign(change[moved]))
        np.testing.assert_allclose(got, change, atol=1e-2)  # first order in lr


def test_a_frozen_layer_changes_no_weight_and_sends_zeros():
    spec = NetworkSpec(n_inputs=3, n_outputs=3, hidden=(6, 5), units="bernoulli",
                       output="categorical", rule="weight-max", freeze_at=(None, 0), lr=0.05)
    net = build_network(spec, 0)
    bottom = net.layers[0]
    start = bottom.net.params.copy()
    rng = np.random.default_rng(0)
    train_in_process(net, [(sid, rng.normal(size=(4, 3)).astype(np.float32),
                            rng.integers(0, 3, 4)) for sid in range(5)])
    assert bottom.stats.applied == 5
    np.testing.assert_array_equal(bottom.net.params, start)  # paid 0 by the frozen layer above


def test_the_rule_trains_the_networks_with_a_stochastic_output_only():
    assert [f for f in FAMILIES if _can_train("weight-max", f)] == ["gaussian",
                                                                    "categorical-output"]
    base = dict(n_inputs=3, n_outputs=2, hidden=(4, 4), rule="weight-max")
    with pytest.raises(ConfigError, match="stochastic output coagent.*'readout'"):
        NetworkSpec(**base)
    with pytest.raises(ConfigError, match="partition 'ds'"):
        NetworkSpec(**{**base, "n_outputs": 1}, task="regression", units="gaussian",
                    partition="ds")
    with pytest.raises(ConfigError, match="node groups"):
        NetworkSpec(**base, output="categorical", units_per_agent=2)


@pytest.mark.parametrize("extra", [
    dict(subset=3), dict(update_every=(1, 2, 1)), dict(freeze_at=(2, None)),
    dict(units="categorical", n_actions=4, dtype="float64"),
    dict(n_outputs=1, task="regression", units="gaussian", output="gaussian"),
], ids=["subset", "clock-rates", "staged", "categorical-4-float64", "gaussian-identity"])
def test_variants_pass_the_shared_checks(extra):
    spec = {**dict(n_inputs=5, n_outputs=3, hidden=(8, 7), output="categorical",
                   rule="weight-max", lr=0.01), **extra}
    testing.check_network(lambda seed: build_network(NetworkSpec(**spec), seed), ray=False)


def test_the_bottom_layer_sends_nothing():
    net = tiny_network()
    assert isinstance(net.layers[0].rule, WeightMax)
    states = forward(net, np.ones((2, 3)))
    assert net.layers[0].feedback(0, np.ones((2, 4))) is None
    assert states[1].shape == (2, 4)


# ---- learning ---------------------------------------------------------------------------------
MUX_UPDATES = 1500


def mux_accuracy(seed: int, frozen: tuple[int, ...] = ()) -> float:
    """6-bit multiplexer, hidden layers (32, 16) of Bernoulli units under a categorical output
    (reward +1 / -1, Chung's), Adam lr 0.02, batches of 16, 1,500 updates; ``frozen`` layers keep
    sampling but never learn (the control)."""
    task = multiplexer(2)
    spec = NetworkSpec(n_inputs=6, n_outputs=2, hidden=(32, 16), units="bernoulli",
                       output="categorical", rule="weight-max", optimizer="adam", lr=0.02)
    net = build_network(spec, seed)
    for index in frozen:
        net.layers[index].optimizer.lr = 0.0
    stream = UniformPatterns(task.train, 16, seed)
    train_in_process(net, ((b.sid, b.x, b.y) for b, _ in zip(stream, range(MUX_UPDATES),
                                                              strict=False)))
    return evaluate(net, task.test.x, task.test.y)["accuracy"]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weight_max_learns_the_6_bit_multiplexer(seed):
    # measured over seeds 0-11: greedy accuracy >= 0.984 (3 of 12 at 0.984, the rest 1.0)
    assert mux_accuracy(seed) >= 0.95


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_the_bottom_layer_learns_from_the_message_of_the_layer_above(seed):
    # measured over seeds 0-11 with the bottom layer not learning: 0.50 .. 0.73
    assert mux_accuracy(seed, frozen=(0,)) <= 0.8
