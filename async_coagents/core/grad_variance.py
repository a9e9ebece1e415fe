"""The per-layer gradient-variance training metric (issue 11): how noisy a layer's gradient
estimate is, batch by batch, so that a run shows the variance grow with depth.

A layer whose policy is one affine map ``z = s W + c`` steps on the batch gradient
``grad = sum_b [s_b, 1]^T d_b`` with ``d = dJ/dz (B, U*K)`` (the rule's, which already holds the
``1/B`` of the batch mean). Example ``b``'s own estimate of that gradient is
``g_b = B [s_b, 1]^T d_b`` (their mean is ``grad``), a rank-one matrix whose squared norm is
``|[s_b, 1]|^2 B^2 |d_b|^2``. The trace of their covariance is therefore, without forming any
``g_b``,

    tr Cov = (sum_b |[s_b, 1]|^2 |B d_b|^2 - B |grad|^2) / (B - 1),

the sum over the layer's parameters of the variance of one example's estimate. A batch of one
example has no covariance and is not counted.
"""

from __future__ import annotations

import numpy as np

from async_coagents.core.agent import count


def batch_trace(state: np.ndarray, dz: np.ndarray, grad: np.ndarray) -> float | None:
    """``tr Cov`` of the per-example gradients of one batch: ``state (B, n_in)``, ``dz (B, U*K)``
    and the batch gradient ``grad`` (the layer's flat ``policy.grad``); ``None`` for ``B < 2``.

    >>> s, d = np.array([[1.0], [-1.0]]), np.array([[0.5], [0.5]])
    >>> grad = np.array([(s * d).sum(), d.sum()])  # dJ/dW, dJ/dc
    >>> batch_trace(s, d, grad)  # g_1 = 2 * (0.5, 0.5), g_2 = 2 * (-0.5, 0.5)
    2.0
    """
    b = len(state)
    if b < 2:
        return None
    s2 = np.einsum("bi,bi->b", state, state, dtype=np.float64) + 1.0
    d2 = np.einsum("bk,bk->b", dz, dz, dtype=np.float64)
    g = np.asarray(grad, dtype=np.float64)
    total = b * b * float(s2 @ d2)
    mean2 = float(g @ g)
    return max(total - b * mean2, 0.0) / (b - 1)  # >= 0 but for rounding


class GradientVariance:
    """The mean of :func:`batch_trace` over the batches since the last :meth:`take` (one mean per
    replica with ``replicas``: each replica's batch measured on its own slice, over the batches
    that replica stepped on; ``batches`` is then one count per replica once they differ)."""

    def __init__(self, replicas: int | None = None) -> None:
        self.replicas = replicas
        self.total = 0.0 if replicas is None else np.zeros(replicas)
        self.batches = 0

    def record(self, state: np.ndarray, dz: np.ndarray, grad: np.ndarray,
               where: np.ndarray | None = None) -> None:
        """One batch; with replicas, ``where`` ``(R,)`` names those that stepped (None: all)."""
        if self.replicas is None:
            trace = batch_trace(state, dz, grad)
        else:
            traces = [batch_trace(state[r], dz[r], grad[r]) if where is None or where[r] else 0.0
                      for r in range(self.replicas)]
            trace = None if traces[0] is None else np.array(traces)
        if trace is not None:
            self.total += trace
            self.batches = self.batches + (1 if where is None else where.astype(np.int64))

    def take(self) -> float | np.ndarray | None:
        """The mean trace since the previous call (``None``: no batch measured); starts anew."""
        if not np.any(self.batches):
            return None
        with np.errstate(invalid="ignore"):  # a replica with no batch: NaN, shown as none
            mean = self.total / self.batches
        self.total, self.batches = 0.0 if self.replicas is None else np.zeros(self.replicas), 0
        return mean

    def state_dict(self) -> dict:
        batches = self.batches.copy() if isinstance(self.batches, np.ndarray) else self.batches
        return {"total": self.total if self.replicas is None else self.total.copy(),
                "batches": batches}

    def load_state_dict(self, state: dict | None) -> None:
        """Restore :meth:`state_dict` (``None``: nothing measured yet)."""
        state = state or {"total": 0.0, "batches": 0}
        if self.replicas is None:
            self.total = float(state["total"])
        else:
            self.total = np.broadcast_to(np.asarray(state["total"], np.float64),
                                         (self.replicas,)).copy()
        self.batches = count(state["batches"])
