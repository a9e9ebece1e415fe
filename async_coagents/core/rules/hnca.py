"""Hindsight Network Credit Assignment (Young, "Hindsight Network Credit Assignment: Efficient
Credit Assignment in Networks of Discrete Stochastic Units", AAAI 2022, arXiv:2110.07700), checked
term by term against Young's public code, ``kenjyoung/HNCA_code_supplement``,
``contextual_bandit/HNCA.py`` (Bernoulli hidden layers, a softmax output over the classes,
reward ``1[correct]``, optional running-average baseline).

Every layer of a network of Bernoulli hidden units under a categorical output coagent learns from
the broadcast reward ``R``; the output learns by REINFORCE, and every hidden unit ``j`` is credited
through its immediate children, the layer above ``c``:

    P_v = P(c | h_j = v)         the probability, under the layer above's pre-step policy, of its
                                 sampled action with input j set to v (the others as sampled)
                                 = prod_u pi_u(c_u | s with s_j = v),
    rho_v = P_v / (p_j P_1 + (1 - p_j) P_0),     v in {0, 1},   p_j = pi_j(1) the fire rate,
    estimate_j = (R - b) (rho_1 - rho_0) grad p_j.

``rho_v`` is the importance ratio ``P(h_j = v | c) / pi_j(v)``; the estimate is unbiased, with
less variance than REINFORCE's ``(R - b) grad log pi_j(h_j)``. The layer above sends, per example
and per unit ``j`` of the layer below, ``log P_0`` and ``log P_1`` (message ``(n_units_below,
2)``), computed in :meth:`Hnca.message` before its own step as Young computes ``info`` before
``update``. Young's code sums the per-child log-probabilities in the layer below
(``compute_credit_factor``); here the layer above sums over its own units before it sends, which is
the same sum, and the message does not grow with the width of the layer above.

How Young's terms map onto ours:

* Fire rate. Young's unit is one logit ``l`` with ``p = clip(sigmoid(l), 1e-5, 1 - 1e-5)``; ours
  is a two-logit softmax (§2.1), ``p = softmax(z_0, z_1)_1 = sigmoid(z_1 - z_0)``, so
  ``dp/dz_1 = -dp/dz_0 = p (1 - p)`` and the step on ``z_1`` is Young's step on ``l`` (and the
  step on ``z_0`` its negative: ``l = z_1 - z_0`` moves by twice as much under SGD, and the two
  logits are normalised separately under RMSprop/Adam, as for every rule on these units, §2.1).
  Young clips the fire rate at ``min_denom = 1e-5`` and evaluates ``rho`` and ``p (1 - p)`` at the
  clipped value; we do the same at the same ``1e-5`` (:data:`MIN_FIRE_RATE`), but our units
  sample from the unclipped softmax (a rate below ``1e-5`` stays below it).
* Log epsilon. Our categorical scores use ``log(pi + 1e-5)`` (§2.1); the output layer's REINFORCE
  step keeps that convention (its gradient carries ``pi_a / (pi_a + 1e-5)``; Young's softmax
  gradient is the exact ``e_a - pi``). The counterfactual log-probabilities and ``rho`` are
  likelihood ratios, not scores: no epsilon (Young uses the exact ``log_sigmoid`` /
  ``log_softmax``; so do we, stably, so ``P_v`` never underflows to a zero ratio).
* The counterfactual pre-activations: the layer above is one affine map ``z = s W + c``; setting
  input ``j`` to ``v`` is the rank-1 change ``z + (v - s_j) W[j, :]``, for every ``j`` at once
  (Young: ``cf_diff = theta (1 - 2 i)``, the flip of each input).
* Baseline. Young's ``use_baseline``: ``b`` starts at 0 and ``b <- gamma b + (1 - gamma)
  mean(R)`` after each batch's updates, the same ``b`` for every layer; ``hnca`` keeps exactly
  that schedule (an :class:`~async_coagents.core.baselines.EmaBaseline` started at 0 with decay
  ``network.baseline_decay``; Young's configs use ``gamma = 0.99``, our default), not §3.2's
  schedule (which starts ``b`` at the first batch's mean). ``hnca-plain`` has no baseline (Young
  without ``use_baseline``).
* Reward. Young's ``R = 1[correct]`` is ``network.miss_reward = 0``; the rule takes whatever the
  categorical output's objective pays.
* Asynchrony. With batches in flight a layer's weights may have moved since it sampled a batch;
  the message is then taken at the layer's current pre-step weights (those its own step
  differentiates), and the fire rate ``p_j`` is the one that sampled ``h_j``. With one batch in
  flight both are the pre-update policy, exactly as in Young's code.

Young's ``nonlinear_contextual_bandit/HNCA.py`` differentiates its loss ``-fr (rho_1 - rho_0) R``
through ``rho`` as well; the estimator of the paper and of ``contextual_bandit/HNCA.py`` holds
``rho`` constant, as we do. Young's centred units (``use_centered``: states ``+-1``, used by his
configs) are not offered: our Bernoulli units pass ``{0, 1}`` on, and the layer above's rule does
not know the state values of the layer below (:meth:`Hnca.check_network` asks for
``units = "bernoulli"``).
"""

from __future__ import annotations

import itertools

import numpy as np

from async_coagents.core.baselines import EmaBaseline, NoBaseline
from async_coagents.core.rules.base import RuleSettings, Step
from async_coagents.core.rules.reinforce import GlobalBaseline
from async_coagents.core.units import LOG_EPS
from async_coagents.errors import ConfigError, ProtocolError

#: Young's ``min_denom``: the fire rate is clipped to [1e-5, 1 - 1e-5] in the credit and its
#: gradient (the same value as our log epsilon, :data:`~async_coagents.core.units.LOG_EPS`).
MIN_FIRE_RATE = LOG_EPS


def chosen_log_prob(z: np.ndarray, action: np.ndarray, n_actions: int) -> np.ndarray:
    """``sum_u log softmax(z_u)[a_u]``, the exact log-probability of a layer's action.

    ``z (..., U*K)`` pre-activations — for ``K = 2`` the logit gaps ``z_1 - z_0`` ``(..., U)``
    instead — and ``action (..., U)`` indices (broadcast against ``z``'s leading axes) -> ``(...)``.
    """
    if n_actions == 2:  # log pi(a) = -log(1 + exp(z_other - z_a)), z_other - z_a = (1 - 2a) gap
        return -np.logaddexp(0.0, np.where(action == 1, -z, z)).sum(axis=-1)
    z = z.reshape(*z.shape[:-1], -1, n_actions)
    top = z.max(axis=-1, keepdims=True)
    log_norm = np.log(np.exp(z - top).sum(axis=-1)) + top[..., 0]
    action = np.broadcast_to(action, z.shape[:-1])
    chosen = np.take_along_axis(z, action[..., None], axis=-1)[..., 0]
    return (chosen - log_norm).sum(axis=-1)


def counterfactual_log_probs(step: Step) -> np.ndarray:
    """``log P(c | h_j = v)`` ``(B, J, 2)``: the log-probability of this layer's sampled action
    ``c`` under its policy with input ``j`` (a Bernoulli state in {0, 1}) set to ``v``, every other
    input as sampled, for each of its ``J`` inputs."""
    policy = step.policy
    if len(policy.weights) != 1:
        raise ProtocolError("HNCA's counterfactuals need a policy that is one affine map; this "
                            f"layer's has hidden layers ({policy.sizes})")
    s = step.state
    k = step.unit.n_logits
    z, w = policy(s), policy.weights[0]  # the pre-step pre-activations (B, U*K); W (J, U*K)
    if k == 2:  # only the gaps z_1 - z_0 matter: (B, U) instead of (B, U*2)
        z, w = z[..., 1::2] - z[..., 0::2], w[..., 1::2] - w[..., 0::2]
    actual = chosen_log_prob(z, step.action, k)  # (B,)
    flip = 1.0 - 2.0 * s  # (B, J): (1 - s_j) - s_j, the change of input j when it is flipped
    # rank-1 per j: (B, J, ...); the leading axes are the replicas' (core/replicas.py)
    z_flipped = z[..., None, :] + flip[..., :, None] * w[..., None, :, :]
    flipped = chosen_log_prob(z_flipped, step.action[..., None, :], k)  # (B, J)
    on = s == 1.0
    actual = np.broadcast_to(actual[..., None], flipped.shape)
    return np.stack([np.where(on, flipped, actual), np.where(on, actual, flipped)], axis=-1)


def credit_factor(fire_rate: np.ndarray, message: np.ndarray) -> np.ndarray:
    """``rho_1 - rho_0`` ``(B, J)`` from the fire rates ``p (B, J)`` (clipped as Young clips them)
    and the message ``log P(c | h_j = v)`` ``(B, J, 2)`` of the layer above."""
    log_p0, log_p1 = message[..., 0], message[..., 1]
    log_mix = np.logaddexp(np.log(fire_rate) + log_p1, np.log1p(-fire_rate) + log_p0)
    return np.exp(log_p1 - log_mix) - np.exp(log_p0 - log_mix)  # rho_v = P_v / sum pi(v') P_v'


class Hnca(GlobalBaseline):
    """HNCA (Young 2022, see the module docstring) with Young's running-average baseline:

        output layer:   dJ/dz = -(1/B) (R_b - b) d log(pi(c_b) + 1e-5) / dz    (REINFORCE)
        hidden unit j:  dJ/dz_{b,j,1} = -dJ/dz_{b,j,0}
                          = -(1/B) (R_b - b) (rho_1 - rho_0)_{b,j} p_{b,j} (1 - p_{b,j}),

    ``b`` Young's EMA of the batch-mean reward started at 0; every layer but the bottom one sends
    ``log P(c | h_j = v)`` ``(B, n_units_below, 2)`` to the layer below, before its step.
    """

    name = "hnca"
    section = "Young 2022"
    supports_firing = False  # its message is computed from its own sampled action
    summary = "HNCA: each Bernoulli unit credited by its children's counterfactual probabilities"

    def __init__(self) -> None:
        super().__init__()
        self.credits_below = False

    @classmethod
    def build(cls, settings: RuleSettings) -> Hnca:
        rule = super().build(settings)
        rule.credits_below = settings.credits_below
        return rule

    @staticmethod
    def make_baseline(settings: RuleSettings) -> EmaBaseline | NoBaseline:
        baseline = EmaBaseline(settings.baseline_decay, replicas=settings.replicas)
        # Young: b = 0 before the first batch, then gamma b + (1-gamma) R
        baseline.value = 0.0 if settings.replicas is None else np.zeros(settings.replicas)
        return baseline

    @classmethod
    def check_network(cls, spec) -> None:
        rule = spec.rule
        if spec.units != "bernoulli":
            raise ConfigError(f"rule {rule!r} credits Bernoulli hidden units only; set "
                              f"network.units = \"bernoulli\" (got {spec.units!r})")
        if spec.resolved_output != "categorical":
            raise ConfigError(f"rule {rule!r} needs the categorical output coagent; set "
                              f"network.output = \"categorical\" (got {spec.resolved_output!r})")
        if spec.units_per_agent:
            raise ConfigError(f"units_per_agent: rule {rule!r} cannot split layers into node "
                              "groups (a layer's message needs its whole action and the whole "
                              "action of the layer below)")
        if spec.subset is not None:
            raise ConfigError(f"subset: rule {rule!r} needs every unit to sample (a greedy unit "
                              "has no probability to credit the layer below with)")
        if spec.freeze_at is not None:
            never = float("inf")
            at = [never if f is None else f for f in spec.freeze_at]
            if any(upper < lower for lower, upper in itertools.pairwise(at)):
                raise ConfigError(f"freeze_at {list(spec.freeze_at)}: rule {rule!r} needs every "
                                  "layer to freeze no earlier than the layer below it (a frozen "
                                  "layer acts greedily, so it cannot credit a layer that learns)")

    # ---- routing ------------------------------------------------------------------------------
    @property
    def sends(self) -> bool:
        return self.credits_below  # every layer but the bottom one

    def message_shape(self, n_units_below: int) -> tuple[int, ...]:
        return (n_units_below, 2)  # log P(c | h_j = 0), log P(c | h_j = 1)

    # ---- learning -----------------------------------------------------------------------------
    def message(self, step: Step) -> np.ndarray | None:
        """``log P(c | h_j = v)`` ``(B, n_units_below, 2)`` at the pre-step policy."""
        if not self.credits_below:
            return None
        return counterfactual_log_probs(step)

    def policy_grad(self, step: Step) -> np.ndarray:
        """REINFORCE with ``R - b`` for the output layer (no message from above); the HNCA credit
        of every hidden unit (the class docstring)."""
        if step.feedback is None:
            return super().policy_grad(step)
        g = self.signal(step)  # (B,) R - b
        p = np.clip(step.dist[..., 1], MIN_FIRE_RATE, 1.0 - MIN_FIRE_RATE)
        d1 = credit_factor(p, step.feedback)
        d1 *= p * (1.0 - p)  # dp/dz_1
        d1 *= (g * (-1.0 / g.shape[-1]))[..., None]
        d = np.stack([-d1, d1], axis=-1)  # dp/dz_0 = -dp/dz_1
        if step.mask is not None:
            d = np.where(step.mask[..., None, :, None], d, 0.0)
        return d.reshape(*d.shape[:-2], -1)


class HncaPlain(Hnca):
    """HNCA without a baseline (Young's ``use_baseline = false``): ``R`` in place of ``R - b``."""

    name = "hnca-plain"
    summary = "HNCA without a baseline"

    @staticmethod
    def make_baseline(settings: RuleSettings) -> NoBaseline:
        return NoBaseline()
