"""Central finite differences for the gradient tests."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def numeric_grad(f: Callable[[], float], theta: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """d f / d theta by central differences, perturbing ``theta`` in place (restored after)."""
    grad = np.zeros_like(theta, dtype=np.float64)
    flat, gflat = theta.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        up = f()
        flat[i] = old - eps
        down = f()
        flat[i] = old
        gflat[i] = (up - down) / (2 * eps)
    return grad


def assert_grad_close(analytic: np.ndarray, numeric: np.ndarray, rtol: float = 1e-5,
                      atol: float = 1e-8) -> None:
    analytic = np.asarray(analytic, dtype=np.float64)
    assert analytic.shape == numeric.shape
    assert np.abs(numeric).max() > 0, "finite differences are all zero: the check would be vacuous"
    np.testing.assert_allclose(analytic, numeric, rtol=rtol, atol=atol)
