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

A network of R replicas (``core/replicas.py``) takes batches ``x (R, B, n)``, labels ``(R, B)``;
each replica's loss and hits are its own, and a replica whose loss is not finite gets reward 0 for
that batch (its ``Completed.rewarded`` entry False) while the others learn on: the run marks that
replica diverged.
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
    (``experiment/divergence.py``). With replicas ``loss``, ``rewarded`` and ``hits`` are arrays
    ``(R,)``, one entry per replica, and ``size`` the batch of one replica."""

    sid: int
    loss: float | np.ndarray
    size: int
    rewarded: bool | np.ndarray = True
    hits: int | np.ndarray | None = None  # classification: examples predicted as their label

    def replica(self, r: int) -> Completed:
        """Replica ``r``'s part, as its separate run completes the batch."""
        return Completed(self.sid, float(self.loss[r]), self.size, bool(self.rewarded[r]),
                         None if self.hits is None else int(self.hits[r]))


class Coordinator:
    """Streams numbered batches through the layer agents of one network (see module docstring)."""

    def __init__(self, transport: Messages, objective: Classification | Regression, *,
                 input_baseline=None, window: int = 1, reward_delay: int = 0,
                 replicas: int | None = None) -> None:
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
        self.replicas = replicas
        self.forwards = 0
        self.inflight: deque[InFlight] = deque()

    @property
    def n_layers(self) -> int:
        return len(self.transport.listens_to_feedback)

    def submit(self, sid: int, x: np.ndarray, labels: np.ndarray) -> list[Completed]:
        """Forward batch ``sid``; deliver the rewards that are due. Returns the completed batches."""
        x = np.asarray(x)
        labels = self.objective.check_target(labels, x.shape[:-1])
        done = []
        while len(self.inflight) >= self.window:
            done.append(self._deliver(self.inflight.popleft()))
        if self.input_baseline is not None:
            self.input_baseline.forward(sid, x)
        h = x
        for layer in range(self.n_layers):
            h = self.transport.forward(layer, sid, h)
        self.inflight.append(InFlight(sid, self.forwards, h, labels, x.shape[-2]))
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
        if self.replicas is not None:
            return self._deliver_replicas(batch, prediction, r)
        loss = -float(r.sum()) / r.size
        hits = None
        if self.objective.n_classes is not None:  # as predicted before the network learns from it
            hits = int(np.count_nonzero(prediction.argmax(axis=1) == batch.labels))
        if not math.isfinite(loss):  # not a reward any agent can learn from: none is sent
            return Completed(batch.sid, loss, batch.size, rewarded=False, hits=hits)
        self._send_reward(batch, r)
        return Completed(batch.sid, loss, batch.size, hits=hits)

    def _deliver_replicas(self, batch: InFlight, prediction: np.ndarray,
                          r: np.ndarray) -> Completed:
        """As :meth:`_deliver`, per replica: each replica's loss is its separate run's, and a
        replica whose loss is not finite is rewarded 0 (the others learn on)."""
        loss = -(r.sum(axis=-1).astype(np.float64)) / r.shape[-1]
        hits = None
        if self.objective.n_classes is not None:
            hits = np.count_nonzero(prediction.argmax(axis=-1) == batch.labels, axis=-1)
        rewarded = np.isfinite(loss)
        if not rewarded.all():
            r = np.where(rewarded[:, None], r, 0).astype(r.dtype)
        self._send_reward(batch, r)
        return Completed(batch.sid, loss, batch.size, rewarded=rewarded, hits=hits)

    def _send_reward(self, batch: InFlight, r: np.ndarray) -> None:
        """The reward (or the input baseline's advantage) to every layer, top-down (§10)."""
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

    def state_dict(self) -> dict:
        """The schedule's state: the batches in flight and their predictions."""
        return {
            "forwards": self.forwards,
            "inflight": [{"sid": b.sid, "index": b.index, "output": self.transport.fetch(b.output),
                          "y": b.labels, "size": b.size} for b in self.inflight],
        }

    def load_state_dict(self, state: dict) -> None:
        width = self.objective.n_classes or 1
        lead = () if self.replicas is None else (self.replicas,)
        for b in state["inflight"]:
            output = np.asarray(b["output"])
            if output.shape != (*lead, b["size"], width) or output.dtype.kind != "f":
                raise CheckpointError(f"coordinator: the prediction of batch {b['sid']} in flight "
                                      f"must be {(*lead, b['size'], width)} floats, got "
                                      f"{output.dtype} {output.shape}")
            try:
                self.objective.check_target(b["y"], (*lead, b["size"]))
            except ProtocolError as exc:
                raise CheckpointError(f"coordinator: batch {b['sid']} in flight: {exc}") from None
        self.forwards = int(state["forwards"])
        self.inflight = deque(
            InFlight(int(b["sid"]), int(b["index"]), np.asarray(b["output"]), np.asarray(b["y"]),
                     int(b["size"])) for b in state["inflight"])
