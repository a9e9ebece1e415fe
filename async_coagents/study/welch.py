"""Welch's two-sample t-test (unequal variances), the test the reproduction study applies to
each pair of configurations it compares: the statistic, the Welch–Satterthwaite degrees of
freedom and the two-sided p-value from Student's t distribution, whose tail is computed through
the regularised incomplete beta function (a continued fraction, Lentz's method), so numpy and the
standard library are all it needs.

    t = (m_a - m_b) / sqrt(v_a/n_a + v_b/n_b)
    dof = (v_a/n_a + v_b/n_b)^2 / ((v_a/n_a)^2/(n_a-1) + (v_b/n_b)^2/(n_b-1))
    p = P(|T_dof| >= |t|) = I_{dof/(dof+t^2)}(dof/2, 1/2)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Welch", "student_t_two_sided", "welch", "welch_summary"]


@dataclass(frozen=True)
class Welch:
    """The test of ``a`` against ``b``: their means, ``difference = mean_a - mean_b``, the
    statistic, the degrees of freedom and the two-sided p-value (NaN where undefined: fewer than
    two values on a side, or both sides without variance and equal means)."""

    mean_a: float
    mean_b: float
    n_a: int
    n_b: int
    difference: float
    t: float
    dof: float
    p: float


def welch(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> Welch:
    """Welch's t-test of the finite values of ``a`` against those of ``b``."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    return welch_summary(_stats(a), _stats(b))


def welch_summary(a: tuple[float, float, int], b: tuple[float, float, int]) -> Welch:
    """Welch's t-test from each sample's ``(mean, variance with ddof 1, n)``: the test against a
    published figure reported as mean ± standard deviation over n runs."""
    (mean_a, var_a, n_a), (mean_b, var_b, n_b) = a, b
    difference = mean_a - mean_b
    if n_a < 2 or n_b < 2:
        return Welch(mean_a, mean_b, n_a, n_b, difference, math.nan, math.nan, math.nan)
    va, vb = var_a / n_a, var_b / n_b
    if va + vb == 0:
        same = difference == 0
        return Welch(mean_a, mean_b, n_a, n_b, difference, math.nan if same else math.copysign(
            math.inf, difference), math.nan, math.nan if same else 0.0)
    t = difference / math.sqrt(va + vb)
    dof = (va + vb) ** 2 / (va**2 / (n_a - 1) + vb**2 / (n_b - 1))
    return Welch(mean_a, mean_b, n_a, n_b, difference, t, dof, student_t_two_sided(t, dof))


def _stats(values: np.ndarray) -> tuple[float, float, int]:
    n = len(values)
    mean = float(values.mean()) if n else math.nan
    return mean, float(values.var(ddof=1)) if n > 1 else math.nan, n


def student_t_two_sided(t: float, dof: float) -> float:
    """``P(|T| >= |t|)`` for Student's t with ``dof`` degrees of freedom."""
    if not math.isfinite(t):
        return 0.0
    return _betainc(dof / 2, 0.5, dof / (dof + t * t))


def _betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function ``I_x(a, b)``."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                     + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):  # the continued fraction converges fast here
        return front * _beta_fraction(a, b, x) / a
    return 1.0 - front * _beta_fraction(b, a, 1.0 - x) / b


def _beta_fraction(a: float, b: float, x: float, *, tiny: float = 1e-300,
                   tolerance: float = 1e-15, terms: int = 10_000) -> float:
    """The continued fraction of ``I_x(a, b)``, evaluated by the modified Lentz method."""
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    value = d
    for m in range(1, terms + 1):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            value *= c * d
        if abs(c * d - 1.0) < tolerance:
            break
    return value
