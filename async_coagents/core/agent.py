"""The agent protocol, declared, and the mechanics every agent shares.

:class:`Agent` is what a backend may call on an agent (DESIGN "The protocol"). :class:`AgentBase`
owns, once, what every agent does whatever its learning rule: the pending-batch cache, the message
checks, idempotence (a retried message never applies an update twice), eviction, the applied /
dropped / lost records, staleness, clock-rate accumulation over ``update_every`` and the optimizer
step. A subclass says how it acts (``forward``) and how it learns from a completed batch.

Replay after an actor restart is the transport's business (``backends/ray_backend.py`` sends a
restarted agent every message since its checkpoint again, and reports the replays itself); no core
object knows where or how often it runs.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, fields
from typing import Protocol, runtime_checkable

import numpy as np

from async_coagents.core.arrays import owned
from async_coagents.core.metrics import LayerActivity
from async_coagents.core.mlp import MLP
from async_coagents.core.optim import Optimizer, make_optimizer
from async_coagents.core.record import BatchRecord
from async_coagents.errors import CheckpointError, ConfigError, ProtocolError


@runtime_checkable
class Agent(Protocol):
    """One agent of the protocol: a layer, a node group of a layer, or the input-state baseline.

    Batch ``sid`` holds ``B`` examples. Routing (which messages an agent takes) is read from the
    four flags; a backend sends an agent only the messages its flags ask for.
    """

    name: str
    listens_to_feedback: bool  # takes feedback(sid, message) from the agent above
    sends_feedback: bool  # its completing call returns a message for the agent below
    needs_reward: bool  # takes the broadcast reward
    needs_labels: bool  # takes the labels with the reward (a supervised learner)

    def forward(self, sid: int, x: np.ndarray) -> np.ndarray | None:
        """Act on batch ``sid``, input ``x (B, n_in)``; returns the output ``(B, U)`` (a layer's
        ``phi(a)`` or prediction) and remembers what it needs to learn from the batch."""

    def reward(self, sid: int, r: np.ndarray, labels: np.ndarray | None = None
               ) -> np.ndarray | None:
        """The per-example reward ``r (B,)`` of batch ``sid`` (and its labels ``(B,)`` or
        ``(B, 1)``, for an agent that needs them). Returns the message for the agent below
        ``(B, *feedback_shape)`` when this call completes the batch of an agent that sends one."""

    def feedback(self, sid: int, message: np.ndarray | None) -> np.ndarray | None:
        """The message ``(B, *feedback_shape)`` of the agent above for batch ``sid`` (``None``: the
        agent above dropped the batch, so this one drops it too). Returns as :meth:`reward`."""

    def forget(self, sid: int) -> bool:
        """Drop batch ``sid`` without learning from it; False if it was not pending."""

    def act(self, x: np.ndarray, rows: slice | None = None) -> np.ndarray:
        """Greedy output for evaluation, ``(B, U)``; no side effects. ``rows``: of a replicated
        agent, only those replicas (``x`` holds their inputs, or one input for all)."""

    def measure(self, x: np.ndarray, rows: slice | None = None
                ) -> tuple[np.ndarray, LayerActivity]:
        """Greedy output and the entropy and activity sums on it (§4.3, §4.4); ``rows`` as for
        :meth:`act`."""

    def report(self) -> dict:
        """Accounting: name, :class:`AgentStats` counters and the sizes of the batch records."""

    def take_staleness(self) -> tuple[float | None, int | None]:
        """Mean and max staleness since the previous call (``None, None`` without updates)."""

    def take_grad_variance(self) -> float | None:
        """Mean per-batch trace of the covariance of the per-example gradient estimates since the
        previous call (``None``: not recorded, or no batch since)."""

    def take_asynchrony(self) -> dict:
        """The interval figures of firing and the staleness correction since the previous call
        (``CoagentLayer.take_asynchrony``; ``{}`` for an agent with neither)."""

    def state_dict(self) -> dict:
        """Everything needed to continue bit-exactly, batches in flight included."""

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""


@dataclass
class AgentStats:
    """What happened to the batches an agent saw, and how stale its updates were.

    ``staleness`` of a batch: the agent's parameter steps between its forward and its update.
    ``unknown``: messages for batches the agent never held (lost); ``duplicates``: messages for
    batches already applied or dropped (retries, rewards after an eviction), skipped;
    ``replayed``: updates applied from messages a backend replayed after a restart (0 on the
    backends here: the Ray backend's replay is exactly once, so a replayed agent counts what it
    would have counted without the fault, and the backend reports the replays in its summary).
    """

    forwards: int = 0
    applied: int = 0
    dropped: int = 0
    evicted: int = 0
    unknown: int = 0
    duplicates: int = 0
    replayed: int = 0
    retried_forwards: int = 0
    staleness_sum: int = 0
    staleness_max: int = 0
    interval_applied: int = 0
    interval_staleness_sum: int = 0
    interval_staleness_max: int = 0

    def record_staleness(self, staleness: int | np.ndarray) -> None:
        """One update's staleness: a number, or one per replica ``(R,)`` once the replicas'
        versions differ (a replica that fired on no stream took no step)."""
        self.staleness_sum += staleness
        self.staleness_max = np.maximum(self.staleness_max, staleness) if isinstance(
            staleness, np.ndarray) else max(self.staleness_max, staleness)
        self.interval_applied += 1
        self.interval_staleness_sum += staleness
        self.interval_staleness_max = np.maximum(self.interval_staleness_max, staleness) if (
            isinstance(staleness, np.ndarray)) else max(self.interval_staleness_max, staleness)

    def take_interval(self) -> tuple[float | None, int | None]:
        """Mean and max staleness of the updates since the last call (None, None without updates:
        nothing was measured); starts a new interval."""
        if not self.interval_applied:
            return None, None
        mean = self.interval_staleness_sum / self.interval_applied
        peak = self.interval_staleness_max
        self.interval_applied = self.interval_staleness_sum = self.interval_staleness_max = 0
        return mean, peak

    def as_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["staleness_mean"] = self.staleness_sum / self.applied if self.applied else 0.0
        return d

    def load(self, d: dict) -> None:
        for f in fields(self):
            setattr(self, f.name, count(d[f.name]))


def count(value) -> int | np.ndarray:
    """A saved counter: a number, or one per replica (an int64 ``(R,)`` array)."""
    value = np.asarray(value)
    return int(value) if value.ndim == 0 else value.astype(np.int64)


class PendingBatch:
    """What an agent remembers about one batch between its forward and its update.

    ``x`` the agent's input (the paper's state ``s_i``) ``(B, n_in)``; ``cache`` what the backward
    pass of its network needs; ``out`` what it sent on (``phi(a)`` ``(B, U)`` or the prediction);
    ``version`` its parameter steps at the forward; for a coagent layer ``dist`` (the policy),
    ``action`` ``(B, U)``, ``mask`` (subset units, §2.3) and ``greedy`` (staged freezing, §2.4);
    ``reward`` ``(B,)`` and ``feedback`` ``(B, *shape)`` once they arrived. Asynchrony
    (``core/firing.py``, ``core/importance.py``): ``fired`` ``(B,)`` the streams the layer fired
    on (``None``: all), ``logp`` ``(B, U)`` the sampling policy's log-probabilities of ``action``
    (kept only for the staleness correction).
    """

    __slots__ = ("action", "cache", "dist", "feedback", "fired", "greedy", "logp", "mask", "out",
                 "reward", "version", "x")
    #: Slots written only when their feature is on (a state without them is a state of today).
    OPTIONAL = ("fired", "logp")

    def __init__(self, x, cache, out, version, dist=None, action=None, mask=None, greedy=False,
                 fired=None, logp=None):
        self.x, self.cache, self.out, self.version = x, cache, out, version
        self.dist, self.action, self.mask, self.greedy = dist, action, mask, greedy
        self.fired, self.logp = fired, logp
        self.reward = self.feedback = None

    def to_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.__slots__
                if name not in self.OPTIONAL or getattr(self, name) is not None}

    @classmethod
    def from_dict(cls, d: dict) -> PendingBatch:
        entry = cls(d["x"], list(d["cache"]), d["out"], count(d["version"]), d["dist"],
                    d["action"], d["mask"], bool(d["greedy"]), d.get("fired"), d.get("logp"))
        entry.reward, entry.feedback = d["reward"], d["feedback"]
        return entry


class AgentBase:
    """The rule-agnostic mechanics of an agent with a parameter vector ``net.params`` stepped by
    ``optimizer`` (see the module docstring). Subclasses set :attr:`kind` and implement the
    protocol messages with :meth:`_check_input`, :meth:`_remember`, :meth:`_lookup`,
    :meth:`_check_message`, :meth:`_step` and :meth:`_settle`."""

    kind = "agent"
    listens_to_feedback = False
    sends_feedback = False
    needs_reward = True
    needs_labels = False

    def __init__(self, name: str, net: MLP, optimizer: Optimizer, *, update_every: int = 1,
                 max_pending: int = 1024) -> None:
        if not isinstance(update_every, int) or update_every < 1:
            raise ConfigError(f"{name}: update_every must be an integer >= 1, got {update_every!r}")
        if not isinstance(max_pending, int) or max_pending < 1:
            raise ConfigError(f"{name}: max_pending must be an integer >= 1, got {max_pending!r}")
        self.name = name
        self.net = net
        self.replicas = net.replicas  # R replicas on a leading axis, or None (core/replicas.py)
        self.non_finite: set[int] = set()  # replicas whose messages were not finite
        self.optimizer = optimizer
        self.update_every = update_every
        self.max_pending = max_pending
        self.dtype = net.dtype
        self.version = 0  # parameter steps taken; one per replica once they differ
        self.stats = AgentStats()
        self._pending: OrderedDict[int, PendingBatch] = OrderedDict()
        self._accumulated = np.zeros_like(net.params) if update_every > 1 else None
        self._accumulated_batches = 0
        self.applied_batches, self.dropped_batches, self.lost_batches = (
            BatchRecord(), BatchRecord(), BatchRecord())

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(owned(state))  # the gradient accumulator is updated in place

    @property
    def n_in(self) -> int:
        return self.net.n_in

    @property
    def pending(self) -> int:
        """Batches forwarded and not yet learnt from."""
        return len(self._pending)

    def sent_output(self, sid: int) -> np.ndarray | None:
        """What the forward of batch ``sid`` returned, while the batch is in flight (else None):
        a backend that lost that reply on its way asks the agent for it again."""
        entry = self._pending.get(sid)
        return None if entry is None else entry.out

    # ---- message boundary -------------------------------------------------------------------
    @property
    def _lead(self) -> tuple[int, ...]:
        return () if self.replicas is None else (self.replicas,)

    def _check_input(self, sid: int, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        lead = self._lead
        if (x.ndim != 2 + len(lead) or x.shape[:len(lead)] != lead or x.shape[-1] != self.n_in
                or x.shape[-2] == 0):
            raise ProtocolError(
                f"{self.name}: batch {sid} input must have shape "
                f"{(*lead, 'B', self.n_in)}, got {x.shape}".replace("'", "")
            )
        if x.dtype != self.dtype:
            x = x.astype(self.dtype)
        if sid in self.applied_batches or sid in self.dropped_batches:
            raise ProtocolError(f"{self.name}: batch id {sid} was already used")
        return x

    def _repeated_forward(self, sid: int, x: np.ndarray) -> np.ndarray | None:
        """A retried forward (same id, same input) gets its first answer; a different batch under
        an id in flight is an error."""
        entry = self._pending.get(sid)
        if entry is None:
            return None
        x = np.asarray(x)
        if x.shape == entry.x.shape and np.array_equal(x, entry.x):
            self.stats.retried_forwards += 1
            return entry.out
        raise ProtocolError(f"{self.name}: batch id {sid} is already in flight")

    def _check_message(self, sid: int, what: str, value, shape: tuple[int, ...]) -> np.ndarray:
        """``value`` as an array of this agent's dtype and of ``shape``, finite."""
        value = np.asarray(value, dtype=self.dtype)
        if value.shape != shape:
            raise ProtocolError(
                f"{self.name}: the {what} for batch {sid} must have shape {shape}, "
                f"got {value.shape}"
            )
        if self.replicas is not None:
            return self._contain_non_finite(value)
        if not np.isfinite(value).all():
            raise ProtocolError(
                f"{self.name}: the {what} for batch {sid} is not finite "
                f"(NaN or inf in {int((~np.isfinite(value)).sum())} of {value.size} values) — "
                "the network has probably diverged; lower the learning rate"
            )
        return value

    def _contain_non_finite(self, value: np.ndarray) -> np.ndarray:
        """A replica whose message is not finite has diverged: its values become 0, so the other
        replicas learn on (none of their numbers depends on it), and the replica is recorded in
        :attr:`non_finite` for the run to mark diverged."""
        finite = np.isfinite(value.reshape(len(value), -1)).all(axis=1)
        if finite.all():
            return value
        self.non_finite.update(int(r) for r in np.flatnonzero(~finite))
        return np.where(finite.reshape(-1, *[1] * (value.ndim - 1)), value, 0).astype(value.dtype)

    def take_non_finite(self) -> set[int]:
        """The replicas that sent this agent a message that was not finite since the last call."""
        taken, self.non_finite = self.non_finite, set()
        return taken

    def _remember(self, sid: int, entry: PendingBatch) -> None:
        self._pending[sid] = entry
        self.stats.forwards += 1
        if len(self._pending) > self.max_pending:
            evicted, _ = self._pending.popitem(last=False)
            self.dropped_batches.add(evicted)
            self.stats.evicted += 1

    def _lookup(self, sid: int) -> PendingBatch | None:
        """The pending batch ``sid``; ``None`` (counted) for a retry of a batch already settled, or
        for a batch this agent no longer holds (lost, e.g. forwarded after its last checkpoint)."""
        entry = self._pending.get(sid)
        if entry is None:
            if sid in self.applied_batches or sid in self.dropped_batches:
                self.stats.duplicates += 1
            else:
                self.stats.unknown += 1
                self.lost_batches.add(sid)
        return entry

    def _settle(self, sid: int) -> None:
        """Record batch ``sid`` as applied (its update is done)."""
        self.applied_batches.add(sid)
        self.stats.applied += 1

    def forget(self, sid: int) -> bool:
        """Drop batch ``sid`` without learning from it (counted as dropped)."""
        if self._pending.pop(sid, None) is None:
            return False
        self.dropped_batches.add(sid)
        self.stats.dropped += 1
        return True

    def records(self) -> dict[str, BatchRecord]:
        return {"applied": self.applied_batches, "dropped": self.dropped_batches,
                "lost": self.lost_batches}

    def report(self) -> dict:
        """Name, counters and the sizes of the batch records, for run summaries."""
        return {"name": self.name, **self.stats.as_dict(), "pending": len(self._pending),
                **{f"{name}_batches": len(record) for name, record in self.records().items()}}

    def take_staleness(self) -> tuple[float | None, int | None]:
        return self.stats.take_interval()

    def take_grad_variance(self) -> float | None:
        return None  # measured by the coagent layers that record it

    def take_asynchrony(self) -> dict:
        return {}  # measured by the coagent layers that fire on a schedule or correct staleness

    # ---- learning ---------------------------------------------------------------------------
    def _step(self, where: np.ndarray | None = None) -> None:
        """Apply ``net.grad``: one optimizer step, or accumulate until ``update_every`` batches.
        With replicas, ``where`` ``(R,)`` names the replicas that update (None: all); the others'
        weights and optimizer state do not move (core/optim.py)."""
        if self._accumulated is None:
            self.optimizer.step(self.net.params, self.net.grad, where)
            self.version = self.version + (1 if where is None else where.astype(np.int64))
            return
        if where is not None:
            raise ConfigError(f"{self.name}: a replica that fired on no stream of a batch cannot "
                              "skip its update on a slow clock (update_every > 1)")
        self._accumulated += self.net.grad
        self._accumulated_batches += 1
        if self._accumulated_batches == self.update_every:
            np.divide(self._accumulated, self.update_every, out=self.net.grad)
            self.optimizer.step(self.net.params, self.net.grad)
            self._accumulated[...] = 0.0
            self._accumulated_batches = 0
            self.version += 1

    def set_optimizer(self, optimizer: Optimizer) -> None:
        """Replace the policy optimizer (the switch to SGD after pre-training, §5.4)."""
        self.optimizer = optimizer

    # ---- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything needed to continue bit-exactly, batches in flight included."""
        state = {
            "kind": self.kind, "name": self.name, "sizes": list(self.net.sizes),
            "params": self.net.params.copy(), "optimizer": self.optimizer.state_dict(),
            "version": self.version, "stats": self.stats.as_dict(),
            "accumulated": None if self._accumulated is None else self._accumulated.copy(),
            "accumulated_batches": self._accumulated_batches,
            "pending": [[sid, entry.to_dict()] for sid, entry in self._pending.items()],
            "records": {name: record.to_list() for name, record in self.records().items()},
        }
        state.update(self._extra_state())
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`, batches in flight included."""
        for key in ("kind", "name"):
            if state.get(key) != getattr(self, key):
                raise CheckpointError(
                    f"checkpoint is for agent {state.get('name')!r} ({state.get('kind')}), not "
                    f"{self.name!r} ({self.kind})"
                )
        self.net.load_params(state["params"], self.name)
        if state["optimizer"]["name"] != self.optimizer.name:  # saved after the §5.4 switch
            self.optimizer = make_optimizer(state["optimizer"]["name"], self.net.params.shape,
                                            state["optimizer"]["lr"], self.dtype)
        self.optimizer.load_state_dict(state["optimizer"])
        self.version = count(state["version"])
        self.stats.load(state["stats"])
        if (state["accumulated"] is None) != (self._accumulated is None):
            raise CheckpointError(f"{self.name}: checkpoint was saved with another update_every")
        if self._accumulated is not None:
            check_like(state["accumulated"], self._accumulated, f"{self.name}: accumulated")
            self._accumulated[...] = state["accumulated"]
        self._accumulated_batches = int(state["accumulated_batches"])
        for sid, entry in state["pending"]:
            self._check_pending(sid, entry)
        self._pending = OrderedDict((int(sid), PendingBatch.from_dict(entry))
                                    for sid, entry in state["pending"])
        records = state["records"]
        self.applied_batches = BatchRecord.from_list(records["applied"])
        self.dropped_batches = BatchRecord.from_list(records["dropped"])
        self.lost_batches = BatchRecord.from_list(records["lost"])
        self._load_extra_state(state)

    def _extra_state(self) -> dict:
        return {}

    def _load_extra_state(self, state: dict) -> None:
        return None

    def _check_pending(self, sid: int, entry: dict) -> None:
        """Refuse a saved batch in flight whose arrays do not fit this agent, before it is used:
        each must have the shape and dtype this agent's own forward of the saved input gives."""
        where = f"{self.name}: batch {sid} in flight"
        x, lead = entry["x"], self._lead
        if (not isinstance(x, np.ndarray) or x.ndim != 2 + len(lead)
                or x.shape[:len(lead)] != lead or x.shape[-1] != self.n_in
                or not x.shape[-2] or x.dtype != self.dtype):
            raise CheckpointError(f"{where}: input must be a {self.dtype} array of shape "
                                  f"{(*lead, 'B', self.n_in)}, got {layout(x)}".replace("'", ""))
        for name, expected in self._pending_layout(x).items():
            saved = entry[name]
            if isinstance(expected, list):
                if not isinstance(saved, list) or len(saved) != len(expected):
                    raise CheckpointError(f"{where}: {name} must be a list of {len(expected)}, "
                                          f"got {layout(saved)}")
                for i, (a, b) in enumerate(zip(saved, expected, strict=True)):
                    check_like(a, b, f"{where}: {name}[{i}]")
            else:
                check_like(saved, expected, f"{where}: {name}")
        if entry["reward"] is not None:
            check_like(entry["reward"], x[..., 0], f"{where}: reward")
        if entry["feedback"] is not None:
            shape = (*x.shape[:-1], *getattr(self, "feedback_shape", ()))
            check_like(entry["feedback"], np.empty(shape, self.dtype), f"{where}: feedback")

    def _pending_layout(self, x: np.ndarray) -> dict:
        """What a forward of ``x`` remembers (greedy: only shapes and dtypes are compared)."""
        out, cache = self.net.forward(x)
        return {"out": out, "cache": cache, "dist": None, "action": None, "mask": None}


def layout(value: object) -> str:
    """How a saved value looks, for error messages: dtype and shape of an array, else its type."""
    if isinstance(value, np.ndarray):
        return f"a {value.dtype} array of shape {value.shape}"
    return "None" if value is None else type(value).__name__


def check_like(saved: object, expected: np.ndarray | None, where: str) -> None:
    """A saved array must have the shape and dtype of ``expected`` (``None``: must be None)."""
    if expected is None:
        if saved is not None:
            raise CheckpointError(f"{where} must be None, got {layout(saved)}")
        return
    if (not isinstance(saved, np.ndarray) or saved.shape != expected.shape
            or saved.dtype != expected.dtype):
        raise CheckpointError(f"{where} must be a {expected.dtype} array of shape "
                              f"{expected.shape}, got {layout(saved)}")
