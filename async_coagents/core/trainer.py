"""The synchronous reference trainer: it only sequences the layer agents' own methods, in the
reference order of `paper_method.md` §10, and is the oracle the asynchronous backends are held to.

One update (:func:`train_step`): every layer samples bottom-up -> the objective turns the
prediction into per-example rewards -> the reward (or, with the input-state baseline, the
advantage) goes to every layer top-down, and each critic layer hands its feedback to the layer
below before that layer learns. Each layer's own order (critic step, feedback with the updated
critic and the pre-step policy, policy step, baseline update) lives in the layer.

Backprop pre-training (§5.4) is a phase of :class:`SyncTrainer`: a backprop MLP of the same widths
learns from the first ``pretrain_updates`` batches, its weights are copied into the coagent network,
and every optimizer is replaced by plain SGD with ``lr / 128``.
"""

from __future__ import annotations

import math

import numpy as np

from async_coagents.core.metrics import evaluate
from async_coagents.core.network import Network
from async_coagents.core.optim import SGD
from async_coagents.errors import ConfigError, ProtocolError


def train_step(network: Network, sid: int, x: np.ndarray, labels: np.ndarray) -> float:
    """One synchronous update on batch ``sid``; returns the batch-mean loss ``-mean(r)``."""
    objective = network.objective
    labels = objective.check_target(labels, len(x))
    if network.input_baseline is not None:
        network.input_baseline.forward(sid, x)
    h = x
    for layer in network.layers:
        h = layer.forward(sid, h)
    r = objective.reward(h, labels)
    loss = -float(r.sum()) / r.size
    if not math.isfinite(loss):
        for layer in network.layers:
            layer.forget(sid)
        if network.input_baseline is not None:
            network.input_baseline.forget(sid)
        raise ProtocolError(
            f"batch {sid}: the loss is not finite ({loss}); the network has diverged — lower the "
            "learning rate"
        )
    signal = r if network.input_baseline is None else network.input_baseline.reward(sid, r)
    message = None
    for layer in reversed(network.layers):  # top-down (§10)
        out = None
        if layer.needs_reward:
            out = layer.reward(sid, signal, labels if layer.needs_labels else None)
        if layer.listens_to_feedback:
            out = layer.feedback(sid, message)
        message = out
    return loss


def copy_pretrained(network: Network, twin: Network) -> None:
    """Copy the backprop twin's affine maps into ``network``'s layers, in order (§5.4, §2.6)."""
    src = [(w, b) for layer in twin.layers for w, b in zip(layer.net.weights, layer.net.biases,
                                                          strict=True)]
    dst = [(w, b) for layer in network.layers for w, b in zip(layer.net.weights,
                                                              layer.net.biases, strict=True)]
    if [w.shape for w, _ in src] != [w.shape for w, _ in dst]:
        raise ConfigError(
            "backprop pre-training needs a network whose layers line up with a plain MLP of the "
            "same widths (Gaussian units, §5.4); shapes "
            f"{[w.shape for w, _ in src]} vs {[w.shape for w, _ in dst]}"
        )
    for (w_src, b_src), (w_dst, b_dst) in zip(src, dst, strict=True):
        w_dst[...] = w_src
        b_dst[...] = b_src


def switch_to_sgd(network: Network, lr_divisor: float = 128.0) -> None:
    """Replace every layer's policy optimizer by plain SGD with ``lr / lr_divisor`` (§5.4)."""
    lr = network.spec.lr / lr_divisor
    for layer in network.layers:
        layer.set_optimizer(SGD(layer.net.params.size, lr, layer.dtype))


class SyncTrainer:
    """Runs :func:`train_step` over a stream of batches, with optional backprop pre-training.

    ``pretrain`` is the backprop twin (``build_network(spec.pretraining_twin(), seed)``) that learns
    from the first ``pretrain_updates`` batches; the switch happens before batch
    ``pretrain_updates``. With ``pretrain is network`` (a backprop learner) only the optimizer
    switches, as in the paper's like-for-like baseline.
    """

    def __init__(self, network: Network, *, pretrain: Network | None = None,
                 pretrain_updates: int = 0, lr_divisor: float = 128.0) -> None:
        if (pretrain is None) != (pretrain_updates == 0):
            raise ConfigError("pre-training needs both a backprop twin and pretrain_updates > 0")
        self.network = network
        self.pretrain = pretrain
        self.pretrain_updates = pretrain_updates
        self.lr_divisor = lr_divisor
        self.updates = 0

    @property
    def active(self) -> Network:
        """The network that is learning now (the twin during pre-training)."""
        if self.pretrain is not None and self.updates < self.pretrain_updates:
            return self.pretrain
        return self.network

    def step(self, sid: int, x: np.ndarray, y: np.ndarray) -> float:
        if self.pretrain is not None and self.updates == self.pretrain_updates:
            if self.pretrain is not self.network:
                copy_pretrained(self.network, self.pretrain)
            switch_to_sgd(self.network, self.lr_divisor)
        loss = train_step(self.active, sid, x, y)
        self.updates += 1
        return loss

    def evaluate(self, x: np.ndarray, y: np.ndarray, **kwargs) -> dict:
        return evaluate(self.active, x, y, **kwargs)
