"""The coordinator: the schedule that streams numbered batches through the agents of one network.

Messages (DESIGN "The protocol"; the agent side is :class:`async_coagents.core.agent.Agent`):

* ``forward(sid, x) -> a`` — layer i acts on batch ``sid``; its output is layer i+1's input;
* ``reward(sid, r, labels)`` — the per-example reward, to every layer that needs it (the labels
  only to a supervised learner, which needs them);
* ``feedback(sid, message)`` — from layer i+1 to layer i (critic rules); it is the value returned
  by layer i+1's call that completed the batch.

With the input-state baseline (§3.4) the coordinator also forwards every batch's input to the
input-baseline agent and broadcasts the advantage it answers instead of ``r``; that agent lives in
the coordinator's process on every backend.

:class:`Coordinator` owns the schedule, written once for every backend: a backend only provides a
transport (:class:`async_coagents.backends.base.Transport`) that delivers messages (directly in
process, or as Ray actor calls) and never computes anything itself. Asynchrony is explicit and
reproducible:

* ``window`` W — at most W batches are in flight (forwarded, reward not yet delivered); when the
  window is full the oldest reward is delivered before the next forward;
* ``reward_delay`` D — the reward of batch s is delivered right after the forward of batch s + D
  (so with W >= D + 1 every reward arrives exactly D forwards late).

With W = 1 and D = 0 the order of messages is the synchronous reference of §10. Because one
coordinator submits every message in a fixed order and every agent handles its messages in order,
the run is deterministic on every transport.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from async_coagents.core.objectives import Classification, Regression
from async_coagents.errors import CheckpointError, ConfigError, ProtocolError

Reward = tuple[int, np.ndarray, np.ndarray | None]  # (sid, r, labels or None)


class Messages(Protocol):
    """What the coordinator needs from a transport. Handles are values (in process) or futures
    (Ray); ``listens_to_feedback[i]`` and ``needs_reward[i]`` are layer i's routing."""

    listens_to_feedback: list[bool]
    needs_reward: list[bool]

    def forward(self, layer: int, sid: int, x: Any) -> Any: ...
    def reward(self, layer: int, sid: int, r: np.ndarray, labels: np.ndarray) -> Any: ...
    def feedback(self, layer: int, sid: int, message: Any) -> Any: ...
    def fetch(self, handle: Any) -> np.ndarray: ...


@dataclass
class InFlight:
    """A batch forwarded and not yet rewarded."""

    sid: int
    index: int  # position in the coordinator's forward order
    output: Any  # handle of the prediction
    labels: np.ndarray
    size: int


@dataclass
class Completed:
    """A batch whose loss is known. Its reward was delivered unless the loss is not finite
    (``rewarded`` False): whether that, or a finite loss, means divergence is the run's call
    (``experiment/divergence.py``)."""

    sid: int
    loss: float
    size: int
    rewarded: bool = True
    hits: int | None = None  # classification: examples whose prediction was the label


class Coordinator:
    """Streams numbered batches through the layer agents of one network (see module docstring)."""

    def __init__(self, transport: Messages, objective: Classification | Regression, *,
                 input_baseline=None, window: int = 1, reward_delay: int = 0) -> None:
        if not isinstance(window, int) or window < 1:
            raise ConfigError(f"window must be an integer >= 1, got {window!r}")
        if not isinstance(reward_delay, int) or reward_delay < 0:
            raise ConfigError(f"reward_delay must be an integer >= 0, got {reward_delay!r}")
        if reward_delay >= window:
            raise ConfigError(
                f"reward_delay {reward_delay} needs a window of at least {reward_delay + 1} "
                f"batches in flight (window is {window})"
            )
        self.transport = transport
        self.objective = objective
        self.input_baseline = input_baseline
        self.window = window
        self.reward_delay = reward_delay
        self.forwards = 0
        self.inflight: deque[InFlight] = deque()

    @property
    def n_layers(self) -> int:
        return len(self.transport.listens_to_feedback)

    def submit(self, sid: int, x: np.ndarray, labels: np.ndarray) -> list[Completed]:
        """Forward batch ``sid``; deliver the rewards that are due. Returns the completed batches."""
        labels = self.objective.check_target(labels, len(x))
        done = []
        while len(self.inflight) >= self.window:
            done.append(self._deliver(self.inflight.popleft()))
        if self.input_baseline is not None:
            self.input_baseline.forward(sid, x)
        h = x
        for layer in range(self.n_layers):
            h = self.transport.forward(layer, sid, h)
        self.inflight.append(InFlight(sid, self.forwards, h, labels, len(x)))
        while self.inflight and self.inflight[0].index + self.reward_delay <= self.forwards:
            done.append(self._deliver(self.inflight.popleft()))
        self.forwards += 1
        return done

    def finish(self) -> list[Completed]:
        """Deliver every reward still in flight (end of the stream)."""
        done = []
        while self.inflight:
            done.append(self._deliver(self.inflight.popleft()))
        return done

    def _deliver(self, batch: InFlight) -> Completed:
        prediction = self.transport.fetch(batch.output)
        r = self.objective.reward(prediction, batch.labels)
        loss = -float(r.sum()) / r.size
        hits = None
        if self.objective.n_classes is not None:  # as predicted before the network learns from it
            hits = int(np.count_nonzero(prediction.argmax(axis=1) == batch.labels))
        if not math.isfinite(loss):  # not a reward any agent can learn from: none is sent
            return Completed(batch.sid, loss, batch.size, rewarded=False, hits=hits)
        signal = r
        if self.input_baseline is not None:
            signal = self.input_baseline.reward(batch.sid, r)
            if signal is None:
                raise ProtocolError(f"batch {batch.sid}: the input baseline no longer holds its "
                                    "input (evicted); raise network.max_pending")
        message = None
        transport = self.transport
        for layer in range(self.n_layers - 1, -1, -1):  # top-down (§10)
            out = None
            if transport.needs_reward[layer]:
                out = transport.reward(layer, batch.sid, signal, batch.labels)
            if transport.listens_to_feedback[layer]:
                out = transport.feedback(layer, batch.sid, message)
            message = out
        return Completed(batch.sid, loss, batch.size, hits=hits)

    def state_dict(self) -> dict:
        """The schedule's state: the batches in flight and their predictions."""
        return {
            "forwards": self.forwards,
            "inflight": [{"sid": b.sid, "index": b.index, "output": self.transport.fetch(b.output),
                          "y": b.labels, "size": b.size} for b in self.inflight],
        }

    def load_state_dict(self, state: dict) -> None:
        width = self.objective.n_classes or 1
        for b in state["inflight"]:
            output = np.asarray(b["output"])
            if output.shape != (b["size"], width) or output.dtype.kind != "f":
                raise CheckpointError(f"coordinator: the prediction of batch {b['sid']} in flight "
                                      f"must be ({b['size']}, {width}) floats, got "
                                      f"{output.dtype} {output.shape}")
            try:
                self.objective.check_target(b["y"], b["size"])
            except ProtocolError as exc:
                raise CheckpointError(f"coordinator: batch {b['sid']} in flight: {exc}") from None
        self.forwards = int(state["forwards"])
        self.inflight = deque(
            InFlight(int(b["sid"]), int(b["index"]), np.asarray(b["output"]), np.asarray(b["y"]),
                     int(b["size"])) for b in state["inflight"])
