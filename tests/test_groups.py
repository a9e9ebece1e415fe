"""Node groups: a layer split into agents of a few units (down to one agent per unit) computes the
whole layer's greedy forward with the same weights, learns, and refuses what cannot be split."""

import numpy as np
import pytest

from async_coagents.core import seeding
from async_coagents.core.groups import GroupedLayer, split_layer
from async_coagents.core.metrics import evaluate
from async_coagents.core.network import NetworkSpec, build_network
from async_coagents.data import UniformPatterns, multiplexer
from async_coagents.errors import ConfigError
from async_coagents.testing import train_in_process


@pytest.mark.parametrize("units, per_group", [("bernoulli", 3), ("categorical", 1),
                                              ("gaussian", 4)])
def test_split_layer_has_the_greedy_forward_of_the_whole_layer(units, per_group):
    spec = NetworkSpec(n_inputs=5, n_outputs=3, hidden=(10,), units=units, n_actions=3,
                       activation="relu" if units == "gaussian" else None, output="readout",
                       dtype="float64")
    whole = build_network(spec, 0).layers[0]
    grouped = split_layer(build_network(spec, 0).layers[0], per_group,
                          lambda g: seeding.generator(0, "sampling", 0, g))
    assert isinstance(grouped, GroupedLayer)
    assert len(grouped.groups) == -(-10 // per_group) and grouped.n_units == 10
    x = np.random.default_rng(1).normal(size=(40, 5))
    h_whole, act_whole = whole.measure(x)
    h_split, act_split = grouped.measure(x)
    np.testing.assert_array_equal(h_whole, h_split)
    np.testing.assert_allclose(act_whole.unit_entropy(), act_split.unit_entropy())
    assert act_whole.sparsity() == pytest.approx(act_split.sparsity())


def test_one_agent_per_unit_still_learns_the_multiplexer():
    task = multiplexer(2)
    spec = NetworkSpec(n_inputs=6, n_outputs=2, hidden=(32,), rule="baseline", lr=0.01,
                       units_per_agent=1)
    net = build_network(spec, 0)
    assert len(net.agents) == 33  # 32 single-unit agents and the read-out
    stream = UniformPatterns(task.train, 32, 0)
    train_in_process(net, ((b.sid, b.x, b.y) for b, _ in zip(stream, range(3000), strict=False)))
    assert evaluate(net, task.test.x, task.test.y)["accuracy"] >= 0.95


def test_groups_have_their_own_sampling_streams_and_optimizer_state():
    spec = NetworkSpec(n_inputs=4, n_outputs=2, hidden=(6,), units_per_agent=3)
    layer = build_network(spec, 0).layers[0]
    a, b = layer.groups
    assert a.rng.random() != b.rng.random()
    assert a.optimizer is not b.optimizer and a.optimizer.v.size == 4 * 6 + 6


@pytest.mark.parametrize("overrides, message", [
    (dict(rule="ac"), "cannot be split into node groups"),
    (dict(subset=2), "subset layers cannot be split"),
    (dict(units="gaussian", partition="ds", hidden=(6, 6)), "deterministic layers cannot"),
])
def test_what_cannot_be_split_is_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        NetworkSpec(**{"n_inputs": 4, "n_outputs": 2, "hidden": (6,), "units_per_agent": 2,
                       **overrides})
