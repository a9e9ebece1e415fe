"""What a learning rule is: :class:`Rule`, the :class:`Step` it learns from and the
:class:`RuleSettings` it is built from.

A rule answers three questions about one batch of its layer (`paper_method.md` §3.0, §10):

1. :meth:`Rule.message` — what the layer sends the layer below (critic rules: learn the critic,
   then evaluate it), an array ``(B, *message_shape)``; computed before the policy step, or after
   it for a rule that sets ``message_after_step`` (Weight Maximization rewards the change the step
   made);
2. :meth:`Rule.signal` — the return signal of the layer's policy step, ``G (B,)`` for every unit
   or ``G (B, U)`` per unit, whose surrogate is ``J = -(1/B) sum_b sum_u G_bu log pi(a_bu | s_b)``
   (§3.0; the layer takes the step). A rule whose estimator is not a score-function estimate
   overrides :meth:`Rule.policy_grad`, the gradient ``dJ/dz`` the step backpropagates, instead;
3. :meth:`Rule.after_step` — what it learns after the step (the baseline).

Routing follows from the class: a rule that overrides :meth:`message` sends feedback (so the layer
below listens to it); :meth:`needs_reward` says whether its layer takes the broadcast reward.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from async_coagents.core.baselines import EmaBaseline, NoBaseline, StateBaseline
from async_coagents.core.critics import ActionValueCritic
from async_coagents.core.optim import Optimizer
from async_coagents.errors import CheckpointError, ProtocolError


class Step:
    """One batch of a layer, as its rule sees it.

    ``state`` ``s_i`` ``(B, n_in)``; ``out`` ``phi(a_i)`` ``(B, U)``; ``dist`` and ``action`` the
    (pre-update) policy and the sampled action; ``reward`` ``r (B,)`` (``None`` for a layer that
    does not take it); ``feedback`` the message of the layer above (``None`` for a layer that does
    not listen); ``unit`` the unit family and ``dtype`` the layer's; ``applied`` the batches the
    layer learnt from before this one; ``policy`` the layer's policy network (its parameters are
    the pre-step ones until the step, §10); ``mask`` the units that sampled and learn (§2.3,
    ``None`` = all).
    """

    __slots__ = ("action", "applied", "dist", "dtype", "feedback", "mask", "out", "policy",
                 "reward", "state", "unit")

    def __init__(self, state, out, dist, action, reward, feedback, unit, dtype, applied,
                 policy=None, mask=None) -> None:
        self.state, self.out, self.dist, self.action = state, out, dist, action
        self.reward, self.feedback = reward, feedback
        self.unit, self.dtype, self.applied = unit, dtype, applied
        self.policy, self.mask = policy, mask

    def greedy_out(self) -> np.ndarray:
        """``phi(g(s))``: the layer's greedy action under the policy that sampled the batch."""
        return self.unit.transition(self.unit.greedy(self.dist), self.dtype)


@dataclass(frozen=True)
class RuleSettings:
    """What the network builder tells a rule about its layer and the spec's rule options."""

    n_state: int  # width of the layer's input s_i
    n_units: int  # units of the layer (the width of phi(a_i))
    dtype: np.dtype
    credits_below: bool  # a coagent layer below listens to this layer's message
    optimizer: Callable[[int, float], Optimizer]  # (size, lr) -> a fresh optimizer of the spec
    lr: float = 2.0 ** -11
    baseline_decay: float = 0.99
    reinforce_updates: int = 0
    critic_layers: int = 1
    critic_units: int = 1024
    critic_lr_ratio: float = 2.0
    critic_rng: Callable[[], np.random.Generator] | None = None  # the critic's init stream
    replicas: int | None = None  # R replicas on a leading axis (core/replicas.py)

    def ema_baseline(self) -> EmaBaseline:
        return EmaBaseline(self.baseline_decay, replicas=self.replicas)

    def state_baseline(self) -> StateBaseline:
        shape = StateBaseline.shape(self.n_state, self.replicas)
        return StateBaseline(self.n_state, self.optimizer(shape, self.lr), self.dtype,
                             self.replicas)

    def critic(self) -> ActionValueCritic:
        return ActionValueCritic(
            self.n_state, self.n_units, self.critic_layers, self.critic_units,
            lambda size: self.optimizer(size, self.lr * self.critic_lr_ratio),
            rng=self.critic_rng(), dtype=self.dtype)


class Rule:
    """A learning rule of one coagent layer (see the module docstring).

    Class attributes a subclass sets: ``name`` (its registry key), ``section`` (of
    ``paper_method.md``), ``summary`` (one line), ``reconstruction`` (§3.9: not in the paper's
    code), ``reinforce_phase`` (takes ``reinforce_updates``), ``broadcasts_advantage`` (the network
    input's ``V(x)`` turns the reward into an advantage before it is broadcast, §3.4).
    ``target_policy`` states which downstream action a critic rule's message evaluates
    (``"sampled"`` §3.6 or ``"greedy"`` §3.7); the check suite holds :meth:`message` to it.
    """

    name: ClassVar[str] = ""
    section: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    reconstruction: ClassVar[bool] = False
    reinforce_phase: ClassVar[bool] = False
    broadcasts_advantage: ClassVar[bool] = False
    target_policy: ClassVar[str | None] = None
    message_after_step: ClassVar[bool] = False  # the message reports what the step changed
    # its layer may hold its output where it does not fire (core/firing.py): the rule's message
    # and step read the layer's sent output, not only its own sampled action
    supports_firing: ClassVar[bool] = True
    sends_feedback: ClassVar[bool] = False  # derived: the class overrides message()

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        cls.sends_feedback = cls.message is not Rule.message

    def __init__(self) -> None:
        self.baseline: NoBaseline | EmaBaseline | StateBaseline = NoBaseline()
        self.critic: ActionValueCritic | None = None

    @classmethod
    def build(cls, settings: RuleSettings) -> Rule:
        """The rule of one layer (the builder's entry point)."""
        return cls()

    @classmethod
    def check_network(cls, spec) -> None:
        """Raise :class:`~async_coagents.errors.ConfigError` when the rule cannot train the
        network ``spec`` (a :class:`~async_coagents.core.network.NetworkSpec`: its unit family,
        its output); every network is fine by default."""
        return None

    # ---- routing ------------------------------------------------------------------------------
    @property
    def sends(self) -> bool:
        """This layer's rule sends a message to the layer below (it has someone to credit): a
        critic rule when its layer has a critic; a rule without a critic overrides this."""
        return type(self).sends_feedback and self.critic is not None

    def needs_reward(self, listens: bool) -> bool:
        """Whether the layer takes the broadcast reward, given that it listens to the layer above."""
        return True

    def message_shape(self, n_units_below: int) -> tuple[int, ...]:
        """Per-example shape of :meth:`message`: ``()`` one scalar per example, ``(n_units_below,)``
        one value per unit of the receiving layer."""
        return ()

    # ---- learning -----------------------------------------------------------------------------
    def returns(self, step: Step) -> np.ndarray:
        """``R (B,)``: the return the layer's signal is built from (before any baseline)."""
        return step.reward

    def message(self, step: Step) -> np.ndarray | None:
        """The message for the layer below, computed before the policy step (§10)."""
        return None

    def signal(self, step: Step) -> np.ndarray:
        """``G (B,)`` or per unit ``G (B, U)`` of the policy step (with the pre-update baseline)."""
        raise NotImplementedError

    def policy_grad(self, step: Step) -> np.ndarray:
        """``dJ/dz (B, U*K)`` of the policy step, zero for the units outside ``step.mask``: the
        score-function estimate of :meth:`signal`,

            dJ/dz_bu = -(G_bu / B) d log pi(a_bu | s_b) / dz_bu   (§3.0).
        """
        g = self.signal(step)
        d = step.unit.score_grad(step.dist, step.action)
        if step.mask is not None:  # (U,), or (R, U) per replica
            per_unit = d.reshape(*step.action.shape, -1)
            per_unit[...] = np.where(step.mask[..., None, :, None], per_unit, 0.0)
        batch = step.action.shape[:-1]  # (B,) or (R, B)
        if g.shape == batch:
            d *= (g * (-1.0 / batch[-1]))[..., None]
        else:  # one return per unit
            if g.shape != step.action.shape:
                raise ProtocolError(f"{type(self).__name__}.signal gave returns of shape "
                                    f"{g.shape}; per unit they are {step.action.shape}")
            per_unit = d.reshape(*g.shape, -1)
            per_unit *= (g * (-1.0 / batch[-1]))[..., None]
        return d

    def after_step(self, step: Step) -> None:
        """Learning after the policy step (the baseline's update)."""
        return None

    # ---- state --------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"baseline": self.baseline.state_dict(),
                "critic": None if self.critic is None else self.critic.state_dict()}

    def load_state_dict(self, state: dict, owner: str = "layer") -> None:
        self.baseline.load_state_dict(state["baseline"])
        if (state["critic"] is None) != (self.critic is None):
            raise CheckpointError(f"{owner}: checkpoint and network disagree on the critic")
        if self.critic is not None:
            self.critic.load_state_dict(state["critic"])
