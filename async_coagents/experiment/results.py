"""Results of run directories, loaded and grouped: the evaluations of ``metrics.jsonl`` as numeric
columns, run directories found below sweep directories, runs labelled by their configuration,
seeds of one configuration grouped at their common steps, and per group the mean and standard error
over seeds of a curve, of a final value and of the area under a curve (``paper_method.md`` §7).
Figures (:mod:`async_coagents.experiment.plots`) and tables
(:mod:`async_coagents.experiment.tables`) are drawn from these objects.

Errors: a path that is not a readable run directory (missing ``config.json`` / ``metrics.jsonl``,
unparsable JSON, an empty metrics file) and seeds that cannot be grouped raise
:class:`~async_coagents.errors.DataError`; anomalies that do not stop an analysis (a truncated last
line, seeds of unequal length, a seed present twice) are reported with :class:`PlotDataWarning`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from async_coagents.errors import CheckpointError, ConfigError, DataError
from async_coagents.experiment.config import EXECUTION_SECTIONS
from async_coagents.experiment.rundir import CONFIG, METRICS, RunDirectory

__all__ = [
    "METRICS_FILE",
    "X_AXES",
    "Curve",
    "Group",
    "PlotDataWarning",
    "RunResults",
    "default_metric",
    "ema",
    "find_run_dirs",
    "group_runs",
    "load_runs",
    "mean_se",
    "runs_by_task",
]

logger = logging.getLogger(__name__)

CONFIG_FILE = CONFIG
METRICS_FILE = METRICS
SEED_KEYS = ("run.seed", "run.out")  # flattened config keys that do not change the configuration
X_AXES = {
    "step": "updates (steps)",
    "samples": "training examples seen",
    "wall_s": "wall-clock time (s), mean over seeds",
}
_UNSET = "unset"


class PlotDataWarning(UserWarning):
    """Run data that can still be plotted but not as written (truncated, unequal seeds, duplicates)."""


# --------------------------------------------------------------------------------------- loading


@dataclass(frozen=True, eq=False)
class RunResults:
    """One run directory as loaded.

    ``metrics`` maps each numeric key of ``metrics.jsonl`` to a float64 column: ``(T,)`` for scalars
    (``step``, ``test_accuracy``, ...), ``(T, L)`` for per-layer lists (``entropy``, ``sparsity``,
    ``staleness_mean``; ``L`` may be 0); ``null`` values, ``null`` entries of a list and keys absent
    from some lines are NaN (not drawn), and a key that is ``null`` or absent on every line is left
    out. ``label`` is the label of the run's configuration among the runs loaded together (see
    :func:`load_runs`).
    """

    directory: Path
    config: dict[str, Any]
    label: str
    seed: int | None
    metrics: dict[str, np.ndarray]

    @property
    def steps(self) -> np.ndarray:
        """Updates done at each evaluation, ``(T,)`` int64."""
        return self.metrics["step"].astype(np.int64)

    @property
    def task(self) -> str | None:
        """``"classification"`` or ``"regression"`` from the metrics written, else None."""
        if "test_accuracy" in self.metrics:
            return "classification"
        if "test_mse" in self.metrics:
            return "regression"
        return None

    def has_layers(self, column: str) -> bool:
        """Whether per-layer ``column`` exists with at least one layer."""
        values = self.metrics.get(column)
        return values is not None and values.ndim == 2 and values.shape[1] > 0


def load_runs(run_dirs: Sequence[str | PathLike[str]]) -> list[RunResults]:
    """Load run directories, in the order given, and label each by its configuration.

    Runs whose configs differ only in ``run.seed`` / ``run.out`` share a label: ``config["name"]``,
    followed, when several configurations share that name, by the keys that tell them apart, e.g.
    ``mnist-offpolicy (network.lr=0.001)``. An unparsable *last* line of ``metrics.jsonl`` (a
    killed run) is skipped with a :class:`PlotDataWarning`; any other bad line, a missing file or
    an empty metrics file raises :class:`DataError` naming the file (and line).
    """
    if isinstance(run_dirs, str | PathLike):
        run_dirs = [run_dirs]
    if not run_dirs:
        raise DataError("no run directories given")
    loaded = [_load_one(Path(d)) for d in run_dirs]
    keys = [_config_key(config) for _, config, _ in loaded]
    labels = _labels([config for _, config, _ in loaded], keys, [d for d, _, _ in loaded])
    return [
        RunResults(directory=d, config=config, label=labels[key], seed=_seed(config), metrics=metrics)
        for (d, config, metrics), key in zip(loaded, keys, strict=True)
    ]


def find_run_dirs(paths: Sequence[str | PathLike[str]]) -> list[Path]:
    """The run directories in ``paths``: each path that is a run directory (it holds
    ``config.json`` and ``metrics.jsonl``), and every run directory below the others (a sweep
    directory, a directory of sweeps), in name order; hidden directories are not searched.

    Raises :class:`DataError` for a path that does not exist or is not a directory, and for one
    that holds no run directory.
    """
    found: dict[Path, None] = {}
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise DataError(f"{str(path)!r} does not exist")
        if not path.is_dir():
            raise DataError(f"{str(path)!r} is not a directory (give run or sweep directories)")
        hits = [path] if _is_run_dir(path) else _run_dirs_below(path)
        if not hits:
            raise DataError(f"no run directory in {str(path)!r} (a run directory holds "
                            f"{CONFIG_FILE} and {METRICS_FILE}; a sweep directory holds run "
                            "directories)")
        found.update(dict.fromkeys(hits))
    return list(found)


def _is_run_dir(path: Path) -> bool:
    return (path / CONFIG_FILE).is_file() and (path / METRICS_FILE).is_file()


def _run_dirs_below(root: Path) -> list[Path]:
    found = []
    for where, subdirs, _ in os.walk(root):
        here = Path(where)
        if here != root and _is_run_dir(here):
            found.append(here)
            subdirs.clear()  # nothing of interest inside a run (plots, agents)
            continue
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
    return found


def _load_one(directory: Path) -> tuple[Path, dict[str, Any], dict[str, np.ndarray]]:
    if not directory.exists():
        raise DataError(f"run directory {str(directory)!r} does not exist")
    if not directory.is_dir():
        raise DataError(f"{str(directory)!r} is not a run directory (it is a file)")
    for name in (CONFIG_FILE, METRICS_FILE):
        if not (directory / name).is_file():
            raise DataError(f"{str(directory)!r} is not a run directory: it has no {name} "
                            f"(a run directory holds {CONFIG_FILE} and {METRICS_FILE})")
    config_path = directory / CONFIG_FILE
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{config_path}: not valid JSON ({err})") from None
    if not isinstance(config, dict):
        raise DataError(f"{config_path}: expected a JSON object, got {type(config).__name__}")
    return directory, config, _read_metrics(directory)


def _read_metrics(directory: Path) -> dict[str, np.ndarray]:
    """The numeric columns of the run's ``metrics.jsonl``, read by the run directory's own reader
    (:meth:`~async_coagents.experiment.rundir.RunDirectory.read_metrics`)."""
    path = directory / METRICS_FILE
    try:
        records, partial = RunDirectory(directory).read_metrics()
    except CheckpointError as err:
        raise DataError(str(err)) from None
    if partial is not None:
        warnings.warn(f"{path}:{partial}: skipping the unfinished last line (a killed run?)",
                      PlotDataWarning, stacklevel=3)
    if not records:
        raise DataError(f"{path}: has no evaluations (empty metrics file)")
    return _columns(path, records)


def _columns(path: Path, records: list[tuple[int, dict[str, Any]]]) -> dict[str, np.ndarray]:
    """Column arrays of the numeric keys; keys holding anything else (strings, nested lists) are
    left out."""
    keys: dict[str, None] = {}
    for _, record in records:
        keys.update(dict.fromkeys(record))
    columns: dict[str, np.ndarray] = {}
    for key in keys:
        values = [(lineno, record.get(key)) for lineno, record in records]
        present = [(lineno, v) for lineno, v in values if v is not None]
        if not present:  # null (or absent) on every line: nothing recorded, like a missing key
            logger.debug("%s: column %r is null on every line; not loaded", path, key)
        elif all(_is_number(v) for _, v in present):
            columns[key] = np.array([np.nan if v is None else v for _, v in values], dtype=np.float64)
        elif all(isinstance(v, list) and all(e is None or _is_number(e) for e in v) for _, v in present):
            widths = {len(v) for _, v in present}
            if len(widths) > 1:
                lineno = next(n for n, v in present if len(v) != len(present[0][1]))
                raise DataError(f"{path}:{lineno}: {key!r} has {sorted(widths)} entries on different "
                                "lines; a per-layer list must keep its length")
            width = widths.pop()
            columns[key] = np.array(
                [[np.nan] * width if v is None else [np.nan if e is None else e for e in v]
                 for _, v in values], dtype=np.float64).reshape(len(values), width)
        else:
            logger.debug("%s: column %r is not numeric; not loaded", path, key)
    return columns


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _seed(config: dict[str, Any]) -> int | None:
    run = config.get("run")
    seed = run.get("seed") if isinstance(run, dict) else None
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else None


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys of nested dicts (lists of dicts indexed ``[i]``); other values are leaves."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(value, list) and any(isinstance(v, dict) for v in value):
        out = {}
        for i, v in enumerate(value):
            out.update(_flatten(v, f"{prefix}[{i}]"))
        return out
    return {prefix: value}


def configuration(config: dict[str, Any]) -> dict[str, Any]:
    """The flattened keys of ``config`` that make its configuration: all but the seed and the
    sections that say where a run executes (``[sweep]``)."""
    return {k: v for k, v in _flatten(config).items()
            if k not in SEED_KEYS and k.split(".")[0] not in EXECUTION_SECTIONS}


def _config_key(config: dict[str, Any]) -> str:
    return json.dumps(configuration(config), sort_keys=True, default=str)


def format_value(value: Any) -> str:
    if value is _UNSET:
        return _UNSET
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(", ", ": "), default=str)


def _labels(configs: list[dict[str, Any]], keys: list[str], dirs: list[Path]) -> dict[str, str]:
    """Label of each configuration key: its name, plus the keys that differ between configurations
    sharing that name (in config order)."""
    first: dict[str, tuple[str, dict[str, Any]]] = {}
    for config, key, directory in zip(configs, keys, dirs, strict=True):
        if key not in first:
            name = config.get("name")
            name = name if isinstance(name, str) and name else directory.name
            flat = {k: v for k, v in configuration(config).items() if k != "name"}
            first[key] = (name, flat)
    by_name: dict[str, list[str]] = {}
    for key, (name, _) in first.items():
        by_name.setdefault(name, []).append(key)
    labels: dict[str, str] = {}
    for name, group_keys in by_name.items():
        if len(group_keys) == 1:
            labels[group_keys[0]] = name
            continue
        flats = [first[k][1] for k in group_keys]
        all_keys: dict[str, None] = {}
        for flat in flats:
            all_keys.update(dict.fromkeys(flat))
        differing = [k for k in all_keys
                     if len({format_value(f.get(k, _UNSET)) for f in flats}) > 1]
        for key, flat in zip(group_keys, flats, strict=True):
            parts = ", ".join(f"{k}={format_value(flat.get(k, _UNSET))}" for k in differing)
            labels[key] = f"{name} ({parts})"
    return labels


# -------------------------------------------------------------------------------- seed statistics


def ema(values: np.ndarray, factor: float) -> np.ndarray:
    """Exponential moving average along axis 0 of ``values (T,)`` or ``(T, L)``.

    ``s_0 = v_0``, ``s_t = factor * s_{t-1} + (1 - factor) * v_t`` (the paper's smoothing, 0.9 or
    0.99; ``factor = 0`` returns a copy). Non-finite entries are skipped: they stay NaN in the output
    and leave the running average unchanged.

    >>> ema(np.array([0.0, 1.0, 1.0]), 0.5).tolist()
    [0.0, 0.5, 0.75]
    """
    values = np.asarray(values, dtype=np.float64)
    if factor == 0.0:
        return values.copy()
    out = np.full_like(values, np.nan)
    state = np.full(values.shape[1:], np.nan)
    for t, v in enumerate(values):
        ok = np.isfinite(v)
        state = np.where(ok, np.where(np.isnan(state), v, factor * state + (1.0 - factor) * v), state)
        out[t] = np.where(ok, state, np.nan)
    return out


@dataclass(frozen=True)
class Curve:
    """Mean over the seeds of a group at its common steps: ``x (T,)``, ``mean (T,)`` or ``(T, L)``,
    ``se`` of the same shape (std with ddof=1 over sqrt(n)), None when ``n == 1``."""

    x: np.ndarray
    mean: np.ndarray
    se: np.ndarray | None
    n: int


@dataclass(frozen=True, eq=False)
class Group:
    """The seeds of one configuration and the evaluation steps common to all of them, ``(T,)``."""

    label: str
    runs: tuple[RunResults, ...]
    steps: np.ndarray

    @property
    def n(self) -> int:
        return len(self.runs)

    def has(self, column: str) -> bool:
        """Whether every seed has ``column`` (per-layer columns: with at least one layer)."""
        return all(column in r.metrics and (r.metrics[column].ndim == 1 or r.has_layers(column))
                   for r in self.runs)

    def values(self, column: str, smooth: float = 0.0) -> np.ndarray:
        """``column`` of every seed at the common steps, EMA-smoothed per seed first:
        ``(n, T)`` or ``(n, T, L)``."""
        rows = []
        for run in self.runs:
            if column not in run.metrics:
                raise DataError(f"run {str(run.directory)!r} has no {column!r} in its {METRICS_FILE}")
            rows.append(ema(run.metrics[column], smooth)[_positions(run.steps, self.steps)])
        shapes = {row.shape for row in rows}
        if len(shapes) > 1:
            raise DataError(f"seeds of {self.label!r} disagree on the shape of {column!r}: "
                            + ", ".join(f"{r.directory.name}: {row.shape[1:]}"
                                        for r, row in zip(self.runs, rows, strict=True)))
        return np.stack(rows)

    def final(self, column: str) -> np.ndarray:
        """Each seed's ``column`` at the last step common to all seeds, ``(n,)``."""
        return self.values(column)[:, -1]

    def auc(self, column: str, x: str = "step") -> np.ndarray:
        """Each seed's area under the curve of ``column`` against ``x`` (``step``, or that seed's
        own ``samples`` / ``wall_s``) over the common steps, by the trapezoid rule, divided by
        the x range: the curve's mean value, ``(n,)``. Evaluations where the value is not finite
        (``train_loss`` before the first batch) are left out; a seed with fewer than two left is
        NaN."""
        values = self.values(column)
        xs = (np.broadcast_to(self.steps.astype(np.float64), values.shape) if x == "step"
              else self.values(x))
        areas = np.full(self.n, np.nan)
        for i, (y, t) in enumerate(zip(values, xs, strict=True)):
            ok = np.isfinite(y) & np.isfinite(t)
            y, t = y[ok], t[ok]
            if len(y) >= 2 and t[-1] > t[0]:
                areas[i] = float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(t))) / (t[-1] - t[0])
        return areas

    def curve(self, column: str, *, smooth: float = 0.0, x: str = "step") -> Curve:
        """Mean and standard error over seeds of ``column`` against ``x`` (``step``, or the mean
        over seeds of ``samples`` / ``wall_s`` at each common step)."""
        values = self.values(column, smooth)
        mean = values.mean(axis=0)
        se = values.std(axis=0, ddof=1) / math.sqrt(self.n) if self.n > 1 else None
        xs = self.steps.astype(np.float64) if x == "step" else self.values(x).mean(axis=0)
        return Curve(x=xs, mean=mean, se=se, n=self.n)


def _positions(steps: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Index in ``steps`` of each of ``wanted`` (the last one, if a step was logged twice)."""
    index = {int(s): i for i, s in enumerate(steps)}
    return np.array([index[int(s)] for s in wanted], dtype=np.intp)


def mean_se(values: np.ndarray) -> tuple[float, float | None]:
    """Mean over seeds of ``values (n,)`` and its standard error (sample std with ddof=1 over
    sqrt(n)); the error is None for one seed.

    >>> mean_se(np.array([0.0, 2.0, 4.0, 6.0]))  # std sqrt(20 / 3), over sqrt(4)
    (3.0, 1.2909944487358056)
    """
    values = np.asarray(values, dtype=np.float64)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, None
    return mean, float(values.std(ddof=1) / math.sqrt(len(values)))


def group_runs(runs: Sequence[RunResults]) -> list[Group]:
    """Group runs by label (configuration), in order of first appearance, seeds sorted.

    Each group keeps the steps common to all its seeds; if seeds have different lengths a
    :class:`PlotDataWarning` says how many evaluations are kept.
    """
    by_label: dict[str, list[RunResults]] = {}
    for run in runs:
        by_label.setdefault(run.label, []).append(run)
    groups = []
    for label, members in by_label.items():
        members.sort(key=lambda r: (r.seed is None, r.seed if r.seed is not None else 0))
        seeds = [r.seed for r in members if r.seed is not None]
        repeated = sorted({s for s in seeds if seeds.count(s) > 1})
        if repeated:
            warnings.warn(f"{label!r}: seed(s) {repeated} appear in more than one run directory; "
                          "each directory counts as one sample", PlotDataWarning, stacklevel=2)
        common = members[0].steps
        for run in members[1:]:
            common = np.intersect1d(common, run.steps)
        common = np.unique(common)
        if common.size == 0:
            raise DataError(f"{label!r}: no evaluation step is common to all seeds ("
                            + ", ".join(str(r.directory) for r in members) + ")")
        lengths = [len(np.unique(r.steps)) for r in members]
        if len(set(lengths)) > 1 or lengths[0] != common.size:
            warnings.warn(f"{label!r}: seeds have {lengths} evaluations; using the {common.size} steps "
                          f"common to all (up to step {int(common[-1])})", PlotDataWarning, stacklevel=2)
        groups.append(Group(label=label, runs=tuple(members), steps=common))
    return groups


def runs_by_task(runs: Sequence[RunResults]) -> dict[str, list[str]]:
    """The directories of ``runs`` by task (``classification``, ``regression``, or neither)."""
    by_task: dict[str, list[str]] = {}
    for r in runs:
        by_task.setdefault(r.task or "neither test_accuracy nor test_mse", []).append(
            str(r.directory))
    return by_task


def describe_tasks(by_task: dict[str, list[str]]) -> str:
    """``classification: a, b; regression: c`` (see :func:`runs_by_task`)."""
    return "; ".join(f"{task}: {', '.join(dirs)}" for task, dirs in by_task.items())


def default_metric(runs: Sequence[RunResults], metric: str | None = None) -> str:
    """The learning-curve metric: ``metric`` if given, else ``test_accuracy`` (classification) or
    ``test_mse`` (regression). Raises :class:`DataError` when a run lacks it, naming the runs."""
    if metric is None:
        by_task = runs_by_task(runs)
        if list(by_task) == ["classification"]:
            metric = "test_accuracy"
        elif list(by_task) == ["regression"]:
            metric = "test_mse"
        else:
            raise DataError(f"runs do not share a task ({describe_tasks(by_task)}); pass metric= "
                            "naming a column present in every run")
    missing = [str(r.directory) for r in runs if metric not in r.metrics]
    if missing:
        raise DataError(f"metric {metric!r} is missing from the {METRICS_FILE} of: {', '.join(missing)}")
    if any(r.metrics[metric].ndim != 1 for r in runs):
        raise ConfigError(f"metric {metric!r} is a per-layer list; choose a scalar column "
                          "(entropy and sparsity have their own figure)")
    return metric
