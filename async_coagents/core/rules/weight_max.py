"""Weight Maximization (Chung, "Learning by Competition of Self-Interested Reinforcement Learning
Agents", AAAI 2022, arXiv:2010.09770), checked term by term against Chung's public code,
``stephen-chung-mh/weight_max`` (``weightmax.py``: ``Network.learn`` and
``eq_prop_layer.learn_trace``; ``main.py`` and ``config/config_mp.ini``: the multiplexer).

The output coagent learns by REINFORCE from the broadcast reward; every hidden unit ``j`` is
rewarded instead by the change its layer above's step makes to the squared L2 norm of ``j``'s
outgoing weights (row ``j`` of the layer above's weight matrix ``W``, every column of it):

    Delta_{b,j,c} = s_{b,j} G_{b,u(c)} d log pi_{u(c)}(a_{b,u(c)} | s_b) / dz_{b,c}
                    the per-example REINFORCE ascent direction of weight W[j, c] of the layer
                    above (column c belongs to its unit u(c)), un-scaled by the learning rate,
    R_{b,j} = sum_c d||W_j||^2 [Delta_{b,j}] = 2 sum_c W'[j, c] Delta_{b,j,c},

with ``W'`` the layer above's weights *after* its step, ``s_{b,j}`` the state unit ``j`` passed up
and ``G`` the layer above's own return (the reward for the output, its ``R`` for a hidden layer).
Every hidden layer's step is then REINFORCE with one return per unit, ``G_{b,j} = R_{b,j}``. The
layer above sends ``R (B, n_units_below)`` after its step (:attr:`message_after_step`); the layers
below take no broadcast reward.

Chung's code, and how each term maps onto ours:

* The message. ``Network.learn`` walks the layers top-down; each calls ``learn_trace(reward)``,
  which forms the per-example update ``w_update = w_trace * reward`` (``w_trace`` = input times
  ``(value - mean) / temp``, the score of the sampled action: an ascent direction, per example,
  before the batch average, the optimizer and the learning rate) and then steps its weights in
  place; then ``ch_w = p |w|^(p-1) sign(w) w_update`` with ``w`` the *updated* weights and
  ``p = weight_max = 2`` (so ``2 w w_update``), summed over the outgoing weights, is the reward of
  the layer below. We send exactly that: ``Delta = -B dJ/dz`` outer ``s`` (our ``dJ/dz`` of §3.0
  carries the batch's ``-1/B``), at the post-step weights, un-scaled by ``lr``.
* Output units. Chung's multiplexer output is one sigmoid unit (``L_BINARY_Z``, action ``+-1``)
  and his ``L_DISCRETE`` softmax fixes its last logit at 0 (K - 1 weight columns); our output and
  categorical units have K logits, one weight column each. Per example and unit the K columns'
  updates sum to zero (``sum_k d log pi / dz_k = 0``, scaled by one common ``pi_a / (pi_a +
  1e-5)``), so ``sum_{c=1..K} W[j, c] Delta_c = sum_{c<K} (W[j, c] - W[j, K]) Delta_c``: our sum
  over K columns is Chung's sum over his K - 1 columns with his weight replaced by our weight's
  difference to the dropped logit's column (for a Bernoulli unit, ``w = W[j, 1] - W[j, 0]``). The
  message has Chung's form; the parametrisation it is measured in is ours.
* Hidden units. Chung's hidden units are ``L_BINARY_Z``: Bernoulli with state ``{0, 1}`` — ours
  (§2.1); a unit that passed 0 changes none of its outgoing weights and gets ``R = 0``. His
  multiplexer inputs are ``+-1``, like our multiplexer's.
* Gaussian units. Chung's real-valued units (``LS_REAL`` with ``var > 0``: ``N(f(pot), var)``)
  take the same message with their own score; ours sample the pre-activation and pass ``phi(a)``
  on (§2.5), so ``s_{b,j} = phi(a_{b,j})`` and the score is ``(a - mu) / sigma^2``. Gaussian
  hidden layers under a Gaussian output (regression) are trained the same way.
* Baseline. ``main.py`` fixes ``baseline = False`` for every experiment, the multiplexer
  included: the output learns from the raw reward ``+-1`` (``network.miss_reward = -1``), the
  hidden units from ``R`` with nothing subtracted; so does this rule. (Chung's ``baseline`` branch
  rescales ``ch_w`` by ``1 - mean / value`` of the layer below, which divides by the value 0 of a
  ``{0, 1}`` unit; it is not offered.)
* What Chung's multiplexer config sets that a network spec here sets otherwise: Adam (0.9, 0.999,
  eps 1e-8), temperature 1, batch 1, hidden layers ``[64, 32]`` and one learning rate *per layer*
  ``[0.01, 0.001, 0.0001]`` (bottom to top); our spec has one ``network.lr`` for every layer and
  torch's initialisation rather than Glorot's.
* Not taken: ``w_reg``, ``h_reg``, ``entro_reg`` (0 in the multiplexer config), eligibility traces
  (``actor_lambda = 0`` there), ``weight_max = p`` other than 2 (the rule is the squared L2 norm).
* Unbiased Weight Maximization (Chung, "Unbiased Weight Maximization", arXiv:2307.13270, 2023) is
  left out: the repository's ``unbiased`` path (``eq_prop_layer.record_trace``) is switched off
  in every config (``main.py`` fixes ``unbiased = False``), its categorical branch floor-divides
  (``// self._b``) and it divides by the weights themselves, and the report's estimator could not
  be read here to check it against; a reconstruction would rest on neither.

Asynchrony: the message is taken at the layer's weights right after its own step, as in Chung's
code; with batches in flight those weights have also moved for other batches. A layer that takes
no step on a batch (frozen, §2.4) changes no weight and sends zeros. Units outside a subset
(§2.3) take no step either: their columns add nothing to the sum. Under a clock rate
(``update_every`` n > 1) a batch's update is accumulated and the weights move every n batches;
the message is the batch's own update ``Delta`` measured at the weights as they stand after it.
"""

from __future__ import annotations

import numpy as np

from async_coagents.core.rules.base import Rule, RuleSettings, Step
from async_coagents.errors import ConfigError

#: The norm of Chung's rule (``weight_max = 2`` in every config): the squared L2 norm.
NORM_POWER = 2


class WeightMax(Rule):
    """Weight Maximization (Chung, AAAI 2022): the output learns REINFORCE from the reward,
    ``G_b = r_b``; hidden unit ``j`` learns REINFORCE from the change of its outgoing squared L2
    norm that the layer above's per-example update makes at the updated weights,

        G_{b,j} = R_{b,j} = 2 sum_c W'[j, c] s_{b,j} G^{above}_{b,u(c)} dlog pi_{u(c)} / dz_{b,c}

    (see the module docstring for every term and how it maps onto Chung's code).
    """

    name = "weight-max"
    section = "Chung 2022"
    supports_firing = False  # its message reports the step of its own sampled actions
    summary = ("Weight Maximization: hidden units rewarded by the change of their outgoing "
               "squared weight norm, the output by the reward")
    message_after_step = True  # R is the change the layer's step made

    def __init__(self) -> None:
        super().__init__()
        self.credits_below = False
        self._stepped: Step | None = None  # the batch whose step was just taken (transient)

    @classmethod
    def build(cls, settings: RuleSettings) -> WeightMax:
        rule = cls()
        rule.credits_below = bool(settings.credits_below)
        return rule

    @classmethod
    def check_network(cls, spec) -> None:
        output = spec.resolved_output
        if output not in ("categorical", "gaussian"):
            raise ConfigError(
                f"rule 'weight-max' needs a stochastic output coagent (network.output = "
                f"\"categorical\" or \"gaussian\"), got output {output!r}: the output learns "
                "REINFORCE from the reward, and the change its step makes to its weights is what "
                "rewards the layer below; a supervised read-out has no such step")
        if spec.partition and "d" in spec.partition:
            raise ConfigError(
                f"rule 'weight-max' cannot train partition {spec.partition!r}: a deterministic "
                "layer between two stochastic ones leaves a unit's outgoing weights inside the "
                "group above, whose per-example update needs backprop through it")
        if spec.units_per_agent:
            raise ConfigError(
                "rule 'weight-max' cannot split layers into node groups (units_per_agent = "
                f"{spec.units_per_agent}): the reward of a unit below sums over the outgoing "
                "weights of every unit of the layer above")

    # ---- routing ------------------------------------------------------------------------------
    @property
    def sends(self) -> bool:
        return self.credits_below

    def needs_reward(self, listens: bool) -> bool:
        return not listens  # hidden layers learn from the message of the layer above only

    def message_shape(self, n_units_below: int) -> tuple[int, ...]:
        return (n_units_below,)  # one R per unit of the layer below

    # ---- learning -----------------------------------------------------------------------------
    def returns(self, step: Step) -> np.ndarray:
        """``G``: the reward ``r (B,)`` for the output, ``R (B, U)`` from the layer above for a
        hidden layer."""
        return step.feedback if step.feedback is not None else step.reward

    def signal(self, step: Step) -> np.ndarray:
        return self.returns(step)  # no baseline (Chung's main.py: baseline = False)

    def after_step(self, step: Step) -> None:
        self._stepped = step

    def message(self, step: Step) -> np.ndarray | None:
        """``R (B, n_below)``: each unit below's outgoing squared-norm change, at the post-step
        weights (called after the step)."""
        stepped, self._stepped = self._stepped is step, None
        if not self.credits_below:
            return None
        if not stepped:  # a frozen layer (§2.4) took no step and changed no weight
            return np.zeros(step.state.shape, dtype=step.dtype)
        ascent = self.policy_grad(step)  # dJ/dz (B, U*K) = -(1/B) G dlog pi/dz, 0 off the subset
        ascent *= -ascent.shape[-2]  # the per-example ascent direction on z, Chung's w_update / s
        weights = step.policy.weights[0]  # W' (n_below, U*K): the outgoing weights, post-step
        change = ascent @ weights.swapaxes(-1, -2)  # sum_c W'[j, c] G dlog pi / dz_c (B, n_below)
        change *= NORM_POWER * step.state  # p |w|^(p-1) sign(w) = 2 w; Delta_{b,j,c} has s_{b,j}
        return change
