"""The compact results of a study: per arm, one row per seed of final values and areas under the
curves (``runs.csv``), the seeds' curves (``curves.csv``, thinned where a study says so), and
the arm's configuration (``config.json``); per study, ``study.json``: the budget and the wall time
of every session that ran it. They are small enough to commit (``docs/results/NAME``), the
report is written from them alone, and a study that outlives a session resumes from them: an
arm's seed with a row here is not run again.

Finals and areas come from the full curve of each run directory, through the same
:class:`~async_coagents.experiment.results.Group` arithmetic as ``coagents table``.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from async_coagents.errors import DataError
from async_coagents.experiment.results import Group, load_runs
from async_coagents.experiment.rundir import write_json, write_text
from async_coagents.study.spec import Arm

__all__ = ["ArmData", "StudyData", "read_study", "record_run", "recorded_seeds"]

RUNS = "runs.csv"
CURVES = "curves.csv"
CONFIG = "config.json"
STUDY = "study.json"


@dataclass
class ArmData:
    """One arm's compact results: ``seeds (n,)``, per scalar metric ``final[m]`` and ``auc[m]``
    ``(n,)``, ``updates`` and ``wall_s`` per seed, and the curves at the ``steps (T,)`` common to
    every seed, ``curves[column] (n, T)`` (a per-layer metric as ``entropy_0``, ...). Only
    completed seeds count; ``diverged`` lists the seeds that diverged."""

    arm: Arm
    config: dict
    seeds: np.ndarray
    final: dict[str, np.ndarray]
    auc: dict[str, np.ndarray]
    updates: np.ndarray
    wall_s: np.ndarray
    steps: np.ndarray
    curves: dict[str, np.ndarray]
    diverged: list[int] = field(default_factory=list)

    @classmethod
    def empty(cls, arm: Arm, diverged: list[int]) -> ArmData:
        """An arm whose every recorded seed diverged."""
        nothing = np.zeros(0)
        return cls(arm, {}, nothing.astype(np.int64), {}, {}, nothing, nothing,
                   nothing.astype(np.int64), {}, diverged)

    @property
    def n(self) -> int:
        return len(self.seeds)

    def layers(self, metric: str) -> list[str]:
        """The per-layer columns of ``metric`` (``entropy`` -> ``entropy_0``, ...), in order."""
        return [c for c in _layer_columns(metric, self.curves)]


@dataclass
class StudyData:
    """The compact results of a study: its arms' data (arms without any seed left out) and its
    ``study.json``."""

    arms: dict[str, ArmData]
    meta: dict = field(default_factory=dict)

    def get(self, name: str) -> ArmData | None:
        return self.arms.get(name)


def recorded_seeds(results: Path, arm: str) -> set[int]:
    """The seeds of ``arm`` that have a row in ``results``."""
    return {int(row["seed"]) for row in _read_csv(results / arm / RUNS)}


def record_run(results: Path, arm: Arm, run_dir: Path, metrics: tuple[str, ...], *,
               curve_every: int = 1, curve_metrics: tuple[str, ...] | None = None,
               status: str = "completed") -> None:
    """Add (or replace) the row and curve of the completed run in ``run_dir``, a seed of ``arm``,
    to ``results``; the finals and areas of the scalar columns among ``metrics``, the curves of
    every column of ``curve_metrics`` (default ``metrics``) the run logs. A diverged run
    (``status``) is recorded with its curve up to where it stopped and no finals, so that it is
    not run again and the report can count it."""
    run = load_runs([run_dir])[0]
    seed = run.seed
    if seed is None:
        raise DataError(f"{run_dir}: its config has no run.seed")
    group = Group(label=arm.name, runs=(run,), steps=run.steps)
    row: dict[str, object] = {"seed": seed, "status": status, "updates": int(run.steps[-1]),
                              "wall_s": _last(run.metrics.get("wall_s"))}
    columns: dict[str, np.ndarray] = {}
    for metric in metrics:
        values = run.metrics.get(metric)
        if values is None:
            continue
        if values.ndim == 1:
            completed = status == "completed"
            row[f"{metric}_final"] = float(group.final(metric)[0]) if completed else math.nan
            row[f"{metric}_auc"] = float(group.auc(metric)[0]) if completed else math.nan
            if curve_metrics is None or metric in curve_metrics:
                columns[metric] = values
        elif curve_metrics is None or metric in curve_metrics:
            for layer in range(values.shape[1]):
                columns[f"{metric}_{layer}"] = values[:, layer]
    keep = np.arange(0, len(run.steps), max(1, curve_every))
    if keep[-1] != len(run.steps) - 1:
        keep = np.append(keep, len(run.steps) - 1)
    directory = results / arm.name
    directory.mkdir(parents=True, exist_ok=True)
    if not (directory / CONFIG).exists():
        write_json(directory / CONFIG, run.config)
    rows = [r for r in _read_csv(directory / RUNS) if int(r["seed"]) != seed] + [row]
    _write_csv(directory / RUNS, sorted(rows, key=lambda r: int(r["seed"])), _number)
    curve_rows = [r for r in _read_csv(directory / CURVES) if int(r["seed"]) != seed]
    curve_rows += [{"seed": seed, "step": int(run.steps[i]),
                    **{c: float(v[i]) for c, v in columns.items()}} for i in keep]
    _write_csv(directory / CURVES, sorted(curve_rows, key=lambda r: (int(r["seed"]),
                                                                     int(r["step"]))), _short)


def read_study(results: Path, arms: list[Arm]) -> StudyData:
    """The compact results of ``arms`` in ``results`` (arms with no recorded seed are absent)."""
    data = {}
    for arm in arms:
        directory = results / arm.name
        everything = _read_csv(directory / RUNS)
        rows = [r for r in everything if r.get("status", "completed") == "completed"]
        stopped = sorted(int(r["seed"]) for r in everything if r not in rows)
        if not rows:
            if stopped:
                data[arm.name] = ArmData.empty(arm, stopped)
            continue
        seeds = np.array([int(r["seed"]) for r in rows])
        final = {k[:-6]: _column(rows, k) for k in rows[0] if k.endswith("_final")}
        auc = {k[:-4]: _column(rows, k) for k in rows[0] if k.endswith("_auc")}
        curve_rows = _read_csv(directory / CURVES)
        steps, curves = _curves(curve_rows, seeds, directory)
        config = json.loads((directory / CONFIG).read_text(encoding="utf-8"))
        data[arm.name] = ArmData(arm, config, seeds, final, auc, _column(rows, "updates"),
                                 _column(rows, "wall_s"), steps, curves, diverged=stopped)
    meta_path = results / STUDY
    meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.exists() else {}
    return StudyData(data, meta)


def _curves(rows: list[dict], seeds: np.ndarray, where: Path) -> tuple[np.ndarray,
                                                                      dict[str, np.ndarray]]:
    """The steps common to every seed and each column's ``(n, T)`` values there."""
    by_seed: dict[int, list[dict]] = {}
    for r in rows:
        by_seed.setdefault(int(r["seed"]), []).append(r)
    missing = [int(s) for s in seeds if int(s) not in by_seed]
    if missing:
        raise DataError(f"{where / CURVES}: no curve for seed(s) {missing} of {where / RUNS}")
    common = None
    for s in seeds:
        steps = {int(r["step"]) for r in by_seed[int(s)]}
        common = steps if common is None else common & steps
    steps = np.array(sorted(common or ()), dtype=np.int64)
    columns = [k for k in (rows[0] if rows else {}) if k not in ("seed", "step")]
    curves = {}
    for column in columns:
        table = np.full((len(seeds), len(steps)), np.nan)
        for i, s in enumerate(seeds):
            at = {int(r["step"]): r[column] for r in by_seed[int(s)]}
            table[i] = [_float(at[int(t)]) for t in steps]
        curves[column] = table
    return steps, curves


def _layer_columns(metric: str, curves: dict) -> list[str]:
    prefix = f"{metric}_"
    return sorted((c for c in curves if c.startswith(prefix) and c[len(prefix):].isdigit()),
                  key=lambda c: int(c[len(prefix):]))


def _column(rows: list[dict], key: str) -> np.ndarray:
    return np.array([_float(r.get(key, "")) for r in rows], dtype=np.float64)


def _float(text: str | None) -> float:
    return float(text) if text not in (None, "") else math.nan


def _last(values: np.ndarray | None) -> float:
    return float(values[-1]) if values is not None and len(values) else math.nan


def _number(value: object) -> str:
    if isinstance(value, float):
        return "" if not math.isfinite(value) else repr(value)
    return str(value)


def _short(value: object) -> str:
    if isinstance(value, float):
        return "" if not math.isfinite(value) else f"{value:.6g}"
    return str(value)


def _read_csv(path: Path) -> list[dict]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        rows = list(csv.DictReader(io.StringIO(text)))
        if rows and "seed" not in rows[0]:
            raise ValueError("no seed column")
        for r in rows:
            int(r["seed"])
    except (csv.Error, ValueError, TypeError) as exc:
        raise DataError(f"{path} is not a compact results file of a study: {exc}") from None
    return rows


def _write_csv(path: Path, rows: list[dict], show) -> None:
    head = list(dict.fromkeys(k for r in rows for k in r))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(head)
    for r in rows:
        writer.writerow([show(r[k]) if k in r else "" for k in head])
    write_text(path, out.getvalue())
