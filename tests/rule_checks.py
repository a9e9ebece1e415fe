"""The check suite every learning rule must pass, whatever its units (one suite for all rules,
instead of ad-hoc tests per rule). A check takes a factory ``seed -> Network`` and a batch
source, runs a few synchronous updates and raises AssertionError when the rule misbehaves."""

from __future__ import annotations

import pickle
from collections.abc import Callable

import numpy as np

from async_coagents.core.network import Network
from async_coagents.core.trainer import train_step

Factory = Callable[[int], Network]
STEPS = 6


def batches(net: Network, n: int = STEPS, seed: int = 0, batch: int = 8):
    rng = np.random.default_rng(seed)
    spec = net.spec
    for sid in range(n):
        x = rng.normal(size=(batch, spec.n_inputs)).astype(np.float32)
        if spec.task == "classification":
            y = rng.integers(0, spec.n_outputs, batch)
        else:
            y = np.sin(x[:, 0]).astype(np.float32)
        yield sid, x, y


def params(net: Network) -> list[np.ndarray]:
    arrays = []
    for layer in net.agents:
        arrays.append(layer.net.params.copy())
        critic = getattr(layer, "critic", None)
        if critic is not None:
            arrays.append(critic.net.params.copy())
    return arrays


def run(net: Network, data) -> Network:
    for sid, x, y in data:
        train_step(net, sid, x, y)
    return net


def check_determinism(factory: Factory) -> None:
    a, b, c = factory(1), factory(1), factory(2)
    for net in (a, b, c):
        run(net, batches(net))
    for pa, pb in zip(params(a), params(b), strict=True):
        assert np.array_equal(pa, pb), "same seed, same data: the runs must be bit-identical"
    assert any(not np.array_equal(pa, pc) for pa, pc in zip(params(a), params(c), strict=True)), \
        "a different seed must change the run"


def check_state_round_trip(factory: Factory) -> None:
    a = factory(1)
    data = list(batches(a, 2 * STEPS))
    run(a, data[:STEPS])
    b = factory(7)  # another seed: everything must come from the state
    b.load_state_dict(a.state_dict())
    run(a, data[STEPS:])
    run(b, data[STEPS:])
    for pa, pb in zip(params(a), params(b), strict=True):
        assert np.array_equal(pa, pb), "a restored network must continue bit-exactly"


def check_read_only_inputs(factory: Factory) -> None:
    """Arrays from Ray's object store are read-only: a rule must never write into its inputs."""
    a, b = factory(1), factory(1)
    frozen = []
    for sid, x, y in batches(a):
        x.flags.writeable = False
        y.flags.writeable = False
        frozen.append((sid, x, y))
    run(a, frozen)
    run(b, batches(b))
    for pa, pb in zip(params(a), params(b), strict=True):
        assert np.array_equal(pa, pb)


def check_every_layer_learns_and_nothing_leaks(factory: Factory) -> None:
    net = factory(1)
    before = [layer.net.params.copy() for layer in net.agents]
    run(net, batches(net))
    for layer, start in zip(net.agents, before, strict=True):
        stats = layer.stats
        assert layer.pending == 0, f"{layer.name} kept batches after their update"
        assert stats.applied == STEPS and stats.unknown == 0 and stats.dropped == 0, layer.name
        assert len(layer.applied_batches) == STEPS and layer.applied_batches.ranges == [(0, STEPS)]
        assert stats.staleness_max == 0, "a synchronous run has no staleness"
        assert not np.array_equal(layer.net.params, start), f"{layer.name} never learnt"
        assert np.isfinite(layer.net.params).all()


def ray_like_copy(obj):
    """A pickle round trip as Ray makes it: arrays come back as read-only views of the buffers."""
    buffers = []
    data = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    return pickle.loads(data, buffers=[memoryview(b.raw()).toreadonly() for b in buffers])


def check_pickle_round_trip(factory: Factory) -> None:
    """An agent sent to another process (Ray pickles it) continues exactly like the original."""
    a = factory(1)
    data = list(batches(a, 2 * STEPS))
    run(a, data[:STEPS])
    b = ray_like_copy(a)
    run(a, data[STEPS:])
    run(b, data[STEPS:])
    for pa, pb in zip(params(a), params(b), strict=True):
        assert np.array_equal(pa, pb), "a pickled network must continue bit-exactly"


CHECKS = [check_determinism, check_state_round_trip, check_read_only_inputs,
          check_every_layer_learns_and_nothing_leaks, check_pickle_round_trip]


def check_rule(factory: Factory) -> None:
    for check in CHECKS:
        check(factory)
