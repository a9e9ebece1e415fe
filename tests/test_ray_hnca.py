"""HNCA on the Ray backend: its ``(B, n_units_below, 2)`` messages travel between layer actors and
the runs end bit for bit like the local backend's, with batches in flight, a reward delay and clock
rates (this module starts Ray: run it under the Ray lock)."""

import numpy as np
import pytest

from async_coagents import testing
from async_coagents.backends.local import LocalBackend
from async_coagents.backends.ray_backend import RayBackend
from async_coagents.core.network import NetworkSpec, build_network

pytestmark = pytest.mark.usefixtures("ray_session")
BATCHES = 20


@pytest.mark.parametrize("rule", ["hnca", "hnca-plain"])
def test_the_check_suites_local_equals_ray_check_passes(rule):
    assert testing.check_local_equals_ray(testing.rule_factory(rule, "categorical-output"))


@pytest.mark.parametrize("backend", [dict(window=1, reward_delay=0, update_every=1),
                                     dict(window=3, reward_delay=2, update_every=(1, 2, 1))],
                         ids=["synchronous", "window3-delay2-clock-rates"])
def test_an_hnca_run_on_ray_ends_bit_for_bit_like_the_local_one(backend):
    spec = NetworkSpec(n_inputs=6, n_outputs=4, hidden=(7, 5), rule="hnca", output="categorical",
                       miss_reward=0.0, lr=0.05, update_every=backend["update_every"])
    rng = np.random.default_rng(0)
    data = [(sid, rng.normal(size=(8, 6)).astype(np.float32), rng.integers(0, 4, 8))
            for sid in range(BATCHES)]
    flight = {"window": backend["window"], "reward_delay": backend["reward_delay"]}
    local = LocalBackend(build_network(spec, 3), **flight)
    remote = RayBackend(build_network(spec, 3), flight)
    start = [agent.net.params.copy() for agent in local.network.agents]
    try:
        losses = {}
        for name, runner in (("local", local), ("ray", remote)):
            done = [c for batch in data for c in runner.submit(*batch)] + runner.finish()
            losses[name] = [(c.sid, c.loss) for c in done]
        assert losses["local"] == losses["ray"]
        remote.state_dict()  # refreshes the driver's mirror from the actors
        assert [s["applied"] for s in remote.layer_stats()] == [BATCHES] * 3
    finally:
        remote.close()
    for a, b, s in zip(local.network.layers, remote.network.layers, start, strict=True):
        np.testing.assert_array_equal(a.net.params, b.net.params)
        assert a.baseline.value == b.baseline.value != 0.0
        assert not np.array_equal(a.net.params, s)
    assert [layer.feedback_shape for layer in local.network.layers[:2]] == [(7, 2), (5, 2)]
