"""REINFORCE with the broadcast reward and its variance-reduction baselines (`paper_method.md`
§3.1-§3.5): every layer's return is the reward ``r``; the rules differ in what they subtract."""

from __future__ import annotations

import numpy as np

from async_coagents.core.rules.base import Rule, RuleSettings, Step


class Reinforce(Rule):
    """§3.1 (Gaussian units §3.3): REINFORCE with the broadcast reward,

        G_{i,b} = r_b.
    """

    name = "reinforce"
    section = "§3.1"
    summary = "REINFORCE with the broadcast reward, G = r"

    def signal(self, step: Step) -> np.ndarray:
        return step.reward  # (3.1) G = r


class GlobalBaseline(Rule):
    """§3.2: REINFORCE minus the global EMA baseline of the batch-mean reward,

        G_{i,b} = r_b - b,   b <- beta b + (1 - beta) mean_b r_b   after the step,

    with no baseline on the first batch (every layer keeps an identical copy of ``b``).
    """

    name = "baseline"
    section = "§3.2"
    summary = "REINFORCE minus the global EMA baseline, G = r - b"

    @classmethod
    def build(cls, settings: RuleSettings) -> GlobalBaseline:
        rule = cls()
        rule.baseline = cls.make_baseline(settings)
        return rule

    @staticmethod
    def make_baseline(settings: RuleSettings):
        return settings.ema_baseline()

    def signal(self, step: Step) -> np.ndarray:
        return self.baseline.advantage(self.returns(step), step.state)  # (3.2) r - b; (3.5) r - V_i(s_i)

    def after_step(self, step: Step) -> None:
        self.baseline.learn(self.returns(step), step.state)  # b <- beta b + (1 - beta) mean(r)


class LayerStateBaseline(GlobalBaseline):
    """§3.5: REINFORCE minus a linear value of the layer's own input,

        G_{i,b} = r_b - V_i(s_{i,b}),   V_i regressed to r (one step on mean_b (V_i - r_b)^2)
        after the policy step.

    Only the baseline differs from §3.2: ``signal`` subtracts it and ``after_step`` regresses it.
    """

    name = "layer-baseline"
    section = "§3.5"
    summary = "REINFORCE minus a linear V_i(s_i) on each layer's input"

    @staticmethod
    def make_baseline(settings: RuleSettings):
        return settings.state_baseline()


class InputStateBaseline(Reinforce):
    """§3.4: REINFORCE minus a linear value of the network input,

        G_{i,b} = r_b - V(x_b),

    formed once by the input-baseline agent (:class:`~async_coagents.core.input_baseline.
    InputBaselineAgent`, the only agent that sees ``x``) and broadcast instead of ``r``; each layer
    takes the broadcast advantage as its return.
    """

    name = "input-baseline"
    section = "§3.4"
    summary = "REINFORCE minus a linear V(x) on the network input, broadcast as the advantage"
    broadcasts_advantage = True

    def signal(self, step: Step) -> np.ndarray:
        return step.reward  # (3.4) G = r - V(x), as broadcast
