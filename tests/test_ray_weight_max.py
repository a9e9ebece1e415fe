"""Weight Maximization on the Ray backend (one actor per layer): its per-unit messages, sent after
each layer's step, cross the actors and the run ends bit for bit like the local one, with batches
in flight and a reward delay (this module starts Ray: run it under the Ray lock)."""

import numpy as np
import pytest

from async_coagents import testing
from async_coagents.backends.local import LocalBackend
from async_coagents.backends.ray_backend import RayBackend
from async_coagents.core.network import NetworkSpec, build_network

pytestmark = pytest.mark.usefixtures("ray_session")


@pytest.mark.parametrize("family", ["categorical-output", "gaussian"])
def test_weight_max_on_ray_equals_local_with_batches_in_flight(family):
    assert testing.check_local_equals_ray(testing.rule_factory("weight-max", family))


def test_three_hidden_layers_of_per_unit_messages_end_alike_on_both_backends():
    spec = NetworkSpec(n_inputs=6, n_outputs=2, hidden=(7, 5, 4), units="bernoulli",
                       output="categorical", rule="weight-max", optimizer="adam", lr=0.02)
    rng = np.random.default_rng(0)
    data = [(sid, rng.choice([-1.0, 1.0], size=(8, 6)).astype(np.float32),
             rng.integers(0, 2, 8)) for sid in range(20)]
    local = LocalBackend(build_network(spec, 3), window=3, reward_delay=2)
    remote = RayBackend(build_network(spec, 3), {"window": 3, "reward_delay": 2})
    start = [agent.net.params.copy() for agent in local.network.agents]
    try:
        for backend in (local, remote):
            for batch in data:
                backend.submit(*batch)
            backend.finish()
        remote.state_dict()  # refreshes the driver's mirror from the actors
        assert [s["applied"] for s in remote.layer_stats()] == [20, 20, 20, 20]
    finally:
        remote.close()
    for a, b, s in zip(local.network.agents, remote.network.agents, start, strict=True):
        np.testing.assert_array_equal(a.net.params, b.net.params)
        assert not np.array_equal(a.net.params, s)  # every layer learnt, the bottom one too
