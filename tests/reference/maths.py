"""The formulas the monolith is made of, each written from ``paper_method.md`` (section cited), as
plain functions on arrays: the unit families and their score functions (§2.1, §2.2, §2.5, §3.0),
rewards (§1.1), torch's optimizers (§6.1), and the small networks of partition groups (§2.6) and
critics (§3.6). Nothing here comes from the package; the one thing both share, how the sampling
draws are taken from a layer's random stream, is in ``monolith.draw_*``.

Shapes: ``B`` examples, ``U`` units, ``K`` actions per unit; affine maps are ``s @ W + c`` with
``W`` of shape ``(inputs, outputs)``.
"""

from __future__ import annotations

import math

import numpy as np

#: §2.1: every categorical score is taken of log(pi_a + 1e-5).
LOG_EPS = 1e-5


def softmax(z: np.ndarray) -> np.ndarray:
    """Softmax over the last axis."""
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def log_softmax(o: np.ndarray) -> np.ndarray:
    """Log-softmax over the last axis."""
    z = o - o.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


# ---- categorical units: Bernoulli is K = 2 (§2.1), K actions in general (§2.2) -------------------
def categorical_policy(z: np.ndarray, k: int) -> np.ndarray:
    """``pi (B, U, K)``: unit ``u`` owns logits ``uK .. uK+K-1`` (row-major reshape)."""
    return softmax(z.reshape(len(z), -1, k))


def categorical_state(a: np.ndarray, k: int, normalisation: str, dtype) -> np.ndarray:
    """The state passed on for action index ``a`` (§2.2 ``mode_normalization`` 1, 2, 3)."""
    a = a.astype(dtype)
    if normalisation == "index":  # mode 1: h = a
        return a
    if normalisation == "unit":  # mode 2: h = a / (K - 1); for Bernoulli units h = a
        return a / (k - 1)
    if normalisation == "symmetric":  # mode 3: h = 2a / (K - 1) - 1
        return 2 * a / (k - 1) - 1
    raise ValueError(normalisation)


def categorical_score(p: np.ndarray, a: np.ndarray) -> np.ndarray:
    """d log(pi_a + 1e-5) / dz_k = pi_a / (pi_a + 1e-5) * (1[k = a] - pi_k), as ``(B, U*K)`` (§3.0)."""
    k = p.shape[2]
    p_a = np.take_along_axis(p, a[:, :, None], axis=2)
    chosen = np.arange(k) == a[:, :, None]
    return (p_a / (p_a + LOG_EPS) * (chosen - p)).reshape(len(p), -1)


# ---- Gaussian units (§2.5) ---------------------------------------------------------------------
def gaussian_score(mu: np.ndarray, a: np.ndarray, sigma: float) -> np.ndarray:
    """d log N(a; mu, sigma^2) / d mu = (a - mu) / sigma^2, on the pre-activation (§2.5, §3.0)."""
    return (a - mu) / (sigma * sigma)


def activation(a: np.ndarray, name: str) -> np.ndarray:
    """The state a Gaussian unit passes on: ``phi(a)``, identity or ReLU (§2.5)."""
    return np.maximum(a, 0) if name == "relu" else a


# ---- rewards (§1.1) and the supervised read-out (§3.0) ----------------------------------------
def reward(prediction: np.ndarray, y: np.ndarray, task: str) -> np.ndarray:
    """``r = log softmax(o)_y`` (classification) or ``-(y_hat - y)^2`` (regression), ``(B,)``."""
    if task == "classification":
        return log_softmax(prediction)[np.arange(len(y)), y]
    return -((prediction[:, 0] - y) ** 2)


def readout_grad(o: np.ndarray, y: np.ndarray, task: str) -> np.ndarray:
    """d(batch-mean CE)/do = (softmax(o) - e_y) / B; d(batch-mean MSE)/dy_hat = 2 (y_hat - y) / B."""
    if task == "classification":
        g = softmax(o)
        g[np.arange(len(y)), y] -= 1
        return g / len(y)
    return 2 * (o - y[:, None]) / len(y)


# ---- small networks: partition groups (§2.6) and critics (§3.6) -------------------------------
def mlp(params: list[list[np.ndarray]], x: np.ndarray, act: str) -> tuple[np.ndarray, list]:
    """``[[W, c], ...]`` with activation ``act`` between the affine maps and a linear output;
    returns the output and what :func:`mlp_grads` needs (each map's input and pre-activation)."""
    inputs, pre = [], []
    h = x
    for i, (w, c) in enumerate(params):
        inputs.append(h)
        z = h @ w + c
        pre.append(z)
        h = activation(z, act) if i < len(params) - 1 else z
    return h, [inputs, pre]


def mlp_grads(params: list[list[np.ndarray]], cache: list, d_out: np.ndarray,
              act: str) -> list[list[np.ndarray]]:
    """Back-propagate ``dJ/d output`` through :func:`mlp`: ``[[dJ/dW, dJ/dc], ...]``."""
    inputs, pre = cache
    d, grads = d_out, []
    for i in range(len(params) - 1, -1, -1):
        grads.append([inputs[i].T @ d, d.sum(axis=0)])
        if i:
            d = d @ params[i][0].T
            if act == "relu":
                d = d * (pre[i - 1] > 0)
    return grads[::-1]


def relu_net(params: list[list[np.ndarray]], x: np.ndarray) -> np.ndarray:
    """A critic: ReLU hidden layers, a linear scalar output; returns ``(B,)``."""
    return mlp(params, x, "relu")[0][:, 0]


def relu_net_mse_grads(params: list[list[np.ndarray]], x: np.ndarray,
                       target: np.ndarray) -> list[list[np.ndarray]]:
    """Gradients of ``(1/B) sum_b (Q(x_b) - target_b)^2`` for every ``[W, c]`` of a critic."""
    q, cache = mlp(params, x, "relu")
    return mlp_grads(params, cache, 2 * (q - target[:, None]) / len(target), "relu")


def linear_mse_grads(v: np.ndarray, s: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Gradient of ``(1/B) sum_b (V(s_b) - target_b)^2`` for ``V(s) = s v + v_0``,
    ``v = [v, v_0]`` flat (§3.4, §3.5)."""
    e = 2 * (s @ v[:-1] + v[-1] - target) / len(target)
    return np.concatenate([s.T @ e, [e.sum()]])


# ---- optimizers with torch's formulas (§6.1) --------------------------------------------------
class SGD:
    """theta <- theta - lr g."""

    def __init__(self, lr: float, **_: float) -> None:
        self.lr = lr

    def step(self, key, theta: np.ndarray, g: np.ndarray) -> None:
        theta -= self.lr * g


class RMSprop:
    """v <- beta v + (1 - beta) g^2, v_0 = 0; theta <- theta - lr g / (sqrt(v) + eps)."""

    def __init__(self, lr: float, beta: float = 0.99, eps: float = 1e-8, **_: float) -> None:
        self.lr, self.beta, self.eps = lr, beta, eps
        self.v: dict = {}

    def step(self, key, theta: np.ndarray, g: np.ndarray) -> None:
        v = self.beta * self.v.get(key, 0) + (1 - self.beta) * g * g
        self.v[key] = v
        theta -= self.lr * g / (np.sqrt(v) + self.eps)


class Adam:
    """m <- b1 m + (1 - b1) g; v <- b2 v + (1 - b2) g^2; at step t
    theta <- theta - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps) (torch's form)."""

    def __init__(self, lr: float, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                 **_: float) -> None:
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        self.m: dict = {}
        self.v: dict = {}
        self.t: dict = {}

    def step(self, key, theta: np.ndarray, g: np.ndarray) -> None:
        t = self.t[key] = self.t.get(key, 0) + 1
        m = self.m[key] = self.beta1 * self.m.get(key, 0) + (1 - self.beta1) * g
        v = self.v[key] = self.beta2 * self.v.get(key, 0) + (1 - self.beta2) * g * g
        theta -= (self.lr / (1 - self.beta1 ** t)
                  * m / (np.sqrt(v) / math.sqrt(1 - self.beta2 ** t) + self.eps))


OPTIMIZERS = {"sgd": SGD, "rmsprop": RMSprop, "adam": Adam}
