"""Adding a learning rule is one class and one registry entry: a toy rule defined here, outside the
package, registered, passes the whole check suite and runs bit for bit alike on the local and the
Ray backend (this module starts Ray: run it under the Ray lock)."""

import numpy as np
import pytest

from async_coagents import testing
from async_coagents.backends.local import LocalBackend
from async_coagents.backends.ray_backend import RayBackend
from async_coagents.core.network import NetworkSpec, build_network
from async_coagents.core.rules import RULES, Rule, register


class BatchMeanBaseline(Rule):
    """A toy rule: REINFORCE minus the mean reward of the batch itself,

        G_b = r_b - (1/B) sum_b' r_b'.
    """

    name = "toy-batch-mean"
    section = "(test)"
    summary = "REINFORCE minus the batch-mean reward"

    def signal(self, step):
        return step.reward - step.reward.mean(dtype=step.reward.dtype)  # G = r - mean(r)


@pytest.fixture(autouse=True)
def toy_rule_registered():
    register(BatchMeanBaseline)  # the one registry entry
    yield
    del RULES[BatchMeanBaseline.name]


def test_the_toy_rule_passes_the_check_suite_locally():
    testing.check_rule("toy-batch-mean", ray=False)


@pytest.mark.usefixtures("ray_session")
def test_the_toy_rule_passes_the_local_equals_ray_check():
    assert testing.ray_session_running()
    for family in testing.FAMILIES:
        assert testing.check_local_equals_ray(testing.rule_factory("toy-batch-mean", family))


@pytest.mark.usefixtures("ray_session")
def test_the_toy_rule_learns_alike_on_both_backends():
    spec = NetworkSpec(n_inputs=6, n_outputs=3, hidden=(7, 5), rule="toy-batch-mean", lr=0.05)
    rng = np.random.default_rng(0)
    data = [(sid, rng.normal(size=(8, 6)).astype(np.float32), rng.integers(0, 3, 8))
            for sid in range(20)]
    local = LocalBackend(build_network(spec, 3), window=3, reward_delay=2)
    remote = RayBackend(build_network(spec, 3), {"window": 3, "reward_delay": 2})
    start = [agent.net.params.copy() for agent in local.network.agents]
    try:
        for backend in (local, remote):
            for batch in data:
                backend.submit(*batch)
            backend.finish()
        remote.state_dict()
        assert [s["applied"] for s in remote.layer_stats()] == [20, 20, 20]
    finally:
        remote.close()
    for a, b, s in zip(local.network.agents, remote.network.agents, start, strict=True):
        np.testing.assert_array_equal(a.net.params, b.net.params)
        assert not np.array_equal(a.net.params, s)
