"""What a study is made of: its arms (one configuration each, run over seeds), its budgets (how
many seeds and how long each run is, from a quick look to the paper's own), and the interface a
study implements to name its arms and to write its report from the compact results.

A study is a module of :mod:`async_coagents.study.studies` that defines one :class:`Study`
subclass; :mod:`async_coagents.study` registers it by name (``coagents study NAME``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from async_coagents.study.compact import StudyData
    from async_coagents.study.report import Report

__all__ = ["Arm", "Budget", "Study"]


@dataclass(frozen=True)
class Arm:
    """One configuration of a study: the built-in ``config`` it starts from, the ``settings``
    (dotted key -> TOML value) that make it this arm, and ``labels`` (column -> value) naming it
    in the report's tables. ``name`` is unique in its study and names the arm's directory of
    compact results."""

    name: str
    config: str
    settings: dict[str, object] = field(default_factory=dict)
    labels: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Budget:
    """How much of a study to run: ``seeds`` seeds (0 .. seeds-1) per arm, and ``settings``
    (dotted key -> TOML value) applied to every arm after its own (the run's length, its
    evaluation cadence), described in words by ``description`` for the report."""

    name: str
    seeds: int
    description: str
    settings: dict[str, object] = field(default_factory=dict)


class Study:
    """A named study. Subclasses set the class attributes and implement :meth:`arms` and
    :meth:`write_report`.

    ``metrics`` are the columns of ``metrics.jsonl`` kept in the compact results (a per-layer
    column such as ``entropy`` is kept as ``entropy_0``, ``entropy_1``, ...); ``curve_every``
    thins the kept curves to every n-th evaluation (and the last) where a study has so many runs
    that its full curves would not be small, while the finals and areas under the curves are
    always computed from the full curves, and ``curve_metrics`` (default: every one of
    ``metrics``) chooses the columns whose curves are kept; ``replicas`` packs a configuration's seeds into
    replicated runs of up to that many (``sweep.replicas``)."""

    name: ClassVar[str]
    title: ClassVar[str]
    summary: ClassVar[str]
    metrics: ClassVar[tuple[str, ...]]
    budgets: ClassVar[dict[str, Budget]]
    default_budget: ClassVar[str] = "paper"
    curve_every: ClassVar[int] = 1
    curve_metrics: ClassVar[tuple[str, ...] | None] = None
    replicas: ClassVar[int] = 1

    def arms(self, budget: Budget) -> list[Arm]:
        """The study's arms at ``budget``."""
        raise NotImplementedError

    def write_report(self, data: StudyData, report: Report) -> None:
        """Add the study's tables, figures, tests and verdicts to ``report``, from ``data``."""
        raise NotImplementedError
