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
  (so with W >= D + 1 every reward arrives exactly D forwards late). One D per layer agent
  (``[D_0, ..., D_{L-1}]``, bottom to top) delivers it to layer i right after the forward of
  batch s + D_i: the loss is computed (and the batch counted as completed) at its first delivery,
  the layers due at one moment are served top-down (§10), batches oldest first, and a layer that
  learns from the message of the layer above needs D_i >= D_{i+1} (the message exists once the
  layer above has learnt). When the window is full, every layer still waiting for the oldest
  batch gets it. One D for all, or ``[D] * L``, is today's schedule, message for message.

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
from collections.abc import Sequence
from dataclasses import dataclass, field
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
    # per-layer delays: what reached which layer already
    signal: np.ndarray | None = None  # the reward (or advantage) broadcast, once computed
    delivered: list[int] = field(default_factory=list)  # layers that have it
    messages: dict[int, Any] = field(default_factory=dict)  # layer -> feedback waiting for it


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
                 input_baseline=None, window: int = 1, reward_delay: int | Sequence[int] = 0,
                 replicas: int | None = None) -> None:
        if not isinstance(window, int) or window < 1:
            raise ConfigError(f"window must be an integer >= 1, got {window!r}")
        self.transport = transport
        n_layers = len(transport.listens_to_feedback)
        per_layer = ([reward_delay] * n_layers if isinstance(reward_delay, int)
                     else list(reward_delay))
        if len(per_layer) != n_layers or any(
                not isinstance(d, int) or isinstance(d, bool) or d < 0 for d in per_layer):
            raise ConfigError(f"reward_delay must be an integer >= 0, or one per layer agent "
                              f"({n_layers}), got {reward_delay!r}")
        if max(per_layer) >= window:
            raise ConfigError(
                f"reward_delay {reward_delay} needs a window of at least {max(per_layer) + 1} "
                f"batches in flight (window is {window})"
            )
        for i in range(n_layers - 1):
            if transport.listens_to_feedback[i] and per_layer[i] < per_layer[i + 1]:
                raise ConfigError(f"reward_delay {per_layer}: layer agent {i} learns from the "
                                  f"message of layer agent {i + 1}, so its delay must be at least "
                                  f"that layer's ({per_layer[i]} < {per_layer[i + 1]})")
        self.objective = objective
        self.input_baseline = input_baseline
        self.window = window
        self.reward_delay = reward_delay
        self.delays = per_layer
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
        done: list[Completed] = []
        while len(self.inflight) >= self.window:
            self._deliver_oldest(done)
        self._forward(sid, x, labels)
        for batch in list(self.inflight):  # oldest first; each batch's due layers top-down
            due = [i for i, d in enumerate(self.delays) if batch.index + d <= self.forwards]
            if not due:
                break  # a later batch is due no earlier
            if len(set(due) | set(batch.delivered)) == self.n_layers and self.inflight[0] is batch:
                self.inflight.popleft()  # it leaves now (even if a message to it fails)
            self._deliver(batch, due, done)
        while self.inflight and len(self.inflight[0].delivered) == self.n_layers:
            self.inflight.popleft()
        self.forwards += 1
        return done

    def _forward(self, sid: int, x: np.ndarray, labels: np.ndarray) -> Any:
        """Send batch ``sid`` up through every layer (the input baseline first) and put it in
        flight; returns the handle of the first layer's output."""
        if self.input_baseline is not None:
            self.input_baseline.forward(sid, x)
        h = first = x
        for layer in range(self.n_layers):
            h = self.transport.forward(layer, sid, h)
            if layer == 0:
                first = h
        self.inflight.append(InFlight(sid, self.forwards, h, labels, x.shape[-2]))
        return first

    def finish(self) -> list[Completed]:
        """Deliver every reward still in flight (end of the stream)."""
        done: list[Completed] = []
        while self.inflight:
            self._deliver_oldest(done)
        return done

    def _deliver_oldest(self, done: list[Completed]) -> int:
        """Deliver the oldest batch in flight to every layer that lacks it; returns 1."""
        self._deliver(self.inflight.popleft(), range(self.n_layers), done)
        return 1

    def _deliver(self, batch: InFlight, layers, done: list[Completed]) -> None:
        """Deliver batch ``batch``'s reward to those of ``layers`` that do not have it yet,
        top-down; at its first delivery the loss is computed and the batch appended to
        ``done``."""
        if batch.signal is None:
            completed, signal = self._reward(batch)
            done.append(completed)
            if signal is None:  # not finite: no agent is sent anything
                batch.delivered = list(range(self.n_layers))
                return
            batch.signal = signal
        transport = self.transport
        for layer in sorted(set(layers) - set(batch.delivered), reverse=True):  # top-down (§10)
            out = None
            if transport.needs_reward[layer]:
                out = transport.reward(layer, batch.sid, batch.signal, batch.labels)
            if transport.listens_to_feedback[layer]:
                out = transport.feedback(layer, batch.sid, batch.messages.pop(layer, None))
            if layer and transport.listens_to_feedback[layer - 1]:
                batch.messages[layer - 1] = out
            batch.delivered.append(layer)

    def _reward(self, batch: InFlight) -> tuple[Completed, np.ndarray | None]:
        """The loss of ``batch`` and the signal its layers are sent (``None``: none is sent)."""
        prediction = self.transport.fetch(batch.output)
        r = self.objective.reward(prediction, batch.labels)
        if self.replicas is not None:
            return self._deliver_replicas(batch, prediction, r)
        loss = -float(r.sum()) / r.size
        hits = None
        if self.objective.n_classes is not None:  # as predicted before the network learns from it
            hits = int(np.count_nonzero(prediction.argmax(axis=1) == batch.labels))
        if not math.isfinite(loss):  # not a reward any agent can learn from: none is sent
            return Completed(batch.sid, loss, batch.size, rewarded=False, hits=hits), None
        return Completed(batch.sid, loss, batch.size, hits=hits), self._signal(batch, r)

    def _deliver_replicas(self, batch: InFlight, prediction: np.ndarray,
                          r: np.ndarray) -> tuple[Completed, np.ndarray]:
        """As :meth:`_reward`, per replica: each replica's loss is its separate run's, and a
        replica whose loss is not finite is rewarded 0 (the others learn on)."""
        loss = -(r.sum(axis=-1).astype(np.float64)) / r.shape[-1]
        hits = None
        if self.objective.n_classes is not None:
            hits = np.count_nonzero(prediction.argmax(axis=-1) == batch.labels, axis=-1)
        rewarded = np.isfinite(loss)
        if not rewarded.all():
            r = np.where(rewarded[:, None], r, 0).astype(r.dtype)
        return (Completed(batch.sid, loss, batch.size, rewarded=rewarded, hits=hits),
                self._signal(batch, r))

    def _signal(self, batch: InFlight, r: np.ndarray) -> np.ndarray:
        """The reward, or the input baseline's advantage (§3.4), that every layer is sent."""
        if self.input_baseline is None:
            return r
        signal = self.input_baseline.reward(batch.sid, r)
        if signal is None:
            raise ProtocolError(f"batch {batch.sid}: the input baseline no longer holds its "
                                "input (evicted); raise network.max_pending")
        return signal

    def state_dict(self) -> dict:
        """The schedule's state: the batches in flight and their predictions."""
        return {
            "forwards": self.forwards,
            "inflight": [self._inflight_state(b) for b in self.inflight],
        }

    def _inflight_state(self, b: InFlight) -> dict:
        state = {"sid": b.sid, "index": b.index, "output": self.transport.fetch(b.output),
                 "y": b.labels, "size": b.size}
        if b.signal is not None:  # delivered to some layers only (per-layer delays)
            state.update(signal=b.signal, delivered=list(b.delivered),
                         messages=[[layer, None if m is None else self.transport.fetch(m)]
                                   for layer, m in sorted(b.messages.items())])
        return state

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
            self._check_partial(b, lead)
        self.forwards = int(state["forwards"])
        self.inflight = deque(
            InFlight(int(b["sid"]), int(b["index"]), np.asarray(b["output"]), np.asarray(b["y"]),
                     int(b["size"]), b.get("signal"), [int(i) for i in b.get("delivered", [])],
                     {int(i): m for i, m in b.get("messages", [])})
            for b in state["inflight"])

    def _check_partial(self, b: dict, lead: tuple[int, ...]) -> None:
        """A batch in flight delivered to some layers only: its signal ``(*lead, B)``, which
        layers have it, and the messages waiting for the layers below."""
        if "signal" not in b:
            return
        signal, where = b["signal"], f"coordinator: batch {b['sid']} in flight"
        if (not isinstance(signal, np.ndarray) or signal.shape != (*lead, b["size"])
                or signal.dtype.kind != "f"):
            raise CheckpointError(f"{where}: its reward must be {(*lead, b['size'])} floats")
        delivered = b["delivered"]
        if (len(set(delivered)) != len(delivered)
                or any(not 0 <= i < self.n_layers for i in delivered)):
            raise CheckpointError(f"{where}: delivered must list distinct layers of "
                                  f"0..{self.n_layers - 1}, got {delivered}")
        for layer, message in b["messages"]:
            if not 0 <= layer < self.n_layers or not self.transport.listens_to_feedback[layer]:
                raise CheckpointError(f"{where}: a message for layer {layer}, which takes none")
            if message is not None and not isinstance(message, np.ndarray):
                raise CheckpointError(f"{where}: the message for layer {layer} must be an array")
