"""Layers as agents: each one runs on its own from the messages of the agent protocol.

* ``forward(sid, x) -> out`` — act on batch ``sid`` and remember what is needed to learn from it;
* ``reward(sid, r, target)`` — the broadcast per-example reward (and the labels, which only a
  supervised read-out uses);
* ``feedback(sid, y)`` — one scalar per example from the layer above (critic rules, §3.6-3.7);
  ``y = None`` means the layer above dropped the batch, so this layer drops it too.

``reward`` and ``feedback`` return the feedback for the layer below when the call completes the
batch and the layer sends feedback, else ``None``. A message for a batch id the layer does not hold
(evicted, or lost in a restart) is counted and skipped, never an error; a message for a batch the
layer already applied or dropped (a retry) is skipped too, so no update is ever applied twice.
Every batch id a layer hears of ends in exactly one of its records: applied, dropped or lost.

:class:`CoagentLayer` is a layer of stochastic units (a partition group when its policy network has
hidden layers, §2.6); :class:`Readout` is a supervised output layer (and, with hidden layers, the
backprop and straight-through comparison learners, §2.7-2.8).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, fields

import numpy as np

from async_coagents.core.arrays import owned
from async_coagents.core.baselines import EmaBaseline, NoBaseline, StateBaseline
from async_coagents.core.critics import ActionValueCritic
from async_coagents.core.metrics import LayerActivity
from async_coagents.core.mlp import MLP
from async_coagents.core.objectives import Classification, Regression
from async_coagents.core.optim import Optimizer, make_optimizer
from async_coagents.core.record import BatchRecord
from async_coagents.core.seeding import rng_state, set_rng_state
from async_coagents.core.units import Categorical, Gaussian
from async_coagents.errors import CheckpointError, ConfigError, ProtocolError


@dataclass
class LayerStats:
    """What happened to the batches a layer saw, and how stale its updates were.

    ``staleness`` of a batch: the layer's parameter steps between its forward and its update.
    ``unknown``: messages for batches the layer never held (lost); ``duplicates``: messages for
    batches already applied or dropped (retries, rewards after an eviction), skipped;
    ``replayed``: updates applied from messages a backend replayed after a restart.
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

    def record_staleness(self, staleness: int) -> None:
        self.staleness_sum += staleness
        self.staleness_max = max(self.staleness_max, staleness)
        self.interval_applied += 1
        self.interval_staleness_sum += staleness
        self.interval_staleness_max = max(self.interval_staleness_max, staleness)

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
            setattr(self, f.name, int(d[f.name]))


class _Pending:
    """What a layer remembers about one batch between its forward and its update."""

    __slots__ = ("action", "cache", "dist", "feedback", "greedy", "mask", "out", "reward",
                 "version", "x")

    def __init__(self, x, cache, out, version, dist=None, action=None, mask=None, greedy=False):
        self.x, self.cache, self.out, self.version = x, cache, out, version
        self.dist, self.action, self.mask, self.greedy = dist, action, mask, greedy
        self.reward = self.feedback = None

    def to_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.__slots__}

    @classmethod
    def from_dict(cls, d: dict) -> _Pending:
        entry = cls(d["x"], list(d["cache"]), d["out"], int(d["version"]), d["dist"],
                    d["action"], d["mask"], bool(d["greedy"]))
        entry.reward, entry.feedback = d["reward"], d["feedback"]
        return entry


class _Layer:
    """Shared mechanics: the pending-batch cache, message checks, the (accumulated) policy step."""

    kind = "layer"
    listens_to_feedback = False
    sends_feedback = False
    needs_reward = True

    def __init__(self, name: str, net: MLP, optimizer: Optimizer, *, update_every: int = 1,
                 max_pending: int = 1024) -> None:
        if not isinstance(update_every, int) or update_every < 1:
            raise ConfigError(f"{name}: update_every must be an integer >= 1, got {update_every!r}")
        if not isinstance(max_pending, int) or max_pending < 1:
            raise ConfigError(f"{name}: max_pending must be an integer >= 1, got {max_pending!r}")
        self.name = name
        self.net = net
        self.optimizer = optimizer
        self.update_every = update_every
        self.max_pending = max_pending
        self.dtype = net.dtype
        self.version = 0  # parameter steps taken
        self.stats = LayerStats()
        self._pending: OrderedDict[int, _Pending] = OrderedDict()
        self._accumulated = np.zeros_like(net.params) if update_every > 1 else None
        self._accumulated_batches = 0
        self.applied_batches, self.dropped_batches, self.lost_batches = (
            BatchRecord(), BatchRecord(), BatchRecord())
        self.replaying = False  # set while a backend replays messages after a restart

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(owned(state))  # the gradient accumulator is updated in place

    @property
    def n_in(self) -> int:
        return self.net.n_in

    @property
    def pending(self) -> int:
        """Batches forwarded and not yet learnt from."""
        return len(self._pending)

    # ---- message boundary -------------------------------------------------------------------
    def _check_input(self, sid: int, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.n_in or x.shape[0] == 0:
            raise ProtocolError(
                f"{self.name}: batch {sid} input must have shape (B, {self.n_in}), got {x.shape}"
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

    def _check_signal(self, sid: int, what: str, value, batch: int) -> np.ndarray:
        value = np.asarray(value, dtype=self.dtype)
        if value.shape != (batch,):
            raise ProtocolError(
                f"{self.name}: the {what} for batch {sid} must have shape ({batch},), "
                f"got {value.shape}"
            )
        if not np.isfinite(value).all():
            raise ProtocolError(
                f"{self.name}: the {what} for batch {sid} is not finite "
                f"(NaN or inf in {int((~np.isfinite(value)).sum())} of {batch} examples) — "
                "the network has probably diverged; lower the learning rate"
            )
        return value

    def _remember(self, sid: int, entry: _Pending) -> None:
        self._pending[sid] = entry
        self.stats.forwards += 1
        if len(self._pending) > self.max_pending:
            evicted, _ = self._pending.popitem(last=False)
            self.dropped_batches.add(evicted)
            self.stats.evicted += 1

    def _lookup(self, sid: int) -> _Pending | None:
        """The pending batch ``sid``; ``None`` (counted) for a retry of a batch already settled, or
        for a batch this layer no longer holds (lost, e.g. forwarded after its last checkpoint)."""
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
        if self.replaying:
            self.stats.replayed += 1

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

    # ---- learning ---------------------------------------------------------------------------
    def _step(self) -> None:
        """Apply ``net.grad``: one optimizer step, or accumulate until ``update_every`` batches."""
        if self._accumulated is None:
            self.optimizer.step(self.net.params, self.net.grad)
            self.version += 1
            return
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
                    f"checkpoint is for layer {state.get('name')!r} ({state.get('kind')}), not "
                    f"{self.name!r} ({self.kind})"
                )
        self.net.load_params(state["params"], self.name)
        if state["optimizer"]["name"] != self.optimizer.name:  # saved after the §5.4 switch
            self.optimizer = make_optimizer(state["optimizer"]["name"], self.net.params.size,
                                            state["optimizer"]["lr"], self.dtype)
        self.optimizer.load_state_dict(state["optimizer"])
        self.version = int(state["version"])
        self.stats.load(state["stats"])
        if (state["accumulated"] is None) != (self._accumulated is None):
            raise CheckpointError(f"{self.name}: checkpoint was saved with another update_every")
        if self._accumulated is not None:
            _check_like(state["accumulated"], self._accumulated, f"{self.name}: accumulated")
            self._accumulated[...] = state["accumulated"]
        self._accumulated_batches = int(state["accumulated_batches"])
        for sid, entry in state["pending"]:
            self._check_pending(sid, entry)
        self._pending = OrderedDict((int(sid), _Pending.from_dict(entry))
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
        """Refuse a saved batch in flight whose arrays do not fit this layer, before it is used:
        each must have the shape and dtype this layer's own forward of the saved input gives."""
        where = f"{self.name}: batch {sid} in flight"
        x = entry["x"]
        if (not isinstance(x, np.ndarray) or x.ndim != 2 or x.shape[1] != self.n_in
                or not len(x) or x.dtype != self.dtype):
            raise CheckpointError(f"{where}: input must be a {self.dtype} array of shape "
                                  f"(B, {self.n_in}), got {_layout(x)}")
        for name, expected in self._pending_layout(x).items():
            saved = entry[name]
            if isinstance(expected, list):
                if not isinstance(saved, list) or len(saved) != len(expected):
                    raise CheckpointError(f"{where}: {name} must be a list of {len(expected)}, "
                                          f"got {_layout(saved)}")
                for i, (a, b) in enumerate(zip(saved, expected, strict=True)):
                    _check_like(a, b, f"{where}: {name}[{i}]")
            else:
                _check_like(saved, expected, f"{where}: {name}")
        for name in ("reward", "feedback"):
            if entry[name] is not None:
                _check_like(entry[name], x[:, 0], f"{where}: {name}")

    def _pending_layout(self, x: np.ndarray) -> dict:
        """What a forward of ``x`` remembers (greedy: only shapes and dtypes are compared)."""
        out, cache = self.net.forward(x)
        return {"out": out, "cache": cache, "dist": None, "action": None, "mask": None}


class CoagentLayer(_Layer):
    """A layer of stochastic units, each unit an agent (§2, §3).

    ``policy`` maps the layer input to the units' pre-activations (one affine map, or a partition
    group's deterministic network, §2.6). ``baseline``, ``critic`` and the rule settings decide the
    update, which always uses the policy that sampled the batch (§10: pre-update policies).

    Options: ``subset_size`` units sample and learn while the others act greedily, redrawn every
    ``subset_every`` batches (§2.3); from batch ``freeze_at`` on the layer acts greedily and stops
    learning (staged freezing, §2.4); ``reinforce_updates`` batches of REINFORCE before a critic
    rule takes over (§3.9 reconstructions).
    """

    kind = "coagent"

    def __init__(
        self,
        name: str,
        policy: MLP,
        unit: Categorical | Gaussian,
        optimizer: Optimizer,
        *,
        sampling_rng: np.random.Generator,
        baseline: NoBaseline | EmaBaseline | StateBaseline | None = None,
        critic: ActionValueCritic | None = None,
        critic_mode: str | None = None,
        critic_target: str = "bootstrap",
        listens_to_feedback: bool = False,
        reinforce_updates: int = 0,
        subset_size: int | None = None,
        subset_every: int = 1,
        freeze_at: int | None = None,
        update_every: int = 1,
        max_pending: int = 1024,
    ) -> None:
        super().__init__(name, policy, optimizer, update_every=update_every,
                         max_pending=max_pending)
        if policy.n_out % unit.n_logits:
            raise ConfigError(f"{name}: {policy.n_out} outputs is not a whole number of units")
        self.unit = unit
        self.n_units = policy.n_out // unit.n_logits
        self.rng = sampling_rng
        self.baseline = baseline or NoBaseline()
        if (critic is None) != (critic_mode is None):
            raise ConfigError(f"{name}: a critic needs a critic_mode and vice versa")
        if critic_mode not in (None, "on-policy", "off-policy"):
            raise ConfigError(f"{name}: critic_mode must be on-policy or off-policy")
        if critic_target not in ("bootstrap", "return"):
            raise ConfigError(f"{name}: critic_target must be bootstrap or return")
        self.critic, self.critic_mode, self.critic_target = critic, critic_mode, critic_target
        self.sends_feedback = critic is not None
        self.listens_to_feedback = listens_to_feedback
        self.reinforce_updates = int(reinforce_updates)
        # A layer that learns only from the layer above ignores the broadcast reward (§3.6).
        self.needs_reward = not listens_to_feedback or critic_target == "return" or (
            self.reinforce_updates > 0) or not isinstance(self.baseline, NoBaseline)
        if subset_size is not None and not 1 <= subset_size <= self.n_units:
            raise ConfigError(
                f"{name}: subset must be between 1 and {self.n_units} units, got {subset_size}"
            )
        if not isinstance(subset_every, int) or subset_every < 1:
            raise ConfigError(f"{name}: subset_every must be an integer >= 1, got {subset_every!r}")
        self.subset_size, self.subset_every = subset_size, subset_every
        self.freeze_at = freeze_at
        self._mask: np.ndarray | None = None

    # ---- protocol -----------------------------------------------------------------------------
    def forward(self, sid: int, x: np.ndarray) -> np.ndarray:
        """Sample this layer's action for batch ``sid``; return the state ``phi(a)`` ``(B, U)``."""
        repeated = self._repeated_forward(sid, x)
        if repeated is not None:
            return repeated
        x = self._check_input(sid, x)
        z, cache = self.policy.forward(x)
        unit = self.unit
        dist = unit.policy(z)
        greedy = self.freeze_at is not None and self.stats.forwards >= self.freeze_at
        mask = None
        if greedy:  # staged: a frozen layer acts greedily and does not learn (§2.4)
            action = unit.greedy(dist)
        else:
            action = unit.sample(dist, self.rng)
            if self.subset_size is not None and self.subset_size < self.n_units:
                mask = self._subset_mask()  # only these units sample; the rest act greedily (§2.3)
                action = np.where(mask, action, unit.greedy(dist))
        h = unit.transition(action, self.dtype)
        self._remember(sid, _Pending(x, cache, h, self.version, dist, action, mask, greedy))
        return h

    def reward(self, sid: int, r: np.ndarray, target: np.ndarray | None = None):
        """Take the broadcast reward; learn now unless feedback from above is still awaited."""
        entry = self._lookup(sid)
        if entry is None or not self.needs_reward:
            return None
        entry.reward = self._check_signal(sid, "reward", r, len(entry.x))
        return self._learn_if_complete(sid, entry)

    def feedback(self, sid: int, y: np.ndarray | None):
        """Take ``y_i`` from the layer above (``None``: it dropped the batch, so drop it too)."""
        if not self.listens_to_feedback:
            raise ProtocolError(f"{self.name} does not take feedback (its rule uses the reward)")
        entry = self._lookup(sid)
        if entry is None:
            return None
        if y is None:
            self.forget(sid)
            return None
        entry.feedback = self._check_signal(sid, "feedback", y, len(entry.x))
        return self._learn_if_complete(sid, entry)

    def act(self, x: np.ndarray) -> np.ndarray:
        """Greedy forward for evaluation (§4.2): ``phi(greedy action)``, ``(B, U)``."""
        return self.measure(x)[0]

    def measure(self, x: np.ndarray) -> tuple[np.ndarray, LayerActivity]:
        """Greedy forward and this layer's entropy and activity sums on it (§4.3, §4.4)."""
        x = np.asarray(x, dtype=self.dtype)
        dist = self.unit.policy(self.policy(x))
        action = self.unit.greedy(dist)
        return self.unit.transition(action, self.dtype), LayerActivity.of(self.unit, dist, action)

    @property
    def policy(self) -> MLP:
        return self.net

    # ---- learning -----------------------------------------------------------------------------
    def _subset_mask(self) -> np.ndarray:
        if self._mask is None or self.stats.forwards % self.subset_every == 0:
            chosen = self.rng.choice(self.n_units, size=self.subset_size, replace=False)
            self._mask = np.zeros(self.n_units, dtype=bool)
            self._mask[chosen] = True
        return self._mask

    def _learn_if_complete(self, sid: int, entry: _Pending):
        if (self.needs_reward and entry.reward is None) or (
                self.listens_to_feedback and entry.feedback is None):
            return None
        del self._pending[sid]
        feedback_below = self._learn(entry)
        self._settle(sid)
        return feedback_below

    def _learn(self, e: _Pending):
        """The update of one batch, in the reference order of §10 for this layer:
        critic step, feedback for the layer below (updated critic, pre-step policy), policy step,
        baseline update."""
        self.stats.record_staleness(self.version - e.version)
        r = e.reward
        y = e.feedback if self.listens_to_feedback else r  # the return signal from above
        feedback_below = None
        if self.critic is not None:
            self.critic.learn(e.x, e.out, r if self.critic_target == "return" else y)
            if self.critic_mode == "off-policy":  # Q_i(s_i, greedy_i(s_i)) (§3.7)
                h_eval = self.unit.transition(self.unit.greedy(e.dist), self.dtype)
            else:  # Q_i(s_i, a_i) (§3.6)
                h_eval = e.out
            feedback_below = self.critic.value(e.x, h_eval)
        if not e.greedy:
            signal = r if self.stats.applied < self.reinforce_updates else y
            g = self.baseline.advantage(signal, e.x)
            # dJ/dz = -(G_b / B) * d log pi(a_b | s_b) / dz  (§3.0)
            d = self.unit.score_grad(e.dist, e.action)
            if e.mask is not None:
                d.reshape(len(d), self.n_units, -1)[:, ~e.mask] = 0.0
            d *= (g * (-1.0 / len(g)))[:, None]
            self.policy.backward(e.cache, d)
            self._step()
            self.baseline.learn(signal, e.x)
        return feedback_below

    # ---- state --------------------------------------------------------------------------------
    def _extra_state(self) -> dict:
        return {
            "rng": rng_state(self.rng),
            "baseline": self.baseline.state_dict(),
            "critic": None if self.critic is None else self.critic.state_dict(),
            "subset_mask": None if self._mask is None else self._mask.copy(),
        }

    def _pending_layout(self, x: np.ndarray) -> dict:
        z, cache = self.policy.forward(x)
        dist = self.unit.policy(z)
        action = self.unit.greedy(dist)
        return {"out": self.unit.transition(action, self.dtype), "cache": cache, "dist": dist,
                "action": action}

    def _check_pending(self, sid: int, entry: dict) -> None:
        super()._check_pending(sid, entry)
        action = entry["action"]
        if isinstance(self.unit, Categorical) and (action.min() < 0 or
                                                   action.max() >= self.unit.n_actions):
            raise CheckpointError(f"{self.name}: batch {sid} in flight: actions must lie in "
                                  f"[0, {self.unit.n_actions}), got {action.min()}..{action.max()}")
        if entry["mask"] is not None:
            _check_like(entry["mask"], np.zeros(self.n_units, dtype=bool),
                        f"{self.name}: batch {sid} in flight: mask")

    def _load_extra_state(self, state: dict) -> None:
        set_rng_state(self.rng, state["rng"], f"{self.name} sampling stream")
        self.baseline.load_state_dict(state["baseline"])
        if (state["critic"] is None) != (self.critic is None):
            raise CheckpointError(f"{self.name}: checkpoint and network disagree on the critic")
        if self.critic is not None:
            self.critic.load_state_dict(state["critic"])
        mask = state["subset_mask"]
        if mask is not None:
            _check_like(mask, np.zeros(self.n_units, dtype=bool), f"{self.name}: subset_mask")
        self._mask = None if mask is None else np.asarray(mask, dtype=bool).copy()


class Readout(_Layer):
    """A supervised output layer: the batch-mean CE or MSE gradient of its own prediction (§1.2).

    It needs only its input and the labels, so it is local too. With hidden layers it is a whole
    network trained by backprop — the comparison learners: ReLU/tanh/sigmoid MLP (§2.8) or
    straight-through binary units (§2.7, which sample with ``sampling_rng`` in training).
    """

    kind = "readout"

    def __init__(self, name: str, net: MLP, objective: Classification | Regression,
                 optimizer: Optimizer, *, sampling_rng: np.random.Generator | None = None,
                 update_every: int = 1, max_pending: int = 1024) -> None:
        super().__init__(name, net, optimizer, update_every=update_every,
                         max_pending=max_pending)
        if net.stochastic and sampling_rng is None:
            raise ConfigError(f"{name}: straight-through units need a sampling rng")
        self.objective = objective
        self.rng = sampling_rng if net.stochastic else None

    def forward(self, sid: int, x: np.ndarray) -> np.ndarray:
        """The prediction for batch ``sid``: logits ``(B, C)`` or ``(B, 1)``."""
        repeated = self._repeated_forward(sid, x)
        if repeated is not None:
            return repeated
        x = self._check_input(sid, x)
        out, cache = self.net.forward(x, self.rng)
        self._remember(sid, _Pending(x, cache, out, self.version))
        return out

    def reward(self, sid: int, r: np.ndarray, target: np.ndarray | None = None) -> None:
        """One step on the supervised loss of batch ``sid`` (the reward itself is not needed)."""
        entry = self._lookup(sid)
        if entry is None:
            return None
        if target is None:
            raise ProtocolError(f"{self.name}: batch {sid} arrived without its labels")
        target = self.objective.check_target(target, len(entry.x))
        del self._pending[sid]
        self.stats.record_staleness(self.version - entry.version)
        self.net.backward(entry.cache, self.objective.loss_grad(entry.out, target))
        self._step()
        self._settle(sid)
        return None

    def feedback(self, sid: int, y: np.ndarray | None) -> None:
        raise ProtocolError(f"{self.name} is a supervised read-out and takes no feedback")

    def act(self, x: np.ndarray) -> np.ndarray:
        """Greedy prediction (straight-through units threshold at 0.5)."""
        return self.net(np.asarray(x, dtype=self.dtype))

    def _extra_state(self) -> dict:
        return {"rng": None if self.rng is None else rng_state(self.rng)}

    def _load_extra_state(self, state: dict) -> None:
        if self.rng is not None:
            set_rng_state(self.rng, state["rng"], f"{self.name} sampling stream")



def _layout(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"a {value.dtype} array of shape {value.shape}"
    return "None" if value is None else type(value).__name__


def _check_like(saved: object, expected: np.ndarray | None, where: str) -> None:
    """A saved array must have the shape and dtype of ``expected`` (``None``: must be None)."""
    if expected is None:
        if saved is not None:
            raise CheckpointError(f"{where} must be None, got {_layout(saved)}")
        return
    if (not isinstance(saved, np.ndarray) or saved.shape != expected.shape
            or saved.dtype != expected.dtype):
        raise CheckpointError(f"{where} must be a {expected.dtype} array of shape "
                              f"{expected.shape}, got {_layout(saved)}")
