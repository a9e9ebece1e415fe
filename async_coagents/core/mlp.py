"""Affine/activation stacks with all parameters in one flat vector, and their backward pass.

Every parameterised map of the project is an :class:`MLP`: a coagent layer's policy (one affine
map, or a small deterministic network inside a partition group, §2.6), critics (§3.6), linear
state baselines (§3.4, §3.5) and the comparison learners (backprop, straight-through, §2.7-2.8).
Weights and biases are views into ``params`` and their gradients views into ``grad``, so an
optimizer steps a whole network with a handful of numpy calls.

Initialisation is torch's ``nn.Linear`` default, as in the paper's code (§2): every weight and
bias i.i.d. ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``.

With ``replicas`` R (``core/replicas.py``) every array has a leading replica axis: ``params``
``(R, P)``, ``W_l`` ``(R, n, m)``, inputs ``(R, B, n)`` (or one ``(B, n)`` shared by all, as in
evaluation); the arithmetic is on the trailing axes, so replica r computes what one network does.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence

import numpy as np

from async_coagents.core.replicas import leading, replicas_of
from async_coagents.errors import CheckpointError, ConfigError

HIDDEN_ACTIVATIONS = ("identity", "relu", "tanh", "sigmoid", "straight_through")


def relu_inplace(z: np.ndarray) -> np.ndarray:
    """``np.maximum(z, 0.0)`` written into ``z`` (bit-identical to it: same ufunc, same dtype)."""
    return np.maximum(z, 0.0, out=z)


def affine_product(h: np.ndarray, w: np.ndarray, b_row: np.ndarray) -> np.ndarray:
    """``h @ w`` for the evaluation path, a fresh array. With one input column (a 1-D task's
    first layer) every entry is one product, which BLAS rounds as a plain multiplication does, so
    it is computed as one (a broadcast, without BLAS's outer-product overhead; the same numbers).
    The one difference is a product of exactly -0, which BLAS's zeroed accumulator makes +0: the
    bias added next hides it unless a bias is itself -0, and then the product stays BLAS's."""
    if w.shape[-2] == 1 and not np.any((b_row == 0) & np.signbit(b_row)):
        return h * w
    return h @ w


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free logistic


class MLP:
    """``f(x) = A_n(act(... act(A_1 x)))`` with affine maps ``A_l(h) = h W_l + b_l``.

    ``sizes = [d_in, h_1, ..., d_out]``; the output is linear. ``W_l`` has shape
    ``(sizes[l], sizes[l+1])``. With ``activation="straight_through"`` the hidden units are the
    stochastic binary units of §2.7: the training forward samples ``1[u < sigmoid(z)]`` with the
    ``rng`` it is given, the greedy forward (no rng) thresholds at 0.5, and the backward pass
    multiplies the upstream gradient by the sampled bit.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        activation: str = "relu",
        *,
        rng: np.random.Generator | None = None,
        dtype: np.dtype | str = np.float64,
        zero_init: bool = False,
        replicas: int | None = None,
    ) -> None:
        sizes = [int(s) for s in sizes]
        if len(sizes) < 2 or min(sizes) < 1:
            raise ConfigError(f"an MLP needs at least two positive sizes, got {sizes!r}")
        if activation not in HIDDEN_ACTIVATIONS:
            raise ConfigError(
                f"hidden activation must be one of {HIDDEN_ACTIVATIONS}, got {activation!r}"
            )
        self.sizes = sizes
        self.activation = activation
        self.dtype = np.dtype(dtype)
        self.replicas = replicas if replicas is not None else replicas_of(rng)
        shapes = list(itertools.pairwise(sizes))
        self.params = np.zeros((*leading(self.replicas), sum(i * o + o for i, o in shapes)),
                               dtype=self.dtype)
        self.grad = np.zeros_like(self.params)
        self.weights, self.biases = self._views(self.params, shapes)
        self.grad_weights, self.grad_biases = self._views(self.grad, shapes)
        self._bias_rows = [b[..., None, :] for b in self.biases]  # b broadcast over the batch
        if not zero_init:
            if rng is None:
                raise ConfigError("an MLP that is not zero-initialised needs an init rng")
            for w, b in zip(self.weights, self.biases, strict=True):
                bound = 1.0 / np.sqrt(w.shape[-2])  # fan_in
                w[...] = rng.uniform(-bound, bound, size=w.shape)
                b[...] = rng.uniform(-bound, bound, size=b.shape)

    @staticmethod
    def _views(flat: np.ndarray, shapes: list[tuple[int, int]]):
        weights, biases, offset = [], [], 0
        lead = flat.shape[:-1]
        for n_in, n_out in shapes:
            weights.append(flat[..., offset:offset + n_in * n_out].reshape(*lead, n_in, n_out))
            offset += n_in * n_out
            biases.append(flat[..., offset:offset + n_out])
            offset += n_out
        for view in weights:  # views, never copies: the optimizer steps params in place
            assert np.shares_memory(view, flat)
        return weights, biases

    @property
    def n_in(self) -> int:
        return self.sizes[0]

    @property
    def n_out(self) -> int:
        return self.sizes[-1]

    @property
    def stochastic(self) -> bool:
        """True if the training forward samples (straight-through units) and needs an rng."""
        return self.activation == "straight_through" and len(self.sizes) > 2

    def forward(
        self, x: np.ndarray, rng: np.random.Generator | None = None
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """``x (..., B, d_in)`` -> ``(out (..., B, d_out), cache)``; ``cache`` feeds :meth:`backward`.

        ``rng`` is used only by straight-through units: given, they sample (training); absent,
        they act greedily (evaluation).
        """
        last = len(self.weights) - 1
        cache = []
        h = x
        for layer, (w, b) in enumerate(zip(self.weights, self._bias_rows, strict=True)):
            cache.append(h)
            z = h @ w
            z += b
            if layer == last:
                return z, cache
            h, saved = self._activate(z, rng)
            cache.append(saved)
        raise AssertionError("unreachable")

    def _activate(self, z: np.ndarray, rng: np.random.Generator | None):
        """Hidden activation; returns the output and what its derivative needs."""
        act = self.activation
        if act == "relu":
            return np.maximum(z, 0.0), z > 0
        if act == "tanh":
            h = np.tanh(z)
            return h, h
        if act == "sigmoid":
            h = _sigmoid(z)
            return h, h
        if act == "straight_through":  # §2.7
            p = _sigmoid(z)
            if rng is None:
                h = (p > 0.5).astype(z.dtype)
            else:
                h = (rng.random(p.shape, dtype=z.dtype) < p).astype(z.dtype)
            return h, h
        return z, None

    def _activation_backward(self, d: np.ndarray, saved) -> np.ndarray:
        act = self.activation
        if act == "relu":
            return d * saved
        if act == "tanh":
            return d * (1.0 - saved * saved)
        if act == "sigmoid":
            return d * saved * (1.0 - saved)
        if act == "straight_through":  # dL/dz := dL/dh * h, the sampled bit (§2.7)
            return d * saved
        return d

    def backward(
        self, cache: list[np.ndarray], d_out: np.ndarray, *, input_grad: bool = False
    ) -> np.ndarray | None:
        """Write ``dJ/dparams`` into :attr:`grad` (overwriting it) from ``d_out = dJ/d out``.

        Returns ``dJ/dx`` when ``input_grad`` is set, else ``None``.
        """
        d = d_out
        for layer in range(len(self.weights) - 1, -1, -1):
            h = cache[2 * layer]
            np.matmul(h.swapaxes(-1, -2), d, out=self.grad_weights[layer])
            np.sum(d, axis=-2, out=self.grad_biases[layer])
            if layer == 0 and not input_grad:
                return None
            d = d @ self.weights[layer].swapaxes(-1, -2)
            if layer > 0:
                d = self._activation_backward(d, cache[2 * layer - 1])
        return d

    def __getstate__(self) -> dict:
        # weights and biases are views of params: rebuild them after unpickling instead of
        # letting pickle turn them into separate arrays (grad is scratch space)
        return {"sizes": self.sizes, "activation": self.activation, "dtype": self.dtype.str,
                "params": self.params, "replicas": self.replicas}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["sizes"], state["activation"], dtype=state["dtype"], zero_init=True,
                      replicas=state.get("replicas"))
        self.params[...] = state["params"]

    def load_params(self, params: np.ndarray, what: str = "network") -> None:
        """Copy a saved flat parameter vector in, checking its size (checkpoints, pre-training)."""
        params = np.asarray(params)
        if params.shape != self.params.shape:
            raise CheckpointError(
                f"{what} has {params.size} parameters in the checkpoint, the network has "
                f"{self.params.size} ({self.sizes})"
            )
        if params.dtype != self.params.dtype:
            raise CheckpointError(f"{what} has {params.dtype} parameters in the checkpoint, the "
                                  f"network uses {self.params.dtype}")
        self.params[...] = params

    def replica_block(self, rows: slice) -> MLP:
        """The replicas ``rows`` of a replicated MLP as an MLP of their own that shares their
        parameters (views): a forward through it computes, per replica, exactly what the whole
        MLP computes for that replica (one matrix product per replica slice either way)."""
        block = copy.copy(self)
        block.params = self.params[rows]
        block.weights = [w[rows] for w in self.weights]
        block.biases = [b[rows] for b in self.biases]
        block._bias_rows = [b[rows] for b in self._bias_rows]
        block.replicas = block.params.shape[0]
        return block

    def __call__(self, x: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """The output only (greedy for straight-through units unless ``rng`` is given).

        Evaluation path: no backward cache and, for ReLU, no ``z > 0`` mask; the ReLU runs in
        place on the fresh ``h @ w`` temporary. ``np.maximum(z, 0.0, out=z)`` is the same ufunc
        as :meth:`forward`'s ``np.maximum(z, 0.0)``, so every number (NaN, -0.0 included) is
        bit-identical; only the allocation and the mask pass are saved."""
        if self.activation != "relu":
            return self.forward(x, rng)[0]
        last = len(self.weights) - 1
        h = x
        for layer, (w, b) in enumerate(zip(self.weights, self._bias_rows, strict=True)):
            z = affine_product(h, w, b)
            z += b
            if layer == last:
                return z
            h = relu_inplace(z)
        raise AssertionError("unreachable")
