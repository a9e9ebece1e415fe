"""The statistics of the instrument: one layer's estimates against its exact gradient (cosine,
relative bias, variance, Hotelling's test of unbiasedness) and the chi-square law they need
(numpy and the standard library only)."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import numpy as np

ALPHA = 0.001  # level of the unbiasedness test


def chi2_sf(t: float, dof: int) -> float:
    """``P(X >= t)`` for ``X ~ chi^2(dof)``: the regularised upper incomplete gamma function
    ``Q(dof/2, t/2)`` (series below ``a + 1``, Lentz's continued fraction above).

    >>> round(chi2_sf(3.841458820694124, 1), 6), round(chi2_sf(18.307038053275146, 10), 6)
    (0.05, 0.05)
    """
    if dof < 1:
        raise ValueError(f"dof must be >= 1, got {dof}")
    if t <= 0:
        return 1.0
    a, x = dof / 2.0, t / 2.0
    log_prefix = a * math.log(x) - x - math.lgamma(a)
    if x < a + 1.0:  # P(a, x) by its series
        term = total = 1.0 / a
        k = a
        while abs(term) > 1e-17 * abs(total):
            k += 1.0
            term *= x / k
            total += term
        return max(0.0, 1.0 - total * math.exp(log_prefix))
    tiny = 1e-300  # Q(a, x) by its continued fraction (modified Lentz)
    b = x + 1.0 - a
    c, d = 1.0 / tiny, 1.0 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-16:
            break
    return math.exp(log_prefix) * h


def chi2_z(t: float, dof: int) -> float:
    """The chi-square statistic ``t`` with ``dof`` degrees of freedom as a standard-normal
    z-score: ``Phi^-1(1 - p)`` with ``p = chi2_sf(t, dof)``; where ``p`` underflows, the
    Wilson-Hilferty transform ``((t/k)^(1/3) - 1 + 2/(9k)) / sqrt(2/(9k))``.

    >>> round(chi2_z(18.307038053275146, 10), 3)
    1.645
    """
    p = chi2_sf(t, dof)
    if 1e-300 < p < 1.0:
        return -statistics.NormalDist().inv_cdf(p)
    if p >= 1.0:
        return -math.inf
    v = 2.0 / (9.0 * dof)
    return ((t / dof) ** (1.0 / 3.0) - 1.0 + v) / math.sqrt(v)


@dataclass(frozen=True)
class LayerReport:
    """One row of the instrument's table (see :func:`compare`)."""

    rule: str
    layer: str
    n: int
    params: int
    exact_norm: float
    cosine: float
    relative_bias: float
    relative_bias_se: float
    noise_floor: float
    variance: float
    t2: float
    dof: int
    z: float
    p: float
    unbiased: bool
    hidden: tuple[int, ...] = ()

    @property
    def relative_variance(self) -> float:
        """``tr S / |g|^2``: one draw's variance in units of the squared gradient (1 / SNR)."""
        return self.variance / self.exact_norm ** 2 if self.exact_norm else math.nan

    @property
    def verdict(self) -> str:
        return "unbiased" if self.unbiased else "BIASED"


def compare(samples: np.ndarray, exact: np.ndarray, *, rule: str = "", layer: str = "",
            alpha: float = ALPHA, rcond: float = 1e-10) -> LayerReport:
    """The estimates ``samples (n, P)`` of one layer against its exact gradient ``(P,)``.

    * ``cosine`` between the mean estimate ``m`` and the exact gradient ``g``;
    * ``relative_bias = |m - g| / |g|`` with its delta-method standard error
      ``sqrt(u^T S u / n) / |g|``, ``u = (m - g) / |m - g|``; an unbiased estimator still shows
      about ``noise_floor = sqrt(tr(S) / n) / |g|`` (the norm of the mean's noise);
    * ``variance = tr(S)``, ``S`` the estimates' covariance: the variance of one draw's estimate;
    * Hotelling's ``T^2 = n (m - g)^T S^+ (m - g)`` with the pseudo-inverse over the eigenvalues
      of ``S`` above ``rcond`` times the largest (a two-logit Bernoulli unit's estimates have a
      null direction: its two logits' scores are opposite), referred to ``chi^2(rank S)`` (the
      large-sample law of ``T^2`` for an unbiased estimator, ``n >> rank S``); reported as the
      p-value and its z-score (:func:`chi2_z`). A mean that departs from ``g`` where the
      estimates do not vary at all is a bias no noise explains: ``T^2 = inf``. ``unbiased`` is
      ``p >= alpha``.
    """
    samples = np.asarray(samples, dtype=np.float64)
    exact = np.asarray(exact, dtype=np.float64)
    n = len(samples)
    mean = samples.mean(axis=0)
    centred = samples - mean
    cov = centred.T @ centred / (n - 1)
    values, vectors = np.linalg.eigh(cov)
    largest = max(float(values.max()), 0.0)
    keep = values > rcond * largest
    diff = mean - exact
    g_norm = float(np.linalg.norm(exact))
    d_norm = float(np.linalg.norm(diff))
    coords = vectors.T @ diff
    t2 = float(n * (coords[keep] ** 2 / values[keep]).sum())
    # where the estimates do not vary, the mean's noise is below sqrt(rcond * largest / n)
    limit = 10.0 * math.sqrt(rcond * largest / n) + 1e-9 * max(g_norm, 1e-300)
    if float(np.linalg.norm(coords[~keep])) > limit:
        t2 = math.inf
    dof = max(int(keep.sum()), 1)
    p = 0.0 if math.isinf(t2) else chi2_sf(t2, dof)
    z = math.inf if math.isinf(t2) else chi2_z(t2, dof)
    u = diff / d_norm if d_norm > 0 else np.zeros_like(diff)
    se = math.sqrt(max(float(u @ cov @ u), 0.0) / n)
    m_norm = float(np.linalg.norm(mean))
    cosine = float(mean @ exact) / (m_norm * g_norm) if m_norm and g_norm else math.nan
    scale = g_norm if g_norm else math.nan
    return LayerReport(rule, layer, n, exact.size, g_norm, cosine, d_norm / scale, se / scale,
                       math.sqrt(float(np.trace(cov)) / n) / scale, float(np.trace(cov)), t2,
                       dof, z, p, p >= alpha)
