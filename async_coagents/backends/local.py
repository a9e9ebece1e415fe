"""The in-process backend: the coordinator's schedule (window, reward delay) with every message a
direct method call on the core layer objects — a deterministic simulation of the asynchronous
protocol, and the reference the Ray backend is held to."""

from __future__ import annotations

import numpy as np

from async_coagents.core.metrics import LayerActivity
from async_coagents.core.network import Network
from async_coagents.core.trainer import copy_pretrained, switch_to_sgd
from async_coagents.protocol import Completed, Coordinator


class LocalTransport:
    """Messages as direct calls; a handle is the value itself."""

    def __init__(self, network: Network) -> None:
        self.layers = network.layers
        self.network = network
        self.listens_to_feedback = [layer.listens_to_feedback for layer in network.layers]
        self.sends_feedback = [layer.sends_feedback for layer in network.layers]

    def forward(self, layer: int, sid: int, x: np.ndarray, rewards) -> np.ndarray:
        self.deliver(layer, rewards)
        return self.layers[layer].forward(sid, x)

    def deliver(self, layer: int, rewards) -> None:
        agent = self.layers[layer]
        for sid, r, y in rewards:
            agent.reward(sid, r, y)

    def reward(self, layer: int, sid: int, r: np.ndarray, y: np.ndarray):
        return self.layers[layer].reward(sid, r, y)

    def feedback(self, layer: int, sid: int, y):
        return self.layers[layer].feedback(sid, y)

    def fetch(self, handle):
        return handle

    def evaluate(self, x: np.ndarray) -> tuple[np.ndarray, list[LayerActivity]]:
        return self.network.measure(x)


class LocalBackend:
    """One network in this process, driven by a :class:`Coordinator`."""

    name = "local"

    def __init__(self, network: Network, *, window: int = 1, reward_delay: int = 0) -> None:
        self.network = network
        self.coordinator = Coordinator(LocalTransport(network), network.objective,
                                       input_baseline=network.input_baseline, window=window,
                                       reward_delay=reward_delay)

    def submit(self, sid: int, x: np.ndarray, y: np.ndarray) -> list[Completed]:
        return self.coordinator.submit(sid, x, y)

    def finish(self) -> list[Completed]:
        return self.coordinator.finish()

    def evaluate(self, x: np.ndarray, y: np.ndarray, **kwargs) -> dict:
        return self.coordinator.evaluate(x, y, **kwargs)

    def layer_stats(self) -> list[dict]:
        """Per layer agent: name and the counters of :class:`~async_coagents.core.layers.LayerStats`."""
        self.coordinator.flush()
        return [agent.report() for agent in self.network.agents]

    def take_staleness(self) -> list[tuple[float | None, int | None]]:
        """Per layer agent, mean and max staleness since the previous call (None without
        updates)."""
        self.coordinator.flush()
        return [agent.stats.take_interval() for agent in self.network.agents]

    def describe(self) -> dict:
        """Where the agents run."""
        return {"backend": "local", "placement": [{"name": agent.name, "node_id": "local"}
                                                  for agent in self.network.agents]}

    def load_pretrained(self, twin: Network, lr_divisor: float = 128.0) -> None:
        """The §5.4 switch: take the backprop twin's weights, then plain SGD with lr / 128."""
        if twin is not self.network:
            copy_pretrained(self.network, twin)
        switch_to_sgd(self.network, lr_divisor)

    def state_dict(self) -> dict:
        coordinator = self.coordinator.state_dict()  # flushes held rewards into the layers first
        return {"network": self.network.state_dict(), "coordinator": coordinator}

    def load_state_dict(self, state: dict) -> None:
        self.network.load_state_dict(state["network"])
        self.coordinator.load_state_dict(state["coordinator"])

    def close(self) -> None:
        return None
