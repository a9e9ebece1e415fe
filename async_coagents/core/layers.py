"""Layers as agents: a layer of stochastic units learning by its rule, and the supervised learners.

:class:`CoagentLayer` is a layer of stochastic units (a partition group when its policy network has
hidden layers, §2.6) whose update is its :class:`~async_coagents.core.rules.Rule`'s; the mechanics
every agent shares (pending batches, idempotence, accounting, staleness, clock rates, the optimizer
step) are :class:`~async_coagents.core.agent.AgentBase`'s. :class:`Readout` is a linear supervised
read-out (§1.2) and :class:`BackpropNetwork` a whole network trained end to end by backprop — the
comparison learners: ReLU/tanh/sigmoid MLP (§2.8) or straight-through binary units (§2.7).

``reward`` and ``feedback`` return the message for the layer below when the call completes the
batch and the layer sends one, else ``None``.
"""

from __future__ import annotations

import numpy as np

from async_coagents.core.agent import AgentBase, PendingBatch, check_like
from async_coagents.core.firing import Hold
from async_coagents.core.grad_variance import GradientVariance
from async_coagents.core.importance import ImportanceStats, truncated_ratio
from async_coagents.core.metrics import LayerActivity
from async_coagents.core.mlp import MLP
from async_coagents.core.objectives import Classification, Regression
from async_coagents.core.optim import Optimizer
from async_coagents.core.rules import Reinforce, Rule, Step
from async_coagents.core.seeding import rng_state, set_rng_state
from async_coagents.core.settings import DEFAULT_OPTIONS, LayerOptions
from async_coagents.core.units import Categorical, Gaussian
from async_coagents.errors import CheckpointError, ConfigError, ProtocolError

#: Numbers per block of replicas in a replicated evaluation (``CoagentLayer.measure``,
#: ``Network.measure``): about 1 MB of float32 temporaries, which stay in cache.
MEASURE_BLOCK = 1 << 18


def replica_step(examples: int, width: int) -> int:
    """Replicas per block of a replicated evaluation of ``examples`` through ``width`` numbers
    each: :data:`MEASURE_BLOCK` numbers a block, at least one replica."""
    return max(1, MEASURE_BLOCK // (examples * width))


class CoagentLayer(AgentBase):
    """A layer of stochastic units, each unit an agent (§2, §3), learning by ``rule``.

    ``policy`` maps the layer input to the units' pre-activations (one affine map, or a partition
    group's deterministic network, §2.6). The update always uses the policy that sampled the batch
    (§10: pre-update policies); its return signal, message and after-step learning are the rule's.

    ``options`` (:class:`~async_coagents.core.settings.LayerOptions`): ``subset`` units sample and
    learn while the others act greedily, redrawn every ``subset_every`` batches (§2.3); from batch
    ``freeze_at`` on the layer acts greedily and stops learning (staged freezing, §2.4); the clock
    rate ``update_every`` and ``max_pending``; its execution function ``fire`` (a layer that does
    not fire on a stream holds its last output there and takes no update for it,
    ``core/firing.py``; ``firing_rng`` draws a random schedule) and the staleness correction
    ``importance_cap`` (``core/importance.py``).

    Routing follows from the rules: the layer sends feedback when its rule does; it listens to the
    layer above when that layer sends (:meth:`listen_to`); it needs the reward when its rule says
    so given that.
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
        rule: Rule | None = None,
        options: LayerOptions = DEFAULT_OPTIONS,
        firing_rng: np.random.Generator | None = None,
    ) -> None:
        super().__init__(name, policy, optimizer, update_every=options.update_every,
                         max_pending=options.max_pending)
        self.options = options
        subset_size, subset_every = options.subset, options.subset_every
        if policy.n_out % unit.n_logits:
            raise ConfigError(f"{name}: {policy.n_out} outputs is not a whole number of units")
        self.unit = unit
        self.n_units = policy.n_out // unit.n_logits
        self.rng = sampling_rng
        self.rule = rule if rule is not None else Reinforce()
        self.listens_to_feedback = False
        self.feedback_shape: tuple[int, ...] = ()
        if subset_size is not None and not 1 <= subset_size <= self.n_units:
            raise ConfigError(
                f"{name}: subset must be between 1 and {self.n_units} units, got {subset_size}"
            )
        if not isinstance(subset_every, int) or subset_every < 1:
            raise ConfigError(f"{name}: subset_every must be an integer >= 1, got {subset_every!r}")
        self.subset_size, self.subset_every = subset_size, subset_every
        self.freeze_at = options.freeze_at
        self._mask: np.ndarray | None = None
        self._grad_variance: GradientVariance | None = None
        self.fire = options.fire
        if self.fire.random and firing_rng is None:
            raise ConfigError(f"{name}: a random firing schedule needs a firing rng")
        self.firing_rng = firing_rng if self.fire.random else None
        self.hold = None if self.fire.always else Hold(self._lead, unit.width(self.n_units),
                                                       self.dtype)
        self.importance_cap = options.importance_cap
        self.importance = None if self.importance_cap is None else ImportanceStats(self._lead)

    def record_grad_variance(self) -> None:
        """Measure every batch's per-example gradient variance (:mod:`~async_coagents.core.
        grad_variance`), reported by :meth:`take_grad_variance`; a policy that is not one affine
        map (a partition group, §2.6) has no such measure and reports ``None``."""
        if len(self.policy.sizes) == 2 and self._grad_variance is None:
            self._grad_variance = GradientVariance(self.replicas)

    def take_grad_variance(self) -> float | None:
        return None if self._grad_variance is None else self._grad_variance.take()

    # ---- routing ------------------------------------------------------------------------------
    def listen_to(self, upper) -> None:
        """Take feedback from ``upper``, the agent above, when it sends any (its rule's choice)."""
        self.listens_to_feedback = bool(upper.sends_feedback)
        if self.listens_to_feedback:
            self.feedback_shape = tuple(upper.rule.message_shape(self.n_units))

    @property
    def sends_feedback(self) -> bool:
        return self.rule.sends

    @property
    def needs_reward(self) -> bool:
        return self.rule.needs_reward(self.listens_to_feedback)

    @property
    def baseline(self):
        """The rule's variance-reduction baseline (``NoBaseline`` when it has none)."""
        return self.rule.baseline

    @property
    def critic(self):
        """The rule's critic ``Q_i`` (``None`` when it has none)."""
        return self.rule.critic

    # ---- protocol -----------------------------------------------------------------------------
    def forward(self, sid: int, x: np.ndarray) -> np.ndarray:
        """Sample this layer's action for batch ``sid``; return ``phi(a)`` ``(B, U)``."""
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
                action = np.where(mask[..., None, :], action, unit.greedy(dist))
        h = unit.transition(action, self.dtype)
        fired = None
        if self.hold is not None:  # the execution function at step t = forwards so far
            fired = self.fire.fired(self.stats.forwards, self._lead, x.shape[-2],
                                    self.firing_rng)
            h = self.hold.apply(fired, h)
        logp = None if self.importance_cap is None else unit.log_prob(dist, action)
        self._remember(sid, PendingBatch(x, cache, h, self.version, dist, action, mask, greedy,
                                         fired, logp))
        return h

    def reward(self, sid: int, r: np.ndarray, labels: np.ndarray | None = None):
        """Take the broadcast reward ``r (B,)``; learn now unless feedback from above is awaited."""
        if not self.needs_reward:
            raise ProtocolError(f"{self.name} does not take the reward (its rule learns from the "
                                "layer above)")
        entry = self._lookup(sid)
        if entry is None:
            return None
        entry.reward = self._check_message(sid, "reward", r, entry.x.shape[:-1])
        return self._learn_if_complete(sid, entry)

    def feedback(self, sid: int, message: np.ndarray | None):
        """Take the message ``(B, *feedback_shape)`` of the layer above (``None``: it dropped the
        batch, so drop it too)."""
        if not self.listens_to_feedback:
            raise ProtocolError(f"{self.name} does not take feedback (its rule uses the reward)")
        entry = self._lookup(sid)
        if entry is None:
            return None
        if message is None:
            self.forget(sid)
            return None
        entry.feedback = self._check_message(sid, "feedback", message,
                                             (*entry.x.shape[:-1], *self.feedback_shape))
        return self._learn_if_complete(sid, entry)

    def act(self, x: np.ndarray, rows: slice | None = None) -> np.ndarray:
        """Greedy forward for evaluation (§4.2): ``phi(greedy action)``, ``(B, U)``."""
        return self.measure(x, rows)[0]

    def measure(self, x: np.ndarray, rows: slice | None = None
                ) -> tuple[np.ndarray, LayerActivity]:
        """Greedy forward and this layer's entropy and activity sums on it (§4.3, §4.4).

        With replicas, in blocks of replicas whose temporaries fit in cache (an evaluation chunk
        of R x 8,192 x U numbers does not, and the passes over it were bound by memory); each
        replica's numbers are those of the whole-axis computation, replica by replica. ``rows``:
        only those replicas, ``x`` holding their inputs (or one input for all), as the network's
        depth-first evaluation asks (:meth:`Network.measure`)."""
        x = np.asarray(x, dtype=self.dtype)
        if self.replicas is None:
            return self._measure(self.policy, x)
        policy = self.policy if rows is None else self.policy.replica_block(rows)
        shared = x.ndim == 2  # one input for every replica (a dataset's split)
        step = replica_step(x.shape[-2], self.n_units)
        outputs, parts = [], []
        for lo in range(0, policy.replicas, step):
            block = slice(lo, lo + step)
            out, part = self._measure(policy.replica_block(block), x if shared else x[block])
            outputs.append(out)
            parts.append(part)
        if len(parts) == 1:
            return outputs[0], parts[0]
        return np.concatenate(outputs), LayerActivity.stack(parts)

    def _measure(self, policy: MLP, x: np.ndarray) -> tuple[np.ndarray, LayerActivity]:
        dist = self.unit.policy(policy(x))
        action = self.unit.greedy(dist)
        activity = LayerActivity.of(self.unit, dist, action)  # before the action is overwritten
        return self.unit.transition_owned(action, self.dtype), activity

    @property
    def policy(self) -> MLP:
        return self.net

    # ---- learning -----------------------------------------------------------------------------
    def _subset_mask(self) -> np.ndarray:
        if self._mask is None or self.stats.forwards % self.subset_every == 0:
            chosen = self.rng.choice(self.n_units, size=self.subset_size, replace=False)
            self._mask = np.zeros((*self._lead, self.n_units), dtype=bool)
            np.put_along_axis(self._mask, chosen, True, axis=-1)
        return self._mask

    def _learn_if_complete(self, sid: int, entry: PendingBatch):
        if (self.needs_reward and entry.reward is None) or (
                self.listens_to_feedback and entry.feedback is None):
            return None
        del self._pending[sid]
        message = self._learn(entry)
        self._settle(sid)
        return message

    def _learn(self, e: PendingBatch):
        """The update of one batch, in the reference order of §10 for this layer: the rule's
        message for the layer below (critic step, then the updated critic at the pre-step policy),
        the policy step on the rule's return signal, the rule's learning after the step."""
        self.stats.record_staleness(self.version - e.version)
        step = Step(e.x, e.out, e.dist, e.action, e.reward, e.feedback, self.unit, self.dtype,
                    self.stats.applied, self.policy, e.mask)
        rule = self.rule
        message = None if rule.message_after_step else rule.message(step)
        if not e.greedy:
            # a layer (a replica) that fired on no stream of the batch takes no update: no step,
            # its optimizer state unchanged (core/firing.py)
            stepped = None if e.fired is None else e.fired.any(axis=-1)
            if stepped is None or stepped.any():
                where = None if stepped is None or stepped.all() else stepped
                dz = self._corrected(e, rule.policy_grad(step))  # dJ/dz of the rule (§3.0)
                self.policy.backward(e.cache, dz)
                if self._grad_variance is not None:
                    self._grad_variance.record(e.x, dz, self.policy.grad, where)
                self._step(where)
            rule.after_step(step)
        if rule.message_after_step:
            message = rule.message(step)
        return message

    def _corrected(self, e: PendingBatch, dz: np.ndarray) -> np.ndarray:
        """``dz (..., B, U*K)`` with the streams that did not fire masked out and, with the
        staleness correction, each unit's term weighted by its truncated importance ratio."""
        if e.fired is not None:
            dz = dz * e.fired[..., None]
        if self.importance_cap is not None:
            logp_now = self.unit.log_prob(self.unit.policy(self.policy.forward(e.x)[0]), e.action)
            rho, weight = truncated_ratio(logp_now, e.logp, self.importance_cap)
            self.importance.record(rho, self.importance_cap, e.fired)
            per_unit = dz.reshape(*weight.shape, -1)
            dz = (per_unit * weight[..., None].astype(per_unit.dtype)).reshape(dz.shape)
        return dz

    def take_asynchrony(self) -> dict:
        """Since the last call: ``fired``, the fraction of stream-steps it fired on (a layer
        that does not always fire), and ``importance_mean`` / ``importance_truncated``, the mean
        importance ratio and the fraction truncated at the cap (with the staleness correction);
        floats, or ``(R,)`` arrays with replicas, ``None`` for an empty interval."""
        taken = {}
        if self.hold is not None:
            taken["fired"] = self.hold.take()
        if self.importance is not None:
            taken["importance_mean"], taken["importance_truncated"] = self.importance.take()
        return taken

    # ---- state --------------------------------------------------------------------------------
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
            check_like(entry["mask"], np.zeros((*self._lead, self.n_units), dtype=bool),
                       f"{self.name}: batch {sid} in flight: mask")
        streams = entry["x"].shape[:-1]
        check_like(entry.get("fired"), None if self.hold is None else np.zeros(streams, bool),
                   f"{self.name}: batch {sid} in flight: fired")
        check_like(entry.get("logp"), None if self.importance_cap is None else
                   np.zeros(entry["action"].shape, self.dtype),
                   f"{self.name}: batch {sid} in flight: logp")

    def _extra_state(self) -> dict:
        state = {
            "rng": rng_state(self.rng),
            **self.rule.state_dict(),
            "subset_mask": None if self._mask is None else self._mask.copy(),
        }
        if self._grad_variance is not None:  # only a run that records it saves it
            state["grad_variance"] = self._grad_variance.state_dict()
        if self.hold is not None:  # only a layer that does not always fire holds
            state["hold"] = self.hold.state_dict()
            if self.firing_rng is not None:
                state["firing_rng"] = rng_state(self.firing_rng)
        if self.importance is not None:  # only a run with the staleness correction
            state["importance"] = self.importance.state_dict()
        return state

    def _load_extra_state(self, state: dict) -> None:
        set_rng_state(self.rng, state["rng"], f"{self.name} sampling stream")
        if self._grad_variance is not None:
            self._grad_variance.load_state_dict(state.get("grad_variance"))
        if ("hold" in state) != (self.hold is not None):
            raise CheckpointError(f"{self.name}: checkpoint and network disagree on the firing "
                                  "schedule (backend.fire)")
        if self.hold is not None:
            self.hold.load_state_dict(state["hold"], self.name)
        if self.firing_rng is not None:
            if "firing_rng" not in state:
                raise CheckpointError(f"{self.name}: checkpoint has no firing stream")
            set_rng_state(self.firing_rng, state["firing_rng"], f"{self.name} firing stream")
        if ("importance" in state) != (self.importance is not None):
            raise CheckpointError(f"{self.name}: checkpoint and network disagree on the "
                                  "staleness correction (network.importance_cap)")
        if self.importance is not None:
            self.importance.load_state_dict(state["importance"], self.name)
        self.rule.load_state_dict(state, self.name)
        mask = state["subset_mask"]
        if mask is not None:
            check_like(mask, np.zeros((*self._lead, self.n_units), dtype=bool),
                       f"{self.name}: subset_mask")
        self._mask = None if mask is None else np.asarray(mask, dtype=bool).copy()


class SupervisedLearner(AgentBase):
    """A network trained on its own supervised loss: the batch-mean CE or MSE gradient of its
    prediction (§1.2), backpropagated through all its layers. It needs its input and the labels,
    never the reward's value, so it is local too."""

    kind = "readout"  # the persisted name of every supervised learner (checkpoints keep it)
    needs_labels = True

    def __init__(self, name: str, net: MLP, objective: Classification | Regression,
                 optimizer: Optimizer, *, sampling_rng: np.random.Generator | None = None,
                 options: LayerOptions = DEFAULT_OPTIONS) -> None:
        """``options``: the clock rate and ``max_pending`` (a supervised learner has no subset
        and does not freeze)."""
        super().__init__(name, net, optimizer, update_every=options.update_every,
                         max_pending=options.max_pending)
        self.options = options
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
        self._remember(sid, PendingBatch(x, cache, out, self.version))
        return out

    def reward(self, sid: int, r: np.ndarray, labels: np.ndarray | None = None) -> None:
        """One step on the supervised loss of batch ``sid`` against ``labels`` (``r`` unused)."""
        entry = self._lookup(sid)
        if entry is None:
            return None
        if labels is None:
            raise ProtocolError(f"{self.name}: batch {sid} arrived without its labels")
        labels = self.objective.check_target(labels, entry.x.shape[:-1])
        del self._pending[sid]
        self.stats.record_staleness(self.version - entry.version)
        self.net.backward(entry.cache, self.objective.loss_grad(entry.out, labels))
        self._step()
        self._settle(sid)
        return None

    def feedback(self, sid: int, message: np.ndarray | None) -> None:
        raise ProtocolError(f"{self.name} is a supervised learner and takes no feedback")

    def act(self, x: np.ndarray, rows: slice | None = None) -> np.ndarray:
        """Greedy prediction (straight-through units threshold at 0.5); ``rows``: only those
        replicas (``x`` holds their inputs, or one input for all)."""
        net = self.net if rows is None else self.net.replica_block(rows)
        return net(np.asarray(x, dtype=self.dtype))

    def _extra_state(self) -> dict:
        return {"rng": None if self.rng is None else rng_state(self.rng)}

    def _load_extra_state(self, state: dict) -> None:
        if self.rng is not None:
            set_rng_state(self.rng, state["rng"], f"{self.name} sampling stream")


class Readout(SupervisedLearner):
    """The linear supervised read-out of a coagent network (§1.2): one affine map."""

    def __init__(self, name: str, net: MLP, objective: Classification | Regression,
                 optimizer: Optimizer, **options) -> None:
        if len(net.sizes) != 2:
            raise ConfigError(f"{name}: a read-out is one affine map; a network with hidden layers "
                              "is a BackpropNetwork")
        super().__init__(name, net, objective, optimizer, **options)


class BackpropNetwork(SupervisedLearner):
    """The comparison learners trained end to end: a ReLU/tanh/sigmoid MLP (§2.8) or a network of
    straight-through binary units (§2.7, sampling with ``sampling_rng`` in training)."""
