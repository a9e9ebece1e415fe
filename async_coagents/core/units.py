"""Unit families: how a coagent layer turns its pre-activations into a policy, samples an action,
acts greedily, passes a state to the next layer and scores its own action.

Two families cover every unit type of the paper (`paper_method.md` §2):

* :class:`Categorical` — K logits per unit, softmax policy (§2.2). Bernoulli units (§2.1) are the
  two-logit case ``Categorical(2, "unit")``: an over-parameterised Bernoulli whose state is the
  action itself, exactly as in the paper's code.
* :class:`Gaussian` — a mean per unit, fixed sigma on the pre-activation, identity or ReLU after (§2.5).

Shapes: ``B`` examples, ``U`` units, ``K`` actions. Pre-activations ``z`` are ``(B, U*K)`` with unit
``u`` owning columns ``u*K .. u*K+K-1`` (the row-major reshape of the paper's code). Every method
works on the trailing axes, so replicas (a leading ``R`` axis, ``core/replicas.py``) pass through.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np

from async_coagents.core.normals import SAMPLERS, standard_normal
from async_coagents.errors import ConfigError

#: The epsilon inside the log of every categorical score, log(pi_a + 1e-5) (§2.1).
LOG_EPS = 1e-5
#: The epsilon added to probabilities before the entropy is measured (§4.3).
ENTROPY_EPS = 1e-9

NORMALISATIONS = ("index", "unit", "symmetric")


class UnitFamily(Protocol):
    """What a coagent layer needs from its units. ``dist`` is the family's policy parameters."""

    n_logits: int

    def policy(self, z: np.ndarray) -> np.ndarray: ...
    def sample(self, dist: np.ndarray, rng: np.random.Generator) -> np.ndarray: ...
    def greedy(self, dist: np.ndarray) -> np.ndarray: ...
    def transition(self, action: np.ndarray) -> np.ndarray: ...
    def transition_owned(self, action: np.ndarray) -> np.ndarray: ...
    def log_prob(self, dist: np.ndarray, action: np.ndarray) -> np.ndarray: ...
    def score_grad(self, dist: np.ndarray, action: np.ndarray) -> np.ndarray: ...
    def entropy(self, dist: np.ndarray) -> np.ndarray: ...
    def activity(self, action: np.ndarray) -> np.ndarray: ...
    def width(self, n_units: int) -> int: ...


class Categorical:
    """K-action softmax units (§2.1 for K = 2, §2.2 in general).

    ``normalisation`` is the state passed on for action index ``a`` (§2.2 ``mode_normalization``):
    ``"index"`` -> ``a`` (mode 1), ``"unit"`` -> ``a/(K-1)`` (mode 2), ``"symmetric"`` ->
    ``2a/(K-1) - 1`` (mode 3, used by the paper's representation experiments).
    """

    def __init__(self, n_actions: int = 2, normalisation: str = "unit") -> None:
        if not isinstance(n_actions, int) or n_actions < 2:
            raise ConfigError(f"n_actions must be an integer >= 2, got {n_actions!r}")
        if normalisation not in NORMALISATIONS:
            raise ConfigError(
                f"normalisation must be one of {NORMALISATIONS}, got {normalisation!r}"
            )
        self.n_actions = n_actions
        self.n_logits = n_actions
        self.normalisation = normalisation

    def __repr__(self) -> str:
        return f"Categorical(n_actions={self.n_actions}, normalisation={self.normalisation!r})"

    def policy(self, z: np.ndarray) -> np.ndarray:
        """Softmax over each unit's K logits: ``z (B, U*K)`` -> probabilities ``(B, U, K)``."""
        z = z.reshape(*z.shape[:-1], -1, self.n_actions)
        if self.n_actions == 2:
            # the same numbers as the general case (max and sum of two are exact and in the same
            # order), without numpy's slow reductions over an axis of length 2
            e = np.exp(z - np.maximum(z[..., 0], z[..., 1])[..., None])
            e /= (e[..., 0] + e[..., 1])[..., None]
            return e
        e = np.exp(z - z.max(axis=-1, keepdims=True))
        e /= e.sum(axis=-1, keepdims=True)
        return e

    def sample(self, dist: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One action index per unit, ``(B, U)`` int: inverse-CDF with one uniform per unit."""
        u = rng.random(dist.shape[:-1], dtype=dist.dtype)
        if self.n_actions == 2:
            return (u >= dist[..., 0]).astype(np.intp)
        cdf = np.cumsum(dist[..., :-1], axis=-1)
        return (cdf <= u[..., None]).sum(axis=-1)

    def greedy(self, dist: np.ndarray) -> np.ndarray:
        """The per-unit argmax action ``(B, U)`` (exact ties have probability zero)."""
        if self.n_actions == 2:
            return (dist[..., 1] > dist[..., 0]).astype(np.intp)  # argmax: the first on a tie
        return dist.argmax(axis=-1)

    def transition(self, action: np.ndarray, dtype: np.dtype | None = None) -> np.ndarray:
        """The state passed to the next layer, ``phi(a)`` of §2.2, as floats ``(B, U)``."""
        h = action.astype(dtype or np.float64)
        if self.normalisation == "unit":
            if self.n_actions != 2:
                h /= self.n_actions - 1
        elif self.normalisation == "symmetric":
            h *= 2.0 / (self.n_actions - 1)
            h -= 1.0
        return h

    def transition_owned(self, action: np.ndarray, dtype: np.dtype | None = None) -> np.ndarray:
        """:meth:`transition` (it makes a new array whatever the caller does with ``action``)."""
        return self.transition(action, dtype)

    @staticmethod
    def _at_action(dist: np.ndarray, action: np.ndarray) -> tuple:
        """The index of each unit's chosen action in ``dist (..., B, U, K)`` (plain fancy
        indexing: a third of the cost of ``take_along_axis`` at small batches)."""
        if dist.ndim == 3:
            return (np.arange(dist.shape[0])[:, None], np.arange(dist.shape[1])[None, :], action)
        n = dist.ndim - 1
        return (*(np.arange(size).reshape([-1 if i == axis else 1 for i in range(n)])
                  for axis, size in enumerate(dist.shape[:-1])), action)

    def _chosen(self, dist: np.ndarray, action: np.ndarray) -> np.ndarray:
        return dist[self._at_action(dist, action)]

    def log_prob(self, dist: np.ndarray, action: np.ndarray) -> np.ndarray:
        """``log(pi(a|s) + 1e-5)`` per unit, ``(B, U)`` (§2.1: the epsilon is inside the log)."""
        return np.log(self._chosen(dist, action) + LOG_EPS)

    def score_grad(self, dist: np.ndarray, action: np.ndarray) -> np.ndarray:
        """d log(pi_a + eps) / dz = pi_a/(pi_a + eps) * (1[k=a] - pi_k), ``(B, U*K)`` (§3.0)."""
        at = self._at_action(dist, action)
        p_a = dist[at]
        g = -dist
        g[at] = 1.0 - p_a
        g *= (p_a / (p_a + LOG_EPS))[..., None]
        return g.reshape(*dist.shape[:-2], -1)

    def entropy(self, dist: np.ndarray) -> np.ndarray:
        """Per-example, per-unit entropy in nats with ``p + 1e-9`` (§4.3), ``(B, U)``."""
        p = dist + ENTROPY_EPS
        plogp = p * np.log(p)
        if self.n_actions == 2:
            return -(plogp[..., 0] + plogp[..., 1])  # the sum of two, as below, only faster
        return -plogp.sum(axis=-1)

    def activity(self, action: np.ndarray) -> np.ndarray:
        """How 'on' each unit is, in [0, 1]: ``a/(K-1)`` (§4.4; normalised for K > 2, see docs)."""
        return action / (self.n_actions - 1)

    def width(self, n_units: int) -> int:
        """Columns of the state ``phi(a)`` that ``n_units`` units pass on: one each."""
        return n_units


class OneHotCategorical(Categorical):
    """A softmax output unit over ``n_classes`` whose state is the one-hot code of its action
    (the categorical output coagent: the prediction the objective rewards is the sampled class)."""

    def __init__(self, n_classes: int) -> None:
        super().__init__(n_classes, "index")

    def __repr__(self) -> str:
        return f"OneHotCategorical(n_classes={self.n_actions})"

    def transition(self, action: np.ndarray, dtype: np.dtype | None = None) -> np.ndarray:
        """``phi(a)``: one one-hot block of K columns per unit, ``(B, U*K)``."""
        h = np.zeros((*action.shape, self.n_actions), dtype=dtype or np.float64)
        np.put_along_axis(h, action[..., None], 1.0, axis=-1)
        return h.reshape(*action.shape[:-1], -1)

    def width(self, n_units: int) -> int:
        return n_units * self.n_actions


def Bernoulli() -> Categorical:
    """Binary units as the paper codes them: a two-logit softmax whose state is the action (§2.1)."""
    return Categorical(2, "unit")


ACTIVATIONS = ("identity", "relu")


class Gaussian:
    """Gaussian units with a fixed sigma on the pre-activation (§2.5).

    ``dist`` is the mean ``(B, U)``; the action is the sampled pre-activation ``a ~ N(mu, sigma^2)``
    and the state passed on is ``phi(a)`` with ``phi`` identity or ReLU. The score is taken on the
    pre-activation, so it does not depend on ``phi``.
    """

    n_logits = 1

    def __init__(self, sigma: float = 0.5, activation: str = "identity",
                 normals: str = "ziggurat") -> None:
        if not (isinstance(sigma, int | float) and math.isfinite(sigma) and sigma > 0):
            raise ConfigError(f"sigma must be a finite number > 0, got {sigma!r}")
        if activation not in ACTIVATIONS:
            raise ConfigError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        if normals not in SAMPLERS:
            raise ConfigError(f"normals must be one of {SAMPLERS}, got {normals!r}")
        self.sigma = float(sigma)
        self.activation = activation
        self.normals = normals  # how eps is drawn (core/normals.py)
        self._inv_var = 1.0 / (self.sigma * self.sigma)

    def __repr__(self) -> str:
        return (f"Gaussian(sigma={self.sigma}, activation={self.activation!r}, "
                f"normals={self.normals!r})")

    def policy(self, z: np.ndarray) -> np.ndarray:
        """The means are the pre-activations themselves, ``(B, U)``."""
        return z

    def sample(self, dist: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``a = mu + sigma * eps``, ``(B, U)``, ``eps`` by the unit's sampler (``normals``)."""
        noise = standard_normal(rng, dist.shape, dist.dtype, self.normals)
        noise *= self.sigma
        noise += dist
        return noise

    def greedy(self, dist: np.ndarray) -> np.ndarray:
        """The mean (§2.5: greedy ``a = mu``)."""
        return dist

    def transition(self, action: np.ndarray, dtype: np.dtype | None = None) -> np.ndarray:
        """``phi(a)``: identity or ReLU."""
        if self.activation == "relu":
            return np.maximum(action, 0.0)
        return action

    def transition_owned(self, action: np.ndarray, dtype: np.dtype | None = None) -> np.ndarray:
        """:meth:`transition` of an ``action`` the caller no longer needs: the ReLU is written
        into it (the same ufunc, bit for bit; one allocation and pass fewer in evaluation)."""
        if self.activation == "relu":
            return np.maximum(action, 0.0, out=action)
        return action

    def log_prob(self, dist: np.ndarray, action: np.ndarray) -> np.ndarray:
        """``log N(a; mu, sigma^2)`` per unit, ``(B, U)``."""
        d = action - dist
        return -0.5 * d * d * self._inv_var - math.log(self.sigma * math.sqrt(2 * math.pi))

    def score_grad(self, dist: np.ndarray, action: np.ndarray) -> np.ndarray:
        """d log N(a; mu, sigma^2) / d mu = (a - mu) / sigma^2, ``(B, U)`` (§3.0)."""
        g = action - dist
        g *= self._inv_var
        return g

    @property
    def constant_entropy(self) -> float:
        """Differential entropy ``0.5 log(2 pi e sigma^2)`` of every unit (sigma is fixed)."""
        return 0.5 * math.log(2 * math.pi * math.e * self.sigma * self.sigma)

    def entropy(self, dist: np.ndarray) -> np.ndarray:
        """The differential entropy, the same for every unit and example, ``(B, U)``."""
        return np.full(dist.shape, self.constant_entropy, dtype=dist.dtype)

    def activity(self, action: np.ndarray) -> np.ndarray:
        """True where the greedy state ``phi(mu)`` is non-zero (active unit): ``mu > 0`` for
        ReLU, ``mu != 0`` for identity (bool: its sum counts the active units)."""
        if self.activation == "relu":
            return ~(action <= 0)  # relu(mu) != 0: mu > 0, or NaN (active, as relu(NaN))
        return action != 0

    def width(self, n_units: int) -> int:
        """Columns of the state ``phi(a)`` that ``n_units`` units pass on: one each."""
        return n_units


def make_unit(
    family: str, *, n_actions: int = 2, normalisation: str = "unit", sigma: float = 0.5,
    activation: str = "identity", normals: str = "ziggurat",
) -> Categorical | Gaussian:
    """Build a unit family by name: ``bernoulli``, ``categorical`` or ``gaussian``."""
    if family == "bernoulli":
        return Bernoulli()
    if family == "categorical":
        return Categorical(n_actions, normalisation)
    if family == "gaussian":
        return Gaussian(sigma, activation, normals)
    raise ConfigError(
        f"unit family must be 'bernoulli', 'categorical' or 'gaussian', got {family!r}"
    )
