"""Per-layer action-value critics (`paper_method.md` §3.6, §3.7) and the §3.9 reconstructions.

Layer ``i`` owns ``Q_i(s_i, a_i)``. On a batch it (1) regresses ``Q_i`` to its target, (2) sends
the layer below ``y_{i-1} = Q_i(s_i, a'_i)`` with the updated critic and the pre-step policy, where
``a'_i`` is the sampled action (on-policy) or the greedy one (off-policy), and (3) takes its policy
step with ``G_i = y_i``, the message of the layer above (the reward for the top coagent layer).
Layer 0 has no one to credit, so it keeps no critic.
"""

from __future__ import annotations

import numpy as np

from async_coagents.core.rules.base import Rule, RuleSettings, Step


class ActorCritic(Rule):
    """§3.6, on-policy bootstrapping (SARSA-like):

        y_{L-1,b} = r_b,   y_{i,b} = Q_{i+1}(a_{i,b}, a_{i+1,b}),   G_{i,b} = y_{i,b},
        Q_i <- one step on mean_b (Q_i(s_{i,b}, a_{i,b}) - y_{i,b})^2.
    """

    name = "ac"
    section = "§3.6"
    summary = "per-layer critics, on-policy: layer i is credited Q_{i+1}(a_i, a_{i+1})"
    target_policy = "sampled"

    @classmethod
    def build(cls, settings: RuleSettings) -> ActorCritic:
        rule = cls()
        if settings.credits_below:  # layer 0's critic would never be read (§3.6)
            rule.critic = settings.critic()
        return rule

    def needs_reward(self, listens: bool) -> bool:
        return not listens  # a layer credited from above ignores the broadcast reward

    def returns(self, step: Step) -> np.ndarray:
        """``y_i``: the message of the layer above, or ``r`` for the top coagent layer."""
        return step.feedback if step.feedback is not None else step.reward

    def critic_target(self, step: Step) -> np.ndarray:
        return self.returns(step)  # bootstrap: Q_i -> y_i

    def evaluation_action(self, step: Step) -> np.ndarray:
        """``phi(a'_i)`` at which the updated critic is evaluated for the layer below."""
        return step.out  # (3.6) a'_i = a_i, the sampled action

    def message(self, step: Step) -> np.ndarray | None:
        if self.critic is None:
            return None
        self.critic.learn(step.state, step.out, self.critic_target(step))  # Q_i -> target
        return self.critic.value(step.state, self.evaluation_action(step))  # y_{i-1} = Q_i(s_i, a'_i)

    def signal(self, step: Step) -> np.ndarray:
        return self.returns(step)  # (3.6) G_i = y_i, no baseline


class OffPolicyActorCritic(ActorCritic):
    """§3.7, the paper's off-policy method: §3.6 with the greedy downstream action,

        y_{i,b} = Q_{i+1}(a_{i,b}, g_{i+1}(a_{i,b})),   g(s)_u = argmax_k pi_u(k | s),

    so the critic chain values the network acting greedily after layer i, as it is evaluated.
    """

    name = "ac-offpolicy"
    section = "§3.7"
    summary = ("per-layer critics, off-policy: layer i is credited "
               "Q_{i+1}(a_i, greedy_{i+1}(a_i))")
    target_policy = "greedy"

    def evaluation_action(self, step: Step) -> np.ndarray:
        return step.greedy_out()  # (3.7) a'_i = g_i(s_i), the greedy action


class MonteCarloActorCritic(ActorCritic):
    """§3.9 RECONSTRUCTION (``coagent_ac_mc``): critics regressed to the Monte-Carlo return,

        Q_i <- one step on mean_b (Q_i(s_{i,b}, a_{i,b}) - r_b)^2,   G_i = y_i as in §3.6.
    """

    name = "ac-mc"
    section = "§3.9"
    summary = ("RECONSTRUCTION: critics regressed to the Monte-Carlo return r, layer i credited "
               "Q_{i+1}(a_i, a_{i+1})")
    reconstruction = True

    def needs_reward(self, listens: bool) -> bool:
        return True

    def critic_target(self, step: Step) -> np.ndarray:
        return step.reward  # Q_i -> r


class _ReinforcePhase:
    """A REINFORCE phase before the critic signal (§3.9): ``G_i = r`` for the first
    ``reinforce_updates`` batches while the critics learn, then the parent rule's signal."""

    reinforce_phase = True
    reconstruction = True
    reinforce_updates = 0

    @classmethod
    def build(cls, settings: RuleSettings):
        rule = super().build(settings)
        rule.reinforce_updates = int(settings.reinforce_updates)
        return rule

    def needs_reward(self, listens: bool) -> bool:
        return self.reinforce_updates > 0 or super().needs_reward(listens)

    def signal(self, step: Step) -> np.ndarray:
        if step.applied < self.reinforce_updates:
            return step.reward  # G_i = r during the REINFORCE phase
        return super().signal(step)


class ActorCriticAfterReinforce(_ReinforcePhase, ActorCritic):
    """§3.9 RECONSTRUCTION (``coagent_ac_reinforce``): ``G_i = r`` for the first
    ``reinforce_updates`` batches while on-policy critics learn, then ``G_i = y_i`` (§3.6)."""

    name = "ac-reinforce"
    section = "§3.9"
    summary = ("RECONSTRUCTION: REINFORCE for the first reinforce_updates batches while on-policy "
               "critics learn, then the ac signal")


class OffPolicyActorCriticAfterReinforce(_ReinforcePhase, OffPolicyActorCritic):
    """§3.9 RECONSTRUCTION (``coagent_ac_offpolicy_reinforce``): ``G_i = r`` for the first
    ``reinforce_updates`` batches while off-policy critics learn, then ``G_i = y_i`` (§3.7)."""

    name = "ac-offpolicy-reinforce"
    section = "§3.9"
    summary = ("RECONSTRUCTION: REINFORCE for the first reinforce_updates batches while off-policy "
               "critics learn, then the ac-offpolicy signal")


class AdvantageOffPolicyActorCritic(OffPolicyActorCritic):
    """EXTENSION (ours, not the paper's): §3.7 with each layer's own greedy value subtracted, an
    action-independent baseline that centres the critic's credit,

        G_{i,b} = y_{i,b} - Q_i(s_{i,b}, g_i(s_{i,b})),

    with ``y_i`` the message of the layer above (the reward for the top coagent layer) and
    ``Q_i(s_i, g_i(s_i))`` layer ``i``'s own critic at its greedy action under the policy that
    sampled the batch, read before the critic learns from the batch: the baseline depends on the
    state alone, so ``E_a[grad log pi(a|s) b(s)] = 0`` leaves the expected step of §3.7 unchanged
    while the variance of ``G`` falls where ``Q_i`` tracks ``y_i``. Every layer keeps a critic:
    layer 0's credits no one and is its baseline only. The critic step and the message sent down
    are §3.7's (the updated critic at the greedy action of the pre-step policy), taken after the
    policy step so that the policy step reads the critic before it moves.
    """

    name = "ac-offpolicy-advantage"
    section = "extension"
    summary = ("EXTENSION (ours): the ac-offpolicy credit minus the layer's own greedy value, "
               "G_i = y_i - Q_i(s_i, greedy_i(s_i))")
    message_after_step = True  # the policy step's baseline is the critic before its step

    def __init__(self) -> None:
        super().__init__()
        self.credits_below = False

    @classmethod
    def build(cls, settings: RuleSettings) -> AdvantageOffPolicyActorCritic:
        rule = cls()
        rule.critic = settings.critic()  # layer 0's too: its baseline
        rule.credits_below = bool(settings.credits_below)
        return rule

    @property
    def sends(self) -> bool:
        return self.credits_below

    def message(self, step: Step) -> np.ndarray | None:
        self.critic.learn(step.state, step.out, self.critic_target(step))  # Q_i -> y_i
        if not self.credits_below:
            return None
        return self.critic.value(step.state, self.evaluation_action(step))  # (3.7)

    def signal(self, step: Step) -> np.ndarray:
        return self.returns(step) - self.critic.value(step.state, step.greedy_out())
