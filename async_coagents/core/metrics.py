"""Evaluation: task metrics of greedy predictions and, per hidden layer, the entropy of its units'
policies and its sparsity, measured on the greedy pass (`paper_method.md` §4.2-4.4).

* entropy of unit ``u`` of layer ``i``: the mean over examples of ``-sum_k p log p`` with
  ``p + 1e-9`` (nats); a layer's entropy is the mean over its units;
* sparsity of layer ``i``: the mean over examples and units of the greedy activity — for binary
  units the fraction of units whose greedy output is 1 (lower is sparser), for K actions the greedy
  index divided by K-1 (the paper's code leaves it unnormalised, §9.10), for Gaussian units the
  fraction with a non-zero greedy output.
"""

from __future__ import annotations

import numpy as np


class LayerActivity:
    """Running per-unit entropy and activity sums of one layer over evaluation chunks."""

    def __init__(self) -> None:
        self.n = 0
        self.entropy_sum: np.ndarray | None = None
        self.activity_sum = 0.0
        self.activity_count = 0

    def add(self, unit, dist: np.ndarray, action: np.ndarray) -> None:
        entropy = unit.entropy(dist).sum(axis=0, dtype=np.float64)
        self.entropy_sum = entropy if self.entropy_sum is None else self.entropy_sum + entropy
        activity = unit.activity(action)
        self.activity_sum += float(activity.sum(dtype=np.float64))
        self.activity_count += activity.size
        self.n += len(dist)

    def unit_entropy(self) -> np.ndarray:
        """Mean entropy of each unit over the examples seen, ``(U,)``."""
        return self.entropy_sum / self.n

    def sparsity(self) -> float:
        return self.activity_sum / self.activity_count


def evaluate(network, x: np.ndarray, y: np.ndarray, *, chunk: int = 8192,
             unit_entropy: bool = False) -> dict:
    """Greedy evaluation of ``network`` on ``x (N, d)``, ``y (N,)``, in chunks of ``chunk``.

    Returns the objective's metrics (``accuracy`` and ``ce``, or ``mse``), and per hidden layer
    lists ``entropy`` and ``sparsity`` (and ``unit_entropy``, lists of per-unit values, on request).
    """
    if len(x) == 0:
        raise ValueError("cannot evaluate on an empty set")
    predictions = []
    layers = network.hidden
    meters = [LayerActivity() for _ in layers]
    for start in range(0, len(x), chunk):
        prediction, seen = network.act_with_policies(x[start:start + chunk])
        predictions.append(prediction)
        for meter, layer, (dist, action) in zip(meters, layers, seen, strict=False):
            meter.add(layer.unit, dist, action)
    metrics = network.objective.metrics(np.concatenate(predictions), y)
    metrics["entropy"] = [float(m.unit_entropy().mean()) for m in meters]
    metrics["sparsity"] = [m.sparsity() for m in meters]
    if unit_entropy:
        metrics["unit_entropy"] = [m.unit_entropy().tolist() for m in meters]
    return metrics
