"""Staleness correction: truncated importance ratios for the stale updates of a coagent layer.

A layer that learns from batch ``sid`` after other updates (a window, a reward delay) learns from
actions its policy sampled under older parameters. With ``network.importance_cap`` = rho-bar each
unit's term of the policy step is weighted by

    rho_bu = min(rho-bar, pi_now(a_bu | s_b) / pi_sampled(a_bu | s_b))

— the truncated importance weight of V-trace (Espeholt et al. 2018, "IMPALA", eq. 1, rho-bar).
``pi`` is the unit's policy as its score function uses it (``log(pi + 1e-5)`` for discrete units,
§2.1; the Gaussian density), ``pi_sampled`` its log-probability recorded at the forward (it stays
with the batch in flight, ``PendingBatch.logp``) and ``pi_now`` the layer's policy at the update.

**Per unit, not per layer**: every unit is a coagent with its own parameters (its rows of the
layer's weights), and its local policy-gradient term is ``G_b d log pi_u(a_bu | s_b)``: the ratio
that reweights that term for the change of *its* policy is its own action's. The product over the
layer's units would be the right weight for an agent whose action is the whole vector, but its
variance grows exponentially with the width (64 units) and no unit's estimator needs it. As in
V-trace the score is not re-evaluated: it stays the sampling policy's (§10), and the rule's
baseline and critic learn uncorrected. With one batch in flight and no delay the ratio is exactly
1 and the step is bit for bit the uncorrected one.
"""

from __future__ import annotations

import numpy as np

from async_coagents.core.arrays import owned
from async_coagents.errors import CheckpointError


class ImportanceStats:
    """Per interval (between two evaluations): the mean ratio (before truncation) and the
    fraction of terms truncated at the cap, one figure per replica (``lead`` = ``(R,)``)."""

    def __init__(self, lead: tuple[int, ...]) -> None:
        self.lead = lead
        self._reset()

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(owned(state))  # counts and holds are updated in place (Ray)

    def _reset(self) -> None:
        self.total = np.zeros(self.lead)  # sum of the ratios
        self.truncated = np.zeros(self.lead, dtype=np.int64)
        self.terms = np.zeros(self.lead, dtype=np.int64)

    def record(self, rho: np.ndarray, cap: float, fired: np.ndarray | None) -> None:
        """Count the ratios ``rho (*lead, B, U)``; ``fired (*lead, B)`` masks the streams that
        did not fire (they take no update, so no ratio)."""
        counted = np.ones(rho.shape, dtype=bool) if fired is None else np.broadcast_to(
            fired[..., None], rho.shape)
        axes = (-2, -1)
        self.total += np.where(counted, rho, 0.0).sum(axis=axes, dtype=np.float64)
        self.truncated += ((rho > cap) & counted).sum(axis=axes)
        self.terms += counted.sum(axis=axes)

    def take(self) -> tuple[float | np.ndarray | None, float | np.ndarray | None]:
        """Mean ratio and fraction truncated since the last call, starting a new interval:
        floats, or ``(R,)`` arrays with replicas (NaN for a replica without terms); ``None,
        None`` when no term was counted at all."""
        if not self.terms.any():
            return None, None
        with np.errstate(invalid="ignore", divide="ignore"):
            mean, fraction = self.total / self.terms, self.truncated / self.terms
        self._reset()
        if not self.lead:
            return float(mean), float(fraction)
        return mean, fraction

    def state_dict(self) -> dict:
        if not self.lead:
            return {"total": float(self.total), "truncated": int(self.truncated),
                    "terms": int(self.terms)}
        return {"total": self.total.copy(), "truncated": self.truncated.copy(),
                "terms": self.terms.copy()}

    def load_state_dict(self, state: dict | None, owner: str) -> None:
        try:
            loaded = {key: np.broadcast_to(np.asarray(state[key], dtype=dtype), self.lead).copy()
                      for key, dtype in (("total", np.float64), ("truncated", np.int64),
                                         ("terms", np.int64))}
        except (TypeError, KeyError, ValueError):
            raise CheckpointError(f"{owner}: importance statistics must hold total, truncated "
                                  f"and terms per replica, got {state!r:.80}") from None
        self.total, self.truncated, self.terms = (loaded["total"], loaded["truncated"],
                                                  loaded["terms"])


def truncated_ratio(logp_now: np.ndarray, logp_sampled: np.ndarray, cap: float
                    ) -> tuple[np.ndarray, np.ndarray]:
    """``(rho, min(rho, cap))`` of the per-unit log-probabilities ``(*lead, B, U)``."""
    rho = np.exp(logp_now - logp_sampled)
    return rho, np.minimum(rho, cap)
