"""Backprop pre-training (§5.4): the hand-over from the backprop twin to the coagent network.

A backprop MLP of the same widths (:meth:`NetworkSpec.pretraining_twin`) learns from the first
``run.pretrain_updates`` batches; then its affine maps are copied into the coagent network's
layers, in order, and every layer's policy optimizer is replaced by plain SGD with ``lr / 128``.
The pre-training itself is a phase of the run on the run's own backend
(:mod:`async_coagents.experiment.run`); this module holds only the hand-over.
"""

from __future__ import annotations

from async_coagents.core.network import Network
from async_coagents.core.optim import SGD
from async_coagents.errors import ConfigError


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
    for index, layer in enumerate(network.layers):
        lr = network.spec.lr_of(index) / lr_divisor
        layer.set_optimizer(SGD(layer.net.params.shape, lr, layer.dtype))


