"""Evaluation: task metrics of greedy predictions and, per hidden layer, the entropy of its units'
policies and its sparsity, measured on the greedy pass (`paper_method.md` §4.2-4.4).

* entropy of unit ``u`` of layer ``i``: the mean over examples of ``-sum_k p log p`` with
  ``p + 1e-9`` (nats); a layer's entropy is the mean over its units;
* sparsity of layer ``i``: the mean over examples and units of the greedy activity — for binary
  units the fraction of units whose greedy output is 1 (lower is sparser), for K actions the greedy
  index divided by K-1 (the paper's code leaves it unnormalised, §9.10), for Gaussian units the
  fraction with a non-zero greedy output.

A layer reports sums (:class:`LayerActivity`) so that chunks — and remote layers — combine cheaply.
With replicas (``core/replicas.py``) the sums are per replica and :func:`evaluate_with` returns one
metrics dict per replica, each computed on its replica's slice as a separate run computes it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


class LayerActivity:
    """Per-unit entropy sums and the activity sum of one layer over the examples seen."""

    def __init__(self, n: int = 0, entropy_sum: np.ndarray | None = None,
                 activity_sum: float = 0.0, activity_count: int = 0) -> None:
        self.n = n
        self.entropy_sum = entropy_sum
        self.activity_sum = activity_sum
        self.activity_count = activity_count

    @classmethod
    def of(cls, unit, dist: np.ndarray, action: np.ndarray) -> LayerActivity:
        """The sums for one batch of policies ``dist`` and greedy actions ``action (B, U)`` (or
        ``(R, B, U)``: sums per replica)."""
        activity = unit.activity(action)
        constant = getattr(unit, "constant_entropy", None)
        if constant is not None and dist.dtype == np.float32:
            # Gaussian units: B copies of one float32 value, whose float64 sum in any order is
            # exactly B h (24 significant bits times B < 2^29 fit float64's 53)
            each = float(dist.dtype.type(constant)) * dist.shape[-2]
            entropy = np.full(dist.shape[:-2] + dist.shape[-1:], each)
        else:
            entropy = unit.entropy(dist).sum(axis=-2, dtype=np.float64)
        if action.ndim == 2:
            return cls(len(dist), entropy, float(_total(activity)), activity.size)
        per_replica = activity.reshape(len(activity), -1)
        return cls(action.shape[-2], entropy, _total(per_replica, axis=-1),
                   per_replica.shape[-1])

    def merge(self, other: LayerActivity) -> LayerActivity:
        if self.entropy_sum is None:
            return other
        return LayerActivity(self.n + other.n, self.entropy_sum + other.entropy_sum,
                             self.activity_sum + other.activity_sum,
                             self.activity_count + other.activity_count)

    def unit_entropy(self) -> np.ndarray:
        """Mean entropy of each unit over the examples seen, ``(U,)`` (``(R, U)``)."""
        return self.entropy_sum / self.n

    @classmethod
    def stack(cls, blocks: list[LayerActivity]) -> LayerActivity:
        """The sums of a replicated layer from those of its blocks of replicas, in order."""
        return cls(blocks[0].n, np.concatenate([b.entropy_sum for b in blocks]),
                   np.concatenate([np.atleast_1d(b.activity_sum) for b in blocks]),
                   blocks[0].activity_count)

    def replica(self, r: int) -> LayerActivity:
        """Replica ``r``'s sums, as its separate run's layer reports them."""
        return LayerActivity(self.n, self.entropy_sum[r], float(self.activity_sum[r]),
                             self.activity_count)

    def sparsity(self) -> float:
        return self.activity_sum / self.activity_count

    def as_tuple(self) -> tuple:
        return self.n, self.entropy_sum, self.activity_sum, self.activity_count


def _total(activity: np.ndarray, axis: int | None = None):
    """The float64 sum of ``activity`` (over ``axis``); a bool array's by counting, which is the
    same number (a count below 2^53 is exact in float64) without a float64 pass."""
    if activity.dtype == np.bool_:
        return np.asarray(np.count_nonzero(activity, axis=axis), dtype=np.float64)
    return activity.sum(axis=axis, dtype=np.float64)


Measure = Callable[[np.ndarray], tuple[np.ndarray, list[LayerActivity]]]


#: The per-hidden-layer lists of a greedy evaluation (one value per layer).
LAYER_METRICS = ("entropy", "entropy_std", "sparsity")


def evaluate_with(measure: Measure, objective, x: np.ndarray, y: np.ndarray, *, chunk: int = 8192,
                  unit_entropy: bool = False, replicas: int | None = None) -> dict | list[dict]:
    """Greedy evaluation through ``measure(x) -> (prediction, activity per hidden layer)``.

    Returns the objective's metrics (``accuracy`` and ``ce``, or ``mse``), and per hidden layer
    lists ``entropy`` (mean over units, §4.3), ``entropy_std`` (its spread over units, which the
    paper's entropy plots shade) and ``sparsity`` (§4.4); per-unit lists ``unit_entropy`` on
    request. With ``replicas`` R: a list of R such dicts; ``x`` is ``(N, d)`` shared by every
    replica or ``(R, N, d)`` one set per replica (``y`` likewise).
    """
    n = x.shape[-2] if x.ndim > 1 else len(x)
    if n == 0:
        raise ValueError("cannot evaluate on an empty set")
    predictions, meters = [], None
    for start in range(0, n, chunk):
        prediction, activity = measure(x[..., start:start + chunk, :])
        predictions.append(prediction)
        meters = activity if meters is None else [
            m.merge(a) for m, a in zip(meters, activity, strict=True)]
    prediction = np.concatenate(predictions, axis=-2)
    if replicas is None:
        return _metrics(objective, prediction, y, meters, unit_entropy)
    return [_metrics(objective, prediction[r], y if y.ndim == 1 else y[r],
                     [m.replica(r) for m in meters], unit_entropy) for r in range(replicas)]


def _metrics(objective, prediction: np.ndarray, y: np.ndarray, meters: list[LayerActivity],
             unit_entropy: bool) -> dict:
    metrics = objective.metrics(prediction, y)
    entropies = [m.unit_entropy() for m in meters]
    metrics["entropy"] = [float(h.mean()) for h in entropies]
    metrics["entropy_std"] = [float(h.std()) for h in entropies]
    metrics["sparsity"] = [m.sparsity() for m in meters]
    if unit_entropy:
        metrics["unit_entropy"] = [h.tolist() for h in entropies]
    return metrics


def evaluate(network, x: np.ndarray, y: np.ndarray, *, chunk: int = 8192,
             unit_entropy: bool = False) -> dict:
    """Greedy evaluation of an in-process ``network`` on ``x (N, d)``, ``y (N,)`` (one dict per
    replica for a replicated network)."""
    return evaluate_with(network.measure, network.objective, x, y, chunk=chunk,
                         unit_entropy=unit_entropy, replicas=network.replicas)
