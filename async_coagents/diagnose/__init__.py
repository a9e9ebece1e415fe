"""The gradient instrument (issue 11): what each learning rule's gradient estimate actually is.

On a network small enough that its expected reward is computed exactly by enumerating every joint
action (:mod:`~async_coagents.diagnose.task`), :func:`exact_gradient` gives ``grad E[R]`` for
every layer (:mod:`~async_coagents.diagnose.exact`); :func:`draw_estimates` draws many independent
estimates of it from a rule, computed by the real layers at fixed policy parameters
(:mod:`~async_coagents.diagnose.draws`); :func:`diagnose` compares the two per layer: cosine,
relative bias, variance and a test of unbiasedness (:mod:`~async_coagents.diagnose.stats`).
``coagents diagnose`` prints the table (:mod:`~async_coagents.diagnose.table`).

The rules' scores use ``log(pi + 1e-5)`` (§2.1) where the exact gradient uses ``log pi``: their
expectation differs from ``grad E[R]`` by a relative ``O(1e-5)``, far below what the instrument
resolves with the samples it draws (its ``floor`` column).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from async_coagents.core.rules import Rule
from async_coagents.diagnose.draws import SAMPLES, WARMUP, Estimates, draw_estimates, rule_named
from async_coagents.diagnose.exact import (
    TARGET,
    FixedPoint,
    exact_gradient,
    expected_reward,
    fixed_point,
)
from async_coagents.diagnose.stats import ALPHA, LayerReport, chi2_sf, chi2_z, compare
from async_coagents.diagnose.table import (
    CSV_FIELDS,
    csv_rows,
    describe,
    format_depths,
    format_table,
    legend,
)
from async_coagents.diagnose.task import (
    LABELS,
    MAX_JOINT_ACTIONS,
    TINY,
    check_enumerable,
    tiny_spec,
    tiny_task,
)

__all__ = [
    "ALPHA", "CSV_FIELDS", "LABELS", "MAX_JOINT_ACTIONS", "SAMPLES", "TARGET", "TINY", "WARMUP",
    "Estimates", "FixedPoint", "LayerReport", "check_enumerable", "chi2_sf", "chi2_z", "compare",
    "csv_rows", "describe", "diagnose", "draw_estimates", "exact_gradient", "expected_reward",
    "fixed_point", "format_depths", "format_table", "legend", "tiny_spec", "tiny_task",
]


def diagnose(rule: str | type[Rule], hidden: Sequence[int] = (3, 3), n: int = SAMPLES,
             seed: int = 0, *, warmup: int = WARMUP, labels: str = "random",
             target: float = TARGET, alpha: float = ALPHA,
             progress: Callable[[int], None] | None = None, **settings) -> list[LayerReport]:
    """The instrument's table for ``rule`` on :func:`tiny_spec` with ``hidden`` (and
    ``settings``): one :class:`LayerReport` per layer, bottom to top (see :func:`compare`).

    >>> rows = diagnose("reinforce", hidden=(2,), n=300, warmup=0)
    >>> [row.layer for row in rows], all(row.unbiased for row in rows)
    (['layer0', 'output'], True)
    """
    with rule_named(rule) as name:
        spec = tiny_spec(name, hidden=tuple(hidden), **settings)
        drawn = draw_estimates(spec, name, n, seed, warmup=warmup, labels=labels,
                               target=target, progress=progress)
    return [replace(compare(samples, exact, rule=drawn.rule, layer=layer, alpha=alpha),
                    hidden=spec.hidden)
            for layer, samples, exact in zip(drawn.layers, drawn.samples, drawn.exact,
                                             strict=True)]
