"""Layer agents: the surrogate gradient each layer applies (finite differences), the supervised
read-out, subset and staged masks (paper_method.md §2.3, §2.4), the message boundary (unknown
batch ids, NaN rewards, bad shapes), clock rates, staleness and state round trips."""

import numpy as np
import pytest

from async_coagents.core.baselines import EmaBaseline
from async_coagents.core.layers import BackpropNetwork, CoagentLayer, Readout
from async_coagents.core.mlp import MLP
from async_coagents.core.objectives import Classification, Regression
from async_coagents.core.optim import make_optimizer
from async_coagents.core.rules import GlobalBaseline
from async_coagents.core.settings import LayerOptions
from async_coagents.core.units import Bernoulli, Categorical, Gaussian
from async_coagents.errors import ProtocolError
from tests.gradcheck import assert_grad_close, numeric_grad

F64 = np.float64


def ema_rule():
    rule = GlobalBaseline()
    rule.baseline = EmaBaseline()
    return rule


def make_layer(unit, sizes, *, lr=1.0, optimizer="sgd", activation="relu", seed=0, rule=None,
               **options):
    policy = MLP(sizes, activation, rng=np.random.default_rng(seed), dtype=F64)
    return CoagentLayer("layer0", policy, unit, make_optimizer(optimizer, policy.params.size, lr, F64),
                        sampling_rng=np.random.default_rng(seed + 100), rule=rule,
                        options=LayerOptions(**options))


def surrogate(layer, x, action, g):
    """J = -(1/B) sum_b G_b sum_u log pi(a_bu | x_b)  (paper_method.md §3.0)."""
    dist = layer.unit.policy(layer.policy(x))
    return float(-(g[:, None] * layer.unit.log_prob(dist, action)).sum() / len(x))


CASES = [
    ("bernoulli", Bernoulli(), [5, 2 * 4]),
    ("categorical-3", Categorical(3, "symmetric"), [5, 3 * 4]),
    ("gaussian", Gaussian(0.8, "relu"), [5, 4]),
    ("gaussian-group", Gaussian(0.8, "relu"), [5, 6, 4]),  # a partition group 'ds' (§2.6)
    ("bernoulli-group", Bernoulli(), [5, 6, 7, 2 * 4]),
]


@pytest.mark.parametrize("name, unit, sizes", CASES, ids=[c[0] for c in CASES])
def test_applied_update_is_minus_lr_times_the_surrogate_gradient(name, unit, sizes):
    layer = make_layer(unit, sizes)
    rng = np.random.default_rng(7)
    x = rng.normal(size=(6, sizes[0]))
    r = rng.normal(size=6)
    layer.forward(0, x)
    action = layer._pending[0].action.copy()
    before = layer.policy.params.copy()

    expected = numeric_grad(lambda: surrogate(layer, x, action, r), layer.policy.params)
    layer.reward(0, r)
    applied = before - layer.policy.params  # SGD with lr 1: the step is the gradient
    assert_grad_close(applied, expected, rtol=1e-5, atol=1e-7)
    assert layer.version == 1 and layer.stats.applied == 1 and layer.pending == 0


def test_readout_cross_entropy_gradient_by_finite_differences():
    net = MLP([4, 3], "identity", rng=np.random.default_rng(0), dtype=F64)
    objective = Classification(3)
    layer = Readout("output", net, objective, make_optimizer("sgd", net.params.size, 1.0, F64))
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(5, 4)), rng.integers(0, 3, 5)
    before = net.params.copy()
    expected = numeric_grad(lambda: -float(objective.reward(net(x), y).mean()), net.params)
    out = layer.forward(3, x)
    np.testing.assert_allclose(out, x @ net.weights[0] + net.biases[0])
    layer.reward(3, objective.reward(out, y), y)
    assert_grad_close(before - net.params, expected)


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
def test_backprop_readout_mse_gradient_by_finite_differences(activation):
    net = MLP([3, 8, 8, 1], activation, rng=np.random.default_rng(0), dtype=F64)
    objective = Regression()
    layer = BackpropNetwork("output", net, objective,
                            make_optimizer("sgd", net.params.size, 1.0, F64))
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(6, 3)), rng.normal(size=6)
    before = net.params.copy()
    expected = numeric_grad(lambda: -float(objective.reward(net(x), y).mean()), net.params)
    layer.forward(0, x)
    layer.reward(0, np.zeros(6), y)
    assert_grad_close(before - net.params, expected)


def test_subset_units_sample_and_learn_the_others_act_greedily():
    layer = make_layer(Bernoulli(), [4, 2 * 10], subset=3, subset_every=1)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 4))
    h = layer.forward(0, x)
    entry = layer._pending[0]
    mask = entry.mask
    assert mask.sum() == 3
    greedy = layer.unit.greedy(entry.dist)
    np.testing.assert_array_equal(h[:, ~mask], greedy[:, ~mask])  # non-subset units are greedy
    assert (h[:, mask] != greedy[:, mask]).any()  # subset units really sample
    before = layer.policy.params.copy()
    layer.reward(0, rng.normal(size=200))
    dw = (layer.policy.params - before)[: 4 * 20].reshape(4, 10, 2)
    assert not dw[:, ~mask].any() and dw[:, mask].any()  # only subset units learn (§3.10)


def test_subset_is_redrawn_every_n_batches():
    layer = make_layer(Bernoulli(), [4, 2 * 10], subset=2, subset_every=3)
    x = np.ones((2, 4))
    masks = []
    for sid in range(7):
        layer.forward(sid, x)
        masks.append(layer._pending[sid].mask.copy())
    assert all((m == masks[0]).all() for m in masks[:3])
    assert all((m == masks[3]).all() for m in masks[3:6])
    assert any((m != masks[0]).any() for m in masks[3:])


def test_staged_layer_acts_greedily_and_stops_learning_from_freeze_at():
    layer = make_layer(Bernoulli(), [4, 2 * 6], freeze_at=2)
    x = np.random.default_rng(4).normal(size=(50, 4))
    for sid in range(4):
        layer.forward(sid, x)
    entries = [layer._pending[sid] for sid in range(4)]
    assert [e.greedy for e in entries] == [False, False, True, True]
    np.testing.assert_array_equal(entries[2].out, layer.unit.greedy(entries[2].dist))
    for sid in range(4):
        layer.reward(sid, np.ones(50))
    assert layer.version == 2 and layer.stats.applied == 4


def test_unknown_batch_ids_are_counted_and_skipped():
    layer = make_layer(Bernoulli(), [3, 4])
    assert layer.reward(99, np.zeros(2)) is None
    assert layer.stats.unknown == 1 and layer.version == 0
    assert 99 in layer.lost_batches


def test_retried_messages_are_idempotent():
    layer = make_layer(Bernoulli(), [3, 4])
    x = np.ones((2, 3))
    h = layer.forward(5, x)
    np.testing.assert_array_equal(layer.forward(5, x.copy()), h)  # a retried forward: same answer
    assert layer.stats.retried_forwards == 1 and layer.stats.forwards == 1
    with pytest.raises(ProtocolError, match="already in flight"):
        layer.forward(5, 2 * x)  # another batch under the same id
    layer.reward(5, np.ones(2))
    params = layer.policy.params.copy()
    layer.reward(5, np.ones(2))  # a retried reward: skipped, never applied twice
    np.testing.assert_array_equal(layer.policy.params, params)
    assert layer.stats.applied == 1 and layer.stats.duplicates == 1
    assert len(layer.applied_batches) == 1
    with pytest.raises(ProtocolError, match="already used"):
        layer.forward(5, x)


def test_eviction_bounds_the_pending_batches_and_is_counted():
    layer = make_layer(Bernoulli(), [3, 4], max_pending=2)
    for sid in range(3):
        layer.forward(sid, np.ones((1, 3)))
    assert layer.pending == 2 and layer.stats.evicted == 1
    assert 0 in layer.dropped_batches
    layer.reward(0, np.zeros(1))  # a late reward for an evicted batch is skipped
    assert layer.stats.duplicates == 1 and layer.stats.applied == 0


@pytest.mark.parametrize("bad", [np.array([1.0, np.nan]), np.array([np.inf, 0.0])])
def test_non_finite_reward_is_a_clear_error(bad):
    layer = make_layer(Bernoulli(), [3, 4])
    layer.forward(0, np.ones((2, 3)))
    with pytest.raises(ProtocolError, match="reward for batch 0 is not finite"):
        layer.reward(0, bad)


def test_bad_shapes_and_duplicate_ids_are_clear_errors():
    layer = make_layer(Bernoulli(), [3, 4])
    with pytest.raises(ProtocolError, match=r"shape \(B, 3\)"):
        layer.forward(0, np.ones((2, 4)))
    layer.forward(0, np.ones((2, 3)))
    with pytest.raises(ProtocolError, match="already in flight"):
        layer.forward(0, np.zeros((2, 3)))
    with pytest.raises(ProtocolError, match=r"shape \(2,\)"):
        layer.reward(0, np.zeros(3))
    with pytest.raises(ProtocolError, match="does not take feedback"):
        layer.feedback(0, np.zeros(2))


def test_readout_requires_valid_labels():
    net = MLP([3, 2], rng=np.random.default_rng(0), dtype=F64)
    layer = Readout("output", net, Classification(2), make_optimizer("sgd", net.params.size, 1.0, F64))
    layer.forward(0, np.ones((2, 3)))
    with pytest.raises(ProtocolError, match="without its labels"):
        layer.reward(0, np.zeros(2))
    with pytest.raises(ProtocolError, match="labels must lie"):
        layer.reward(0, np.zeros(2), np.array([0, 5]))


def test_update_every_steps_once_with_the_mean_gradient():
    rng = np.random.default_rng(5)
    xs = [rng.normal(size=(4, 3)) for _ in range(3)]
    rs = [rng.normal(size=4) for _ in range(3)]
    slow = make_layer(Gaussian(1.0), [3, 2], update_every=3)
    fast = make_layer(Gaussian(1.0), [3, 2])  # same seeds: same init and samples
    grads = []
    for sid in range(3):
        slow.forward(sid, xs[sid])
        fast.forward(sid, xs[sid])
        before = fast.policy.params.copy()
        fast.reward(sid, rs[sid])
        grads.append(before - fast.policy.params)
        fast.policy.params[...] = before  # keep the fast layer at the initial point
        slow.reward(sid, rs[sid])
        assert slow.version == (1 if sid == 2 else 0)
    np.testing.assert_allclose(fast.policy.params - slow.policy.params, np.mean(grads, axis=0))


def test_staleness_counts_parameter_steps_between_forward_and_update():
    layer = make_layer(Bernoulli(), [3, 4])
    x = np.ones((2, 3))
    for sid in range(4):  # four batches in flight
        layer.forward(sid, x)
    for sid in range(4):
        layer.reward(sid, np.ones(2))
    stats = layer.stats.as_dict()
    assert stats["staleness_max"] == 3 and stats["staleness_sum"] == 0 + 1 + 2 + 3
    assert stats["staleness_mean"] == 1.5
    assert layer.stats.take_interval() == (1.5, 3)
    assert layer.stats.take_interval() == (None, None)  # no update since: nothing measured


def test_state_round_trip_continues_bit_exactly():
    def build():
        return make_layer(Categorical(3), [4, 9], optimizer="rmsprop", lr=0.01,
                          rule=ema_rule(), subset=2)

    rng = np.random.default_rng(6)
    batches = [(rng.normal(size=(5, 4)), rng.normal(size=5)) for _ in range(6)]
    a = build()
    for sid, (x, r) in enumerate(batches[:3]):
        a.forward(sid, x)
        a.reward(sid, r)
    b = make_layer(Categorical(3), [4, 9], optimizer="rmsprop", lr=0.01, rule=ema_rule(),
                   subset=2, seed=50)  # different init and sampling stream
    b.load_state_dict(a.state_dict())
    for sid, (x, r) in enumerate(batches[3:], start=3):
        ha, hb = a.forward(sid, x), b.forward(sid, x)
        np.testing.assert_array_equal(ha, hb)
        a.reward(sid, r)
        b.reward(sid, r)
    np.testing.assert_array_equal(a.policy.params, b.policy.params)
    assert a.stats.as_dict() == b.stats.as_dict()


def test_layers_never_write_into_their_inputs():
    """Arrays from Ray's object store are read-only: a layer must not modify what it is sent."""
    layer = make_layer(Gaussian(1.0, "relu"), [3, 5, 4], rule=ema_rule())
    x = np.ones((2, 3))
    r = np.array([0.5, -1.0])
    x.flags.writeable = False
    r.flags.writeable = False
    layer.forward(0, x)
    layer.reward(0, r)
    assert layer.version == 1
