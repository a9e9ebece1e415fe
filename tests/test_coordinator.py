"""The coordinator honours each agent's routing: an agent that does not need the reward is not
sent it, and the labels go only to the supervised learner that needs them."""

import numpy as np
import pytest

from async_coagents.backends.local import LocalBackend
from async_coagents.core.network import NetworkSpec, build_network


def recorded_rewards(network):
    calls = {layer.name: [] for layer in network.layers}
    for layer in network.layers:
        reward = layer.reward

        def recording(sid, r, labels=None, reward=reward, name=layer.name):
            calls[name].append((sid, labels is not None))
            return reward(sid, r, labels)

        layer.reward = recording
    return calls


@pytest.mark.parametrize("window, delay", [(1, 0), (3, 2)])
def test_rewards_go_only_to_agents_that_need_them_and_labels_only_to_the_readout(window, delay):
    spec = NetworkSpec(n_inputs=5, n_outputs=3, hidden=(6, 5, 4), rule="ac", critic_units=8)
    network = build_network(spec, 0)
    calls = recorded_rewards(network)
    backend = LocalBackend(network, window=window, reward_delay=delay)
    rng = np.random.default_rng(0)
    for sid in range(6):
        backend.submit(sid, rng.normal(size=(4, 5)).astype(np.float32), rng.integers(0, 3, 4))
    backend.finish()
    # layers 0 and 1 learn from the critic above them only (§3.6): no reward is sent to them
    assert calls["layer0"] == [] and calls["layer1"] == []
    assert calls["layer2"] == [(sid, False) for sid in range(6)]  # the reward, without labels
    assert calls["output"] == [(sid, True) for sid in range(6)]  # the read-out gets the labels
    assert all(agent.report()["applied"] == 6 for agent in network.agents)
