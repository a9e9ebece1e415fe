"""Results tables (``coagents table``): one row per configuration of the completed runs found in
run and sweep directories (runs that differ only in ``run.seed`` are one configuration), with the
config keys that vary between configurations, the number of seeds, and for each metric the mean
± standard error over seeds of its final value and of the area under its curve (AUC: the
trapezoid rule against the x axis, divided by the x range, so it is the curve's mean value), as
Markdown or CSV. The numbers come from :mod:`~async_coagents.experiment.results`.
"""

from __future__ import annotations

import csv
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

from async_coagents.errors import DataError
from async_coagents.experiment.results import (
    configuration,
    describe_tasks,
    find_run_dirs,
    format_value,
    group_runs,
    load_runs,
    mean_se,
    runs_by_task,
)
from async_coagents.experiment.rundir import RunDirectory

#: Columns of ``metrics.jsonl`` that count the run's progress rather than measure what it learnt.
PROGRESS_COLUMNS = ("step", "samples", "wall_s", "samples_per_s")
#: The statistics of each metric, in column order.
STATISTICS = ("final", "AUC")

Stat = tuple[float, float | None]  # mean, standard error (None for one seed)


@dataclass
class Row:
    """One configuration: its name, its values of the table's varying keys (as written), its
    number of seeds, and ``stats[(metric, statistic)]`` (None where its runs lack the metric)."""

    name: str
    values: dict[str, str]
    seeds: int
    stats: dict[tuple[str, str], Stat | None]


@dataclass
class Table:
    """The rows, the varying config ``keys``, the ``metrics``, the AUC's ``x`` axis, and notes
    (runs left out, anomalies in the data) for the reader."""

    keys: list[str]
    metrics: list[str]
    x: str
    rows: list[Row]
    notes: list[str] = field(default_factory=list)


def results_table(paths: Sequence[str | PathLike[str]], *, metrics: Sequence[str] | None = None,
                  x: str = "step") -> Table:
    """The table of the completed runs in ``paths`` (run directories, sweep directories, or
    directories holding them); ``metrics`` chooses the columns (default: every scalar metric the
    runs log, progress counters aside); ``x`` is the AUC's axis (``step``, ``samples`` or
    ``wall_s``).

    Raises :class:`DataError` when no run is found, none completed, the runs mix tasks
    (classification and regression), or a chosen metric is logged by none of them.
    """
    if x not in AXES:
        raise DataError(f"x must be one of {sorted(AXES)}, got {x!r}")
    notes: list[str] = []
    found = find_run_dirs(paths)
    completed, left_out = [], []
    for directory in found:
        summary = RunDirectory(directory).summary()
        status = summary.get("status") if summary else "no summary.json yet"
        (completed if status == "completed" else left_out).append((directory, status))
    if left_out:
        notes.append(f"left out {len(left_out)} run(s) that did not complete: " + ", ".join(
            f"{d} ({status})" for d, status in left_out))
    if not completed:
        raise DataError(f"none of the {len(found)} run(s) found completed: " + ", ".join(
            f"{d} ({status})" for d, status in left_out))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runs = load_runs([d for d, _ in completed])
        groups = group_runs(runs)
    notes += [str(w.message) for w in caught]
    by_task = runs_by_task(runs)
    if len(by_task) > 1:
        raise DataError(f"the runs mix tasks ({describe_tasks(by_task)}): a table compares runs "
                        "of one task; give the directories of one task")
    columns = _metrics(runs, metrics)
    configs = [configuration(g.runs[0].config) for g in groups]
    keys = [k for k in dict.fromkeys(k for c in configs for k in c)
            if k not in ("name", "description")
            and len({format_value(c.get(k, "unset")) for c in configs}) > 1]
    rows = []
    for group, config in zip(groups, configs, strict=True):
        stats: dict[tuple[str, str], Stat | None] = {}
        for metric in columns:
            has = group.has(metric)
            stats[(metric, "final")] = mean_se(group.final(metric)) if has else None
            stats[(metric, "AUC")] = mean_se(group.auc(metric, x)) if has else None
        rows.append(Row(str(config.get("name", group.label)),
                        {k: format_value(config.get(k, "unset")) for k in keys}, group.n, stats))
    return Table(keys, columns, x, rows, notes)


def _metrics(runs, chosen: Sequence[str] | None) -> list[str]:
    scalar = [k for r in runs for k, v in r.metrics.items()
              if v.ndim == 1 and k not in PROGRESS_COLUMNS]
    available = list(dict.fromkeys(scalar))
    if not chosen:
        return available
    missing = [m for m in chosen if m not in available]
    if missing:
        raise DataError(f"metric {', '.join(map(repr, missing))} is logged by none of the runs; "
                        f"their metrics: {', '.join(available)}")
    return list(dict.fromkeys(chosen))


# ---- rendering -----------------------------------------------------------------------------------
#: The AUC's x axes in words (each seed's own ``samples`` or ``wall_s``).
AXES = {"step": "updates (steps)", "samples": "training examples seen",
        "wall_s": "wall-clock seconds"}


def legend(table: Table) -> str:
    """What the numbers are, in one paragraph (above the Markdown table)."""
    return ("Mean ± standard error over seeds (sample standard deviation / √n; – for one seed). "
            "final: the value at the last evaluation common to a configuration's seeds. AUC: the "
            f"area under the curve against {AXES[table.x]}, by the trapezoid rule, divided by "
            "that range, so it is the curve's mean value.")


def to_markdown(table: Table) -> str:
    """The table as Markdown, after its :func:`legend`."""
    head = ["name", *table.keys, "seeds",
            *(f"{m} {s}" for m in table.metrics for s in STATISTICS)]
    align = ["---"] * (1 + len(table.keys)) + ["---:"] * (1 + len(STATISTICS) * len(table.metrics))
    lines = [legend(table), "", _md_row(head), _md_row(align)]
    for row in table.rows:
        cells = [row.name, *(row.values[k] for k in table.keys), str(row.seeds),
                 *(_shown(row.stats[(m, s)]) for m in table.metrics for s in STATISTICS)]
        lines.append(_md_row(cells))
    return "\n".join(lines)


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def _shown(stat: Stat | None) -> str:
    if stat is None:
        return ""
    mean, se = stat
    if not math.isfinite(mean):
        return "–"
    return f"{mean:.4g}" if se is None else f"{mean:.4g} ± {se:.2g}"


def to_csv(table: Table, path: Path) -> None:
    """The table as CSV: ``name``, the varying keys, ``seeds``, then ``<metric>_<final|auc>_mean``
    and ``..._se`` for each metric (full precision; empty where undefined)."""
    head = ["name", *table.keys, "seeds"]
    for metric in table.metrics:
        for statistic in STATISTICS:
            head += [f"{metric}_{statistic.lower()}_mean", f"{metric}_{statistic.lower()}_se"]
    try:
        with open(path, "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(head)
            for row in table.rows:
                cells = [row.name, *(row.values[k] for k in table.keys), row.seeds]
                for metric in table.metrics:
                    for statistic in STATISTICS:
                        mean, se = row.stats[(metric, statistic)] or (None, None)
                        cells += [_number(mean), _number(se)]
                writer.writerow(cells)
    except OSError as exc:
        raise DataError(f"cannot write {path}: {exc.strerror or exc}") from None


def _number(value: float | None) -> str:
    return "" if value is None or not math.isfinite(value) else repr(value)
