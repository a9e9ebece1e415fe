"""What the network is asked to do: the per-example reward ``r = -loss`` broadcast to every agent
(`paper_method.md` §1.1), the supervised gradient of a read-out layer (§3.0) and the task metrics.

Classification: ``r = log softmax(o)_y = -CE(o, y)``; by a sampled class (a categorical output
coagent): ``r = 1`` when right, ``miss_reward`` when wrong. Regression: ``r = -(y_hat - y)^2``.
Predictions are ``(B, C)`` logits or ``(B, 1)``; targets are ``(B,)`` class indices or values.
With replicas every array has a leading ``R`` axis (``core/replicas.py``): the per-example reward
is computed on the trailing axes, the batch means and metrics per replica.
"""

from __future__ import annotations

import numpy as np

from async_coagents.errors import ConfigError, ProtocolError


def log_softmax(o: np.ndarray) -> np.ndarray:
    """Row-wise ``log softmax``, ``(..., B, C)``."""
    z = o - o.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _at_label(values: np.ndarray, y: np.ndarray) -> tuple:
    """The index of each example's label in ``values (..., B, C)`` (labels ``(B,)`` shared by
    every replica, as in evaluation, or ``(..., B)``)."""
    if values.ndim == 2:
        return np.arange(len(y)), y
    y = np.broadcast_to(y, values.shape[:-1])
    return (*(np.arange(n).reshape([-1 if i == axis else 1 for i in range(y.ndim)])
              for axis, n in enumerate(y.shape)), y)


def _shape(batch: int | tuple[int, ...]) -> tuple[int, ...]:
    return (batch,) if isinstance(batch, int) else tuple(batch)


def per_replica_mean(values: np.ndarray) -> float | np.ndarray:
    """The mean over examples (the last axis): a float, or one per replica ``(R,)``."""
    if values.ndim == 1:
        return float(np.mean(values))
    return np.mean(values, axis=-1)


class Classification:
    """Cross-entropy over ``n_classes`` logits."""

    kind = "classification"

    def __init__(self, n_classes: int) -> None:
        self.n_classes = n_classes

    def check_target(self, y: np.ndarray, batch: int | tuple[int, ...]) -> np.ndarray:
        """``y`` checked: ``batch`` integer labels (``batch`` a shape ``(R, B)`` for replicas)."""
        y = np.asarray(y)
        if y.shape != _shape(batch) or y.dtype.kind not in "iu":
            raise ProtocolError(
                f"classification targets must be {batch} integer labels, got dtype {y.dtype} "
                f"shape {y.shape}"
            )
        if y.size and (y.min() < 0 or y.max() >= self.n_classes):
            raise ProtocolError(f"labels must lie in [0, {self.n_classes}), got {y.min()}..{y.max()}")
        return y

    def reward(self, prediction: np.ndarray, y: np.ndarray) -> np.ndarray:
        """``r_b = log softmax(o_b)_{y_b}``, ``(B,)``."""
        return log_softmax(prediction)[_at_label(prediction, y)]

    def loss_grad(self, prediction: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Gradient of the batch-mean CE: ``(softmax(o) - e_y) / B``, ``(B, C)`` (§3.0)."""
        g = np.exp(log_softmax(prediction))
        g[_at_label(g, y)] -= 1.0
        g /= y.shape[-1]
        return g

    def hits(self, prediction: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Whether each example's greedy class is its label, ``(..., B)`` bool."""
        return prediction.argmax(axis=-1) == y

    def metrics(self, prediction: np.ndarray, y: np.ndarray) -> dict:
        """Accuracy and mean cross-entropy of greedy predictions (per replica with replicas)."""
        return {
            "accuracy": per_replica_mean(self.hits(prediction, y)),
            "ce": -per_replica_mean(self.reward(prediction, y)),
        }


class SampledClassification(Classification):
    """Classification by a stochastic output coagent: the prediction is the one-hot code of the
    sampled (greedy in evaluation) class, rewarded ``1`` when it is the label and ``miss_reward``
    otherwise (Chung's multiplexer: ``+1/-1``; Young's bandit MNIST: ``1/0``)."""

    def __init__(self, n_classes: int, miss_reward: float = -1.0) -> None:
        super().__init__(n_classes)
        self.miss_reward = float(miss_reward)

    def reward(self, prediction: np.ndarray, y: np.ndarray) -> np.ndarray:
        """``r_b = 1`` if the class of ``prediction_b`` is ``y_b``, else ``miss_reward``, ``(B,)``."""
        return np.where(self.hits(prediction, y), 1.0, self.miss_reward).astype(prediction.dtype)

    def loss_grad(self, prediction: np.ndarray, y: np.ndarray) -> np.ndarray:
        raise ProtocolError("a sampled class has no supervised gradient: the categorical output "
                            "learns from its reward")

    def metrics(self, prediction: np.ndarray, y: np.ndarray) -> dict:
        """Accuracy and mean reward of greedy predictions."""
        return {"accuracy": per_replica_mean(self.hits(prediction, y)),
                "reward": per_replica_mean(self.reward(prediction, y))}


class Regression:
    """Squared error of one scalar output."""

    kind = "regression"
    n_classes = None

    def check_target(self, y: np.ndarray, batch: int | tuple[int, ...]) -> np.ndarray:
        """``y`` checked: ``batch`` float targets (``batch`` a shape ``(R, B)`` for replicas)."""
        y = np.asarray(y)
        if y.shape != _shape(batch) or y.dtype.kind != "f":
            raise ProtocolError(
                f"regression targets must be {batch} floats, got dtype {y.dtype} shape {y.shape}"
            )
        return y

    def reward(self, prediction: np.ndarray, y: np.ndarray) -> np.ndarray:
        """``r_b = -(y_hat_b - y_b)^2``, ``(B,)`` (targets are per example: no broadcasting, §9.9)."""
        d = prediction[..., 0] - y
        return -(d * d)

    def loss_grad(self, prediction: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Gradient of the batch-mean MSE: ``2 (y_hat - y) / B``, ``(B, 1)`` (§3.0)."""
        return (2.0 / y.shape[-1]) * (prediction - y[..., None])

    def metrics(self, prediction: np.ndarray, y: np.ndarray) -> dict:
        """Mean squared error of greedy predictions (per replica with replicas)."""
        return {"mse": -per_replica_mean(self.reward(prediction, y))}


def make_objective(task: str, n_outputs: int, output: str = "readout",
                   miss_reward: float = -1.0) -> Classification | Regression:
    """``classification`` with ``n_outputs`` classes (rewarded by the log-likelihood of the
    logits, or by hit/miss for a ``categorical`` output coagent), or ``regression`` with one
    output."""
    if output == "categorical" and task != "classification":
        raise ConfigError(f"a categorical output classifies; the task is {task!r}")
    if task == "classification":
        if n_outputs < 2:
            raise ConfigError(f"classification needs at least 2 classes, got {n_outputs}")
        if output == "categorical":
            return SampledClassification(n_outputs, miss_reward)
        return Classification(n_outputs)
    if task == "regression":
        if n_outputs != 1:
            raise ConfigError(f"regression has exactly one output, got {n_outputs}")
        return Regression()
    raise ConfigError(f"task must be 'classification' or 'regression', got {task!r}")
