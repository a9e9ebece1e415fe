"""Running a study (``coagents study NAME``): lay out the runs its budget asks for that the
compact results do not hold yet, run them as one sweep (locally, in worker processes, or on a Ray
cluster: whatever executor the caller passes), record each finished run in the compact results,
account the session's wall time, and write the report.

Layout of ``--out DIR``: ``study.json`` (the study, budget and seeds it was started with; a later
command must ask for the same), ``runs/session-K/`` (the sweep of session K: one run directory
per arm and seed, resumable), and the compact results (``DIR/results`` unless ``--results``
names another directory, such as the committed ``docs/results/NAME``). A seed already in the
compact results is never run again, so a study longer than one session, or one machine, resumes
from what was committed.
"""

from __future__ import annotations

import datetime
import fnmatch
import json
import time
from collections.abc import Callable
from pathlib import Path

from async_coagents.data.datasets import IDX_DATASETS
from async_coagents.errors import ConfigError
from async_coagents.experiment import config as cfg
from async_coagents.experiment.rundir import write_json
from async_coagents.experiment.sweep import COMPLETED, DIVERGED, Sweep, is_sweep
from async_coagents.study import compact
from async_coagents.study.spec import Arm, Budget, Study

__all__ = ["StudyPlan", "run_study"]

RUNS = "runs"


class StudyPlan:
    """A study at a budget with ``seeds`` seeds per arm, its output directory and its compact
    results; ``only`` (shell patterns of arm names) restricts what runs, not what is reported;
    ``dataset`` (an IDX dataset, e.g. ``mnist``) replaces the image dataset of every arm that
    trains on one (the shipped studies train on Fashion-MNIST, the paper on MNIST)."""

    def __init__(self, study: Study, budget: Budget, out: str | Path, *,
                 results: str | Path | None = None, seeds: int | None = None,
                 only: list[str] | None = None, dataset: str | None = None) -> None:
        if seeds is not None and seeds < 1:
            raise ConfigError(f"--seeds must be >= 1, got {seeds}")
        if dataset is not None and dataset not in IDX_DATASETS:
            raise ConfigError(f"--dataset must be one of {', '.join(IDX_DATASETS)} (the image "
                              f"datasets a study's arms can train on), got {dataset!r}")
        self.dataset = dataset
        self.study, self.budget = study, budget
        self.seeds = budget.seeds if seeds is None else seeds
        self.out = Path(out)
        self.results = Path(results) if results is not None else self.out / "results"
        self.arms = study.arms(budget)
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise ConfigError(f"study {study.name}: arm names repeat: {names}")
        self.by_run_name = {self.run_name(a): a for a in self.arms}
        if dataset is not None and not any(shipped_dataset(a) in IDX_DATASETS
                                           for a in self.arms):
            raise ConfigError(f"--dataset {dataset}: no arm of study {study.name} trains on an "
                              "image dataset")
        self.only = list(only or [])
        unmatched = [p for p in self.only if not any(fnmatch.fnmatchcase(n, p) for n in names)]
        if unmatched:
            raise ConfigError(f"--arms {', '.join(unmatched)} matches no arm of study "
                              f"{study.name}; its arms: {', '.join(names)}")

    def run_name(self, arm: Arm) -> str:
        """The experiment name of ``arm``'s runs (their directories are named after it)."""
        return f"{self.study.name}-{arm.name}"

    def missing(self) -> list[tuple[Arm, list[int]]]:
        """Per arm (those ``--arms`` chose, if given), the seeds the compact results lack."""
        wanted = range(self.seeds)
        left = []
        for arm in self.arms:
            if self.only and not any(fnmatch.fnmatchcase(arm.name, p) for p in self.only):
                continue
            have = compact.recorded_seeds(self.results, arm.name)
            seeds = [s for s in wanted if s not in have]
            if seeds:
                left.append((arm, seeds))
        return left

    def runs(self, missing: list[tuple[Arm, list[int]]]) -> list[tuple[dict, dict]]:
        """The validated configs of the missing runs (``[(config, point), ...]``)."""
        runs = []
        for arm, seeds in missing:
            overrides = {**arm.settings, **self.budget.settings, "run.seed": str(seeds)}
            if self.study.replicas > 1:
                overrides["sweep.replicas"] = self.study.replicas
            try:
                loaded = cfg.load(arm.config, [f"{k}={v}" for k, v in overrides.items()])
                if self.dataset is not None and loaded[0][0]["data"]["dataset"] in IDX_DATASETS:
                    overrides["data.dataset"] = f'"{self.dataset}"'
                    loaded = cfg.load(arm.config, [f"{k}={v}" for k, v in overrides.items()])
            except ConfigError as exc:
                raise ConfigError(f"study {self.study.name}, arm {arm.name}: {exc}") from None
            runs += [({**config, "name": self.run_name(arm)}, point) for config, point in loaded]
        return runs

    # ---- the study directory ------------------------------------------------------------------
    def check_out(self) -> None:
        """Create ``out`` with its ``study.json``, or check that the one there is this study at
        this budget (the number of seeds may grow from one command to the next: each seed is a
        run of its own)."""
        manifest = self.out / "study.json"
        mine = {"study": self.study.name, "budget": self.budget.name, "dataset": self.dataset}
        if manifest.exists():
            try:
                theirs = json.loads(manifest.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise ConfigError(f"{manifest} cannot be read: {exc}") from None
            if {k: theirs.get(k) for k in mine} != mine:
                raise ConfigError(
                    f"{self.out} holds study {theirs.get('study')!r} at budget "
                    f"{theirs.get('budget')!r} (dataset "
                    f"{theirs.get('dataset') or 'as shipped'}), "
                    f"not {mine['study']!r} at {mine['budget']!r} (dataset "
                    f"{self.dataset or 'as shipped'}): choose another --out")
            return
        if self.out.exists() and any(self.out.iterdir()):
            raise ConfigError(f"{self.out} is not empty and is not a study directory (no "
                              "study.json): choose another --out")
        self.out.mkdir(parents=True, exist_ok=True)
        write_json(manifest, mine)

    def check_results(self) -> None:
        """Refuse compact results of another budget (their runs have other lengths), or whose
        image arms ran on another dataset than this plan's would (a study on MNIST keeps its own
        ``--results``, apart from the Fashion-MNIST one)."""
        path = self.results / compact.STUDY
        if path.exists():
            try:
                recorded = json.loads(path.read_text(encoding="utf-8")).get("budget")
            except (OSError, ValueError, AttributeError) as exc:
                raise ConfigError(f"{path} cannot be read: {exc}") from None
            if recorded not in (None, self.budget.name):
                raise ConfigError(f"{self.results} holds the runs of budget {recorded!r}, not "
                                  f"{self.budget.name!r}: give each budget its own --results")
        for arm in self.arms:
            path = self.results / arm.name / compact.CONFIG
            if not path.exists():
                continue
            try:
                recorded = json.loads(path.read_text(encoding="utf-8"))["data"]["dataset"]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise ConfigError(f"{path} cannot be read: {exc}") from None
            if recorded not in IDX_DATASETS:
                continue
            wanted = self.dataset or shipped_dataset(arm)
            if recorded != wanted:
                raise ConfigError(f"{self.results} holds arm {arm.name} run on {recorded}, not "
                                  f"{wanted}: give each dataset's study its own --results")

    def sessions(self) -> list[Sweep]:
        """The sweeps of earlier sessions in this study directory, oldest first."""
        root = self.out / RUNS
        found = sorted((p for p in root.glob("session-*") if is_sweep(p)),
                       key=lambda p: int(p.name.split("-")[-1]) if p.name.split("-")[-1]
                       .isdigit() else 0)
        return [Sweep.open(p) for p in found]

    def harvest(self, sweeps: list[Sweep]) -> int:
        """Record every finished run of ``sweeps`` that the compact results lack; the count."""
        added = 0
        for sweep in sweeps:
            sweep.unfinished()  # refreshes the statuses of members finished by a worker
            for member in sweep.members:
                arm = self.by_run_name.get(member.config.get("name", ""))
                if arm is None or member.status not in (COMPLETED, DIVERGED):
                    continue
                seed = member.config["run"]["seed"]
                if seed in compact.recorded_seeds(self.results, arm.name):
                    continue
                compact.record_run(self.results, arm, sweep.directory(member),
                                   self.study.metrics, curve_every=self.study.curve_every,
                                   curve_metrics=self.study.curve_metrics,
                                   status=member.status)
                added += 1
        return added

    def sweep_for(self, missing: list[tuple[Arm, list[int]]], sweeps: list[Sweep]) -> Sweep:
        """The sweep that runs ``missing``: the last session's, if it holds them all and
        nothing else unfinished (an interrupted session goes on), else a new session's."""
        wanted = {(self.run_name(arm), s) for arm, seeds in missing for s in seeds}
        if sweeps:
            last = sweeps[-1]
            unfinished = {(m.config["name"], m.config["run"]["seed"]) for m in last.unfinished()}
            members = {(m.config["name"], m.config["run"]["seed"]) for m in last.members}
            if unfinished == wanted or (wanted <= members and unfinished <= wanted):
                return last
        number = len(sweeps) + 1
        return Sweep.plan(self.out / RUNS / f"session-{number}", self.runs(missing))

    def account(self, seconds: float, runs: int, executor: str) -> None:
        """Add this session's wall time to the study's ``study.json`` in the compact results."""
        path = self.results / compact.STUDY
        meta = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        meta.update({"study": self.study.name, "budget": self.budget.name, "seeds": self.seeds})
        meta.setdefault("sessions", []).append({
            "date": datetime.date.today().isoformat(), "wall_s": round(seconds, 1),
            "runs_recorded": runs, "executor": executor})
        self.results.mkdir(parents=True, exist_ok=True)
        write_json(path, meta)


def shipped_dataset(arm: Arm) -> str:
    """The dataset ``arm`` trains on as the study ships it."""
    config = cfg.load(arm.config, [f"{k}={v}" for k, v in arm.settings.items()])[0][0]
    return config["data"]["dataset"]


def run_study(plan: StudyPlan, run_sweep: Callable[[Sweep], int], *, executor: str = "local",
              say: Callable[[str], None] = print) -> int:
    """Run what ``plan`` lacks with ``run_sweep`` (returns the sweep's exit code), record it and
    write the report; returns the exit code (0 when every run the budget asks for is recorded)."""
    from async_coagents.study.report import write_report

    plan.check_out()
    plan.check_results()
    sweeps = plan.sessions()
    plan.harvest(sweeps)
    missing = plan.missing()
    code = 0
    if missing:
        sweep = plan.sweep_for(missing, sweeps)
        runs = sum(len(s) for _, s in missing)
        say(f"study {plan.study.name} (budget {plan.budget.name}, {plan.seeds} seed(s) per arm): "
            f"{runs} run(s) to go in {sweep.path}")
        started = time.perf_counter()
        try:
            code = run_sweep(sweep)
        finally:
            seconds = time.perf_counter() - started
            recorded = plan.harvest([sweep])
            plan.account(seconds, recorded, executor)
    else:
        say(f"study {plan.study.name}: every run of budget {plan.budget.name} is recorded in "
            f"{plan.results}")
    report = write_report(plan)
    say(f"report: {report}")
    left = plan.missing()
    if left and code == 0:
        code = 1
    return code
