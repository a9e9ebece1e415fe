"""The in-process backend: the coordinator's schedule (window, reward delay) with every message a
direct method call on the core agent objects — a deterministic simulation of the asynchronous
protocol, and the reference the Ray backend is held to."""

from __future__ import annotations

import numpy as np

from async_coagents.backends.base import CoordinatedBackend, Transport
from async_coagents.core.metrics import LayerActivity
from async_coagents.core.network import Network


class LocalTransport(Transport):
    """Messages as direct calls; a handle is the value itself."""

    def __init__(self, network: Network) -> None:
        super().__init__(network)
        self.layers = network.layers
        self.network = network

    def _send_forward(self, layer: int, sid: int, x: np.ndarray, rewards) -> np.ndarray:
        self._send_rewards(layer, rewards)
        return self.layers[layer].forward(sid, x)

    def _send_rewards(self, layer: int, rewards) -> None:
        agent = self.layers[layer]
        for sid, r, labels in rewards:
            agent.reward(sid, r, labels)

    def _send_reward(self, layer: int, sid: int, r: np.ndarray, labels):
        return self.layers[layer].reward(sid, r, labels)

    def _send_feedback(self, layer: int, sid: int, message):
        return self.layers[layer].feedback(sid, message)

    def fetch(self, handle):
        return handle

    def evaluate(self, x: np.ndarray) -> tuple[np.ndarray, list[LayerActivity]]:
        return self.network.measure(x)


class LocalBackend(CoordinatedBackend):
    """One network in this process: its agents are the network's own objects."""

    name = "local"

    def __init__(self, network: Network, *, window: int = 1, reward_delay: int = 0,
                 schedule: dict | None = None, schedule_path: str | None = None) -> None:
        super().__init__(network, LocalTransport(network), window=window,
                         reward_delay=reward_delay, schedule=schedule, schedule_path=schedule_path)
