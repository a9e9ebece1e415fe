"""Evaluation: task metrics of greedy predictions and, per hidden layer, the entropy of its units'
policies and its sparsity, measured on the greedy pass (`paper_method.md` §4.2-4.4).

* entropy of unit ``u`` of layer ``i``: the mean over examples of ``-sum_k p log p`` with
  ``p + 1e-9`` (nats); a layer's entropy is the mean over its units;
* sparsity of layer ``i``: the mean over examples and units of the greedy activity — for binary
  units the fraction of units whose greedy output is 1 (lower is sparser), for K actions the greedy
  index divided by K-1 (the paper's code leaves it unnormalised, §9.10), for Gaussian units the
  fraction with a non-zero greedy output.

A layer reports sums (:class:`LayerActivity`) so that chunks — and remote layers — combine cheaply.
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
        """The sums for one batch of policies ``dist`` and greedy actions ``action (B, U)``."""
        activity = unit.activity(action)
        return cls(len(dist), unit.entropy(dist).sum(axis=0, dtype=np.float64),
                   float(activity.sum(dtype=np.float64)), activity.size)

    def merge(self, other: LayerActivity) -> LayerActivity:
        if self.entropy_sum is None:
            return other
        return LayerActivity(self.n + other.n, self.entropy_sum + other.entropy_sum,
                             self.activity_sum + other.activity_sum,
                             self.activity_count + other.activity_count)

    def unit_entropy(self) -> np.ndarray:
        """Mean entropy of each unit over the examples seen, ``(U,)``."""
        return self.entropy_sum / self.n

    def sparsity(self) -> float:
        return self.activity_sum / self.activity_count

    def as_tuple(self) -> tuple:
        return self.n, self.entropy_sum, self.activity_sum, self.activity_count


Measure = Callable[[np.ndarray], tuple[np.ndarray, list[LayerActivity]]]


#: The per-hidden-layer lists of a greedy evaluation (one value per layer).
LAYER_METRICS = ("entropy", "entropy_std", "sparsity")


def evaluate_with(measure: Measure, objective, x: np.ndarray, y: np.ndarray, *, chunk: int = 8192,
                  unit_entropy: bool = False) -> dict:
    """Greedy evaluation through ``measure(x) -> (prediction, activity per hidden layer)``.

    Returns the objective's metrics (``accuracy`` and ``ce``, or ``mse``), and per hidden layer
    lists ``entropy`` (mean over units, §4.3), ``entropy_std`` (its spread over units, which the
    paper's entropy plots shade) and ``sparsity`` (§4.4); per-unit lists ``unit_entropy`` on
    request.
    """
    if len(x) == 0:
        raise ValueError("cannot evaluate on an empty set")
    predictions, meters = [], None
    for start in range(0, len(x), chunk):
        prediction, activity = measure(x[start:start + chunk])
        predictions.append(prediction)
        meters = activity if meters is None else [
            m.merge(a) for m, a in zip(meters, activity, strict=True)]
    metrics = objective.metrics(np.concatenate(predictions), y)
    entropies = [m.unit_entropy() for m in meters]
    metrics["entropy"] = [float(h.mean()) for h in entropies]
    metrics["entropy_std"] = [float(h.std()) for h in entropies]
    metrics["sparsity"] = [m.sparsity() for m in meters]
    if unit_entropy:
        metrics["unit_entropy"] = [h.tolist() for h in entropies]
    return metrics


def evaluate(network, x: np.ndarray, y: np.ndarray, *, chunk: int = 8192,
             unit_entropy: bool = False) -> dict:
    """Greedy evaluation of an in-process ``network`` on ``x (N, d)``, ``y (N,)``."""
    return evaluate_with(network.measure, network.objective, x, y, chunk=chunk,
                         unit_entropy=unit_entropy)
