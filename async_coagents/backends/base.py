"""What every coordinated backend shares: the transport base (routing, and rewards that ride with
the next forward) and :class:`CoordinatedBackend`, the backend API the experiment drives.

A backend only places agents and moves messages: a subclass of :class:`Transport` delivers them
(direct calls in process, actor calls on Ray), and a subclass of :class:`CoordinatedBackend` says
how agents' state is read back from where they run (:meth:`~CoordinatedBackend._pull`) and sent
there (:meth:`~CoordinatedBackend._push`). Everything else — the coordinator's wiring, evaluation,
accounting, staleness, checkpoints and the §5.4 switch after pre-training — is written here once.

A layer that neither sends nor takes feedback receives nothing between its reward and its next
forward, so its reward rides with that forward (one call instead of two; the layer sees exactly
the same sequence of messages). That is this module's optimisation: the rewards held for it are
delivered before anything reads an agent (evaluation, accounting, state), so no reader ever sees
an agent that is behind.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from async_coagents.backends.free_running import make_coordinator
from async_coagents.coordinator import Completed, Reward
from async_coagents.core.metrics import LayerActivity, evaluate_with
from async_coagents.core.network import Network
from async_coagents.core.pretraining import copy_pretrained, switch_to_sgd


def schedule_of(backend: dict) -> dict:
    """The schedule keys of a ``backend`` config section (those it has)."""
    return {key: backend[key] for key in ("schedule", "free_rate", "replay") if key in backend}


class Transport:
    """Delivers the coordinator's messages to the layer agents of ``network`` (routing is read
    from the agents). Subclasses implement the ``_send_*`` methods, :meth:`fetch` and
    :meth:`evaluate`."""

    def __init__(self, network: Network) -> None:
        layers = network.layers
        self.listens_to_feedback = [bool(layer.listens_to_feedback) for layer in layers]
        self.sends_feedback = [bool(layer.sends_feedback) for layer in layers]
        self.needs_reward = [bool(layer.needs_reward) for layer in layers]
        self.needs_labels = [bool(getattr(layer, "needs_labels", False)) for layer in layers]
        self.rides_with_forward = [not (listens or sends) for listens, sends in
                                   zip(self.listens_to_feedback, self.sends_feedback, strict=True)]
        self.held: list[list[Reward]] = [[] for _ in layers]

    # ---- what the coordinator calls -----------------------------------------------------------
    def forward(self, layer: int, sid: int, x: Any) -> Any:
        """The rewards held for ``layer`` (in order), then the forward of batch ``sid``."""
        held, self.held[layer] = self.held[layer], []
        return self._send_forward(layer, sid, x, held)

    def reward(self, layer: int, sid: int, r: np.ndarray, labels: np.ndarray) -> Any:
        """The reward of batch ``sid`` (with its labels for a layer that needs them); returns the
        handle of the layer's message for the layer below, if it sends one."""
        message = (sid, r, labels if self.needs_labels[layer] else None)
        if self.rides_with_forward[layer]:
            self.held[layer].append(message)
            return None
        return self._send_reward(layer, *message)

    def feedback(self, layer: int, sid: int, message: Any) -> Any:
        return self._send_feedback(layer, sid, message)

    def deliver_held(self) -> None:
        """Send every reward still waiting to ride with a forward."""
        for layer, held in enumerate(self.held):
            if held:
                self.held[layer] = []
                self._send_rewards(layer, held)

    # ---- what a transport implements ----------------------------------------------------------
    def _send_forward(self, layer: int, sid: int, x: Any, rewards: list[Reward]) -> Any:
        raise NotImplementedError

    def _send_reward(self, layer: int, sid: int, r: np.ndarray, labels) -> Any:
        raise NotImplementedError

    def _send_rewards(self, layer: int, rewards: list[Reward]) -> None:
        raise NotImplementedError

    def _send_feedback(self, layer: int, sid: int, message: Any) -> Any:
        raise NotImplementedError

    def fetch(self, handle: Any) -> np.ndarray:
        raise NotImplementedError

    def ready(self, handle: Any) -> bool:
        """Whether the reply behind ``handle`` has arrived (in process: always)."""
        return True

    def wait(self, handles: list, timeout: float) -> None:
        """Return when one of ``handles`` has its reply, or after ``timeout`` seconds (in
        process every reply is there: only waiting for nothing takes time)."""
        if not handles:
            time.sleep(timeout)

    def evaluate(self, x: np.ndarray) -> tuple[np.ndarray, list[LayerActivity]]:
        """Greedy prediction and each hidden layer's activity, as ``Network.measure``."""
        raise NotImplementedError


class CoordinatedBackend:
    """One network driven by a coordinator over ``transport``: the ordered
    :class:`~async_coagents.coordinator.Coordinator`, or the free-running or replaying one that
    ``schedule`` (``{"schedule": ..., "free_rate": ..., "replay": ...}`` as in ``backend.*``)
    names (``backends/free_running.py``; ``schedule_path``: where a free run records its order).

    ``network`` is the driver's copy of the agents: the agents themselves (local) or a mirror
    refreshed from where they run by :meth:`_pull` and sent back by :meth:`_push` (Ray).
    """

    name = "base"

    def __init__(self, network: Network, transport: Transport, *, window: int = 1,
                 reward_delay: int = 0, schedule: dict | None = None,
                 schedule_path: str | None = None) -> None:
        self.network = network
        self.transport = transport
        self.coordinator = make_coordinator(
            transport, network, {"window": window, "reward_delay": reward_delay, **(schedule or {})},
            schedule_path)

    # ---- what a backend implements ------------------------------------------------------------
    def _settle(self) -> None:
        """Make every message sent so far reach its agent (rewards held for a forward included)."""
        self.transport.deliver_held()

    def _pull(self) -> None:
        """Refresh :attr:`network` from the agents where they run (nothing to do in process)."""

    def _push(self) -> None:
        """Send :attr:`network`'s state to the agents where they run (nothing to do in process)."""

    def _reports(self) -> list[dict]:
        return [agent.report() for agent in self.network.agents]

    def _staleness(self) -> list[tuple[float | None, int | None]]:
        return [agent.take_staleness() for agent in self.network.agents]

    def _grad_variance(self) -> list[float | None]:
        return [agent.take_grad_variance() for agent in self.network.agents]

    def _asynchrony(self) -> list[dict]:
        return [agent.take_asynchrony() for agent in self.network.agents]

    def _non_finite(self) -> set[int]:
        agents = [*self.network.agents, *([self.network.input_baseline]
                                          if self.network.input_baseline is not None else [])]
        return set().union(*(agent.take_non_finite() for agent in agents))

    def _placement(self) -> list[dict]:
        return [{"name": agent.name, "node_id": "local"} for agent in self.network.agents]

    def _checkpoint_agents(self) -> None:
        """Let the agents save themselves where they run (Ray's per-actor checkpoints)."""

    # ---- the backend API ----------------------------------------------------------------------
    def submit(self, sid: int, x: np.ndarray, labels: np.ndarray) -> list[Completed]:
        return self.coordinator.submit(sid, x, labels)

    def finish(self) -> list[Completed]:
        done = self.coordinator.finish()
        self._settle()
        return done

    def evaluate(self, x: np.ndarray, labels: np.ndarray, **kwargs) -> dict:
        """Greedy evaluation at this point of the message order (no side effects on learning)."""
        self._settle()
        return evaluate_with(self.transport.evaluate, self.network.objective, x, labels,
                             replicas=self.network.replicas, **kwargs)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The greedy prediction for ``x`` at this point of the message order (no side effects)."""
        self._settle()
        return self.transport.evaluate(x)[0]

    def layer_stats(self) -> list[dict]:
        """Per layer agent: name and the counters of :class:`~async_coagents.core.agent.AgentStats`."""
        self._settle()
        return self._reports()

    def take_staleness(self) -> list[tuple[float | None, int | None]]:
        """Per layer agent, mean and max staleness since the previous call (None without
        updates)."""
        self._settle()
        return self._staleness()

    def take_grad_variance(self) -> list[float | None]:
        """Per layer agent, its mean per-batch gradient variance since the previous call (None:
        not recorded, or no batch since)."""
        self._settle()
        return self._grad_variance()

    def take_asynchrony(self) -> list[dict]:
        """Per layer agent, its firing fraction and its staleness correction's mean importance
        ratio and fraction truncated since the previous call (``{}`` for an agent that always
        fires and has no correction)."""
        self._settle()
        return self._asynchrony()

    def take_non_finite(self) -> set[int]:
        """The replicas (of a replicated network) that sent an agent a message that was not
        finite since the previous call (its values were set to 0; ``core/agent.py``)."""
        if self.network.replicas is None:
            return set()
        self._settle()
        return self._non_finite()

    def describe(self) -> dict:
        """Where the agents run (and, for a free-running or replayed schedule, what it was)."""
        return {"backend": self.name, "placement": self._placement(), **self._schedule()}

    def _schedule(self) -> dict:
        describe = getattr(self.coordinator, "describe", None)
        return {"schedule": describe()} if describe is not None else {}

    def load_pretrained(self, twin: Network, lr_divisor: float = 128.0) -> None:
        """The §5.4 switch: take the backprop twin's weights, then plain SGD with lr / 128.
        Rewards held for a forward stay held: they reach their layers after the switch."""
        self._pull()
        if twin is not self.network:
            copy_pretrained(self.network, twin)
        switch_to_sgd(self.network, lr_divisor)
        self._push()

    def state_dict(self) -> dict:
        self._settle()
        coordinator = self.coordinator.state_dict()
        self._checkpoint_agents()
        self._pull()
        return {"network": self.network.state_dict(), "coordinator": coordinator}

    def load_state_dict(self, state: dict) -> None:
        self.network.load_state_dict(state["network"])
        self._push()
        self.coordinator.load_state_dict(state["coordinator"])

    def close(self) -> None:
        return None
