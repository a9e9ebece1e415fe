"""Sweeps: one run per point of the Cartesian product of the sweep axes, each in its own
directory inside the sweep directory, listed by the manifest ``sweep.json`` (each member's name,
point, directory, config, status, error and restarts), and the closing summary.

:meth:`Sweep.plan` lays out the members of a command line; an existing sweep directory must hold
the same members (so re-running the same ``coagents train`` continues the sweep), and anything
else there is refused. :meth:`Sweep.open` reads a sweep directory back (``coagents resume
SWEEP_DIR``).

Running: completed and diverged members are kept, unfinished ones resumed, the others started; a
member that raises a project error (divergence, missing data) is recorded with its error and the
sweep goes on; Ctrl-C (or SIGTERM) stops it with no further member started. How one member runs
is :func:`run_in` (train or resume its directory), the same in every executor:

- :meth:`Sweep.run`: in this process, one member after another (``sweep.executor = "local"``,
  ``--jobs 1``);
- :meth:`Sweep.run_parallel`: several at once in an :class:`Executor` (local worker processes,
  ``experiment/sweep_processes.py``; Ray tasks, ``experiment/sweep_ray.py``). Only this process
  writes ``sweep.json``, after each member ends. A member whose worker dies (killed, out of memory,
  its node removed) is resumed from its own last checkpoint, up to ``sweep.max_retries`` times,
  then marked failed; the others go on. Each Ctrl-C is passed on to the running members: the
  first stops them at their next batch boundary with a checkpoint written, a second at once (the
  last checkpoint stays), a third kills their workers.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from async_coagents.errors import CoagentsError, ConfigError, DivergedError
from async_coagents.experiment import run as run_module
from async_coagents.experiment.config import EXECUTION_SECTIONS, validate
from async_coagents.experiment.rundir import write_json as _write_json
from async_coagents.experiment.signals import StopRequest

MANIFEST = "sweep.json"
FORMAT = "async_coagents sweep"
#: Member statuses: never started, finished (completed or diverged), or to be continued.
PENDING, COMPLETED, DIVERGED, INTERRUPTED, FAILED = (
    "pending", "completed", "diverged", "interrupted", "failed")
FINISHED = (COMPLETED, DIVERGED)  # a rerun would give the same result: never run again
log = logging.getLogger(__name__)


@dataclass
class Member:
    """One run of a sweep: its directory is ``name`` inside the sweep directory."""

    index: int
    name: str
    point: dict
    config: dict
    status: str = PENDING
    error: str | None = None
    summary: dict | None = None  # the run's summary.json, once it ran
    restarts: int = 0  # times its worker died and it was resumed from its checkpoint

    def record(self) -> dict:
        """The member's entry in ``sweep.json``."""
        return {"name": self.name, "point": self.point, "directory": self.name,
                "status": self.status, "error": self.error, "restarts": self.restarts,
                "config": self.config}


@dataclass
class Outcome:
    """How one attempt at a member ended: its status, error and summary, and whether it ran (a
    finished member is kept, not run again)."""

    status: str
    error: str | None = None
    summary: dict | None = None
    ran: bool = True


@dataclass
class Died:
    """A member's worker ended without an outcome: ``reason`` in words (e.g. ``its worker process
    was killed by SIGKILL``)."""

    reason: str


def finished_outcome(target: Path) -> Outcome | None:
    """The outcome of the run in ``target`` if it is finished (completed or diverged), else None."""
    if not (target / "config.json").exists():
        return None
    summary = run_module.RunDirectory(target).summary()
    if summary is not None and summary.get("status") in FINISHED:
        return Outcome(summary["status"], summary.get("error"), summary, ran=False)
    return None


def run_in(target: Path, config: dict, *, progress: bool | None = None,
           data_dir: str | None = None, address: str | None = None) -> Outcome:
    """Run one member into its directory ``target``: keep it if it is finished, resume it if it
    started, else train ``config`` there. What every executor runs for a member."""
    target = Path(target)
    finished = finished_outcome(target)
    if finished is not None:
        log.info("%s: already %s", target, finished.status)
        return finished
    run_dir = run_module.RunDirectory(target)
    try:
        if (target / "config.json").exists():
            summary = run_module.resume(target, progress=progress, address=address,
                                        data_dir=data_dir)
        else:
            summary = run_module.train(validate(config), target, progress=progress,
                                       data_dir=data_dir)
        return Outcome(summary["status"], None, summary)
    except DivergedError as exc:
        summary = run_dir.summary()
        return Outcome(DIVERGED, (summary or {}).get("error") or str(exc), summary)
    except CoagentsError as exc:
        return Outcome(FAILED, str(exc))
    except KeyboardInterrupt:  # a second Ctrl-C, or one before the run traps signals
        return Outcome(INTERRUPTED)


def run_group_in(targets: list[Path], configs: list[dict], *, progress: bool | None = None,
                 data_dir: str | None = None, address: str | None = None) -> list[Outcome]:
    """Run a group of members that differ only in ``run.seed`` (:func:`pack`) as one replicated
    network (``experiment/replicated.py``), each into its own directory: train them when none
    has begun, resume them when all stopped at one update; one at a time (:func:`run_in`)
    otherwise. What every executor runs for a group."""
    from async_coagents.experiment.replicated import resume_replicas, train_replicas

    if len(targets) == 1:
        return [run_in(targets[0], configs[0], progress=progress, data_dir=data_dir,
                       address=address)]
    targets = [Path(t) for t in targets]
    begun = [(t / "config.json").exists() for t in targets]
    if any(begun) and not (all(begun) and len({_progress_of(t) for t in targets}) == 1):
        return [run_in(t, c, progress=progress, data_dir=data_dir, address=address)
                for t, c in zip(targets, configs, strict=True)]
    try:
        if all(begun):
            summaries = resume_replicas(targets, progress=progress, data_dir=data_dir)
        else:
            summaries = train_replicas([validate(c) for c in configs], targets,
                                       progress=progress, data_dir=data_dir)
    except CoagentsError as exc:
        return [Outcome(FAILED, str(exc)) for _ in targets]
    except KeyboardInterrupt:
        return [Outcome(INTERRUPTED) for _ in targets]
    return [Outcome(s["status"], s.get("error"), s) for s in summaries]


def _progress_of(target: Path) -> int | None:
    """The update a begun member stopped at, from its summary (None: unknown)."""
    summary = run_module.RunDirectory(target).summary()
    return None if summary is None else summary.get("updates")


def pack(members: list[Member], size: int, directory: Callable[[Member], Path]
         ) -> list[list[Member]]:
    """The members in order, in groups of up to ``size`` consecutive members that differ only in
    ``run.seed`` and stand at the same point (none begun, or all stopped at one update): each
    group trains as one replicated network. ``size`` 1: one member per group."""
    from async_coagents.experiment.replicated import same_but_seed

    groups: list[list[Member]] = []
    for member in members:
        last = groups[-1] if groups else None
        if (last is not None and len(last) < size
                and same_but_seed([last[0].config, member.config])
                and _point_of(directory(last[0])) == _point_of(directory(member))):
            last.append(member)
        else:
            groups.append([member])
    return groups


def _point_of(target: Path) -> tuple:
    if not (target / "config.json").exists():
        return ("new",)
    return ("begun", _progress_of(target))


@dataclass(frozen=True)
class Execution:
    """Where a sweep's members run (the ``[sweep]`` section, with the command line's flags):
    ``executor`` is ``local`` (in this process), ``processes`` or ``ray``; ``jobs`` members at once
    (0: one per CPU, or as many as the cluster holds)."""

    executor: str = "local"
    jobs: int = 0
    cpus_per_member: float = 1.0
    max_retries: int = 2
    address: str = ""

    @property
    def parallel(self) -> bool:
        return self.executor != "local"


def execution(section: dict, *, executor: str | None = None, jobs: int | None = None,
              address: str | None = None) -> Execution:
    """The execution of a sweep whose configs hold the ``[sweep]`` ``section``, overridden by the
    command line's ``--executor``, ``--jobs`` and ``--address`` (the cluster of a Ray executor;
    ignored by the others, for which it names the layer actors' cluster). ``local`` with more
    than one job is ``processes``; ``--jobs 1`` keeps ``local`` in this process; 0 jobs is the
    executor's own number (see the ``sweep.jobs`` key)."""
    kind = executor or section["executor"]
    jobs = section["jobs"] if jobs is None else jobs
    if jobs < 0:
        raise ConfigError(f"--jobs must be 1 or more (or 0: the executor's own number), got {jobs}")
    if kind == "local" and jobs > 1:
        kind = "processes"
    return Execution(kind, jobs, section["cpus_per_member"], section["max_retries"],
                     (address or section["address"]) if kind == "ray" else "")


class Executor(Protocol):
    """Runs members elsewhere (:meth:`Sweep.run_parallel` drives it), a group at a time (one
    member, or members packed as replicas, :func:`pack`). A handle is any hashable object naming
    one running group."""

    def slots(self) -> int:
        """How many groups may run at once now."""

    def start(self, group: list[Member], targets: list[Path]) -> object:
        """Start running ``group`` into ``targets`` (see :func:`run_group_in`); return its
        handle."""

    def wait(self, timeout_s: float) -> list[tuple[object, list[Outcome] | Outcome | Died]]:
        """The groups that ended within ``timeout_s`` (possibly none), with each member's
        outcome, or one for them all (how their worker died)."""

    def interrupt(self, level: int) -> None:
        """Pass the ``level``-th Ctrl-C on to every running member: 1 stops them at their next
        batch boundary, 2 at once, 3 or more kills their workers."""

    def close(self) -> None:
        """Release the executor's workers (and a Ray instance it started)."""


def member_name(name: str, index: int, point: dict) -> str:
    """The directory name of member ``index`` of a sweep of the experiment ``name`` at ``point``,
    e.g. ``quickstart-001-lr0.01``."""
    parts = [f"{key.split('.')[-1]}{value}" for key, value in point.items()]
    slug = re.sub(r"[^A-Za-z0-9_.=-]+", "", "-".join(parts))[:80]
    return f"{name}-{index:03d}-{slug}" if slug else f"{name}-{index:03d}"


def is_sweep(path: str | Path) -> bool:
    """Whether ``path`` is a sweep directory (it holds ``sweep.json``)."""
    return (Path(path) / MANIFEST).is_file()


class Sweep:
    """The members of one sweep and its directory (see the module docstring)."""

    def __init__(self, path: str | Path, members: list[Member]) -> None:
        self.path = Path(path)
        self.members = members
        self.stopped = False  # Ctrl-C: the members after the current one were not started

    # ---- layout -------------------------------------------------------------------------------
    @classmethod
    def plan(cls, path: str | Path, runs: list[tuple[dict, dict]]) -> Sweep:
        """The sweep of ``runs`` (``[(validated config, point), ...]``, as
        :func:`~async_coagents.experiment.config.load` returns them) in ``path``: new, or the
        same sweep already there (its members keep their status). Writes ``sweep.json``."""
        path = Path(path)
        members = [Member(i, member_name(config["name"], i, point), point, _plain(config))
                   for i, (config, point) in enumerate(runs)]
        if is_sweep(path):
            existing = cls.open(path)
            _check_same(path, existing.members, members)
            return existing
        if path.exists() and not path.is_dir():
            raise ConfigError(f"--out {path} is a file, not a directory for a sweep")
        if path.is_dir() and any(path.iterdir()):
            runs = sorted(p.name for p in path.iterdir() if (p / "config.json").is_file())
            hint = (f" (it holds runs, {', '.join(runs[:3])}{', ...' if len(runs) > 3 else ''}: "
                    "a sweep of an earlier version continues one run at a time with `coagents "
                    "resume RUN_DIR`)") if runs else ""
            raise ConfigError(f"{path} is not empty and holds no {MANIFEST}: it is not a sweep "
                              f"directory{hint}; choose another --out")
        sweep = cls(path, members)
        try:
            path.mkdir(parents=True, exist_ok=True)
            sweep.save()
        except OSError as exc:
            raise ConfigError(f"cannot create the sweep directory {path}: {exc.strerror}") from None
        return sweep

    @classmethod
    def open(cls, path: str | Path) -> Sweep:
        """The sweep in directory ``path``, read from its ``sweep.json``."""
        path = Path(path)
        manifest = path / MANIFEST
        try:
            raw = json.loads(manifest.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path} is not a sweep directory (no {MANIFEST})") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{manifest} cannot be read: {exc}") from None
        if not isinstance(raw, dict) or raw.get("format") != FORMAT or not isinstance(
                raw.get("members"), list):
            raise ConfigError(f"{manifest} is not an async_coagents sweep manifest")
        members = []
        for i, entry in enumerate(raw["members"]):
            where = f"{manifest}: members[{i}]"
            if not isinstance(entry, dict) or not all(
                    isinstance(entry.get(k), t) for k, t in (("name", str), ("point", dict),
                                                             ("config", dict))):
                raise ConfigError(f"{where} needs a name, a point and a config")
            if Path(entry["name"]).name != entry["name"] or entry["name"] in ("", ".", ".."):
                raise ConfigError(f"{where}: name {entry['name']!r} is not a directory name")
            config = _plain(validate(entry["config"], f"{where}.config"))
            status = entry.get("status", PENDING)
            restarts = entry.get("restarts", 0)
            members.append(Member(i, entry["name"], entry["point"], config,
                                  status if isinstance(status, str) else PENDING,
                                  entry.get("error") if isinstance(entry.get("error"), str)
                                  else None,
                                  restarts=restarts if type(restarts) is int and restarts >= 0
                                  else 0))
        return cls(path, members)

    def directory(self, member: Member) -> Path:
        return self.path / member.name

    def save(self) -> None:
        """Write ``sweep.json`` atomically."""
        _write_json(self.path / MANIFEST, {"format": FORMAT, "version": 1,
                                           "members": [m.record() for m in self.members]})

    # ---- running -----------------------------------------------------------------------------
    def run(self, *, progress: bool | None = None, data_dir: str | None = None,
            address: str | None = None, report: Callable[[Member], None] | None = None) -> Sweep:
        """Run every member that is not finished, in order, recording each status in
        ``sweep.json``; ``report`` is called after each member that ran. Stops (``stopped``) at
        Ctrl-C."""
        for group in self.groups(self.members):
            if self.stopped:
                break
            ran = self.run_group(group, progress=progress, data_dir=data_dir, address=address)
            self.save()
            for member, member_ran in zip(group, ran, strict=True):
                if member_ran and report is not None:
                    report(member)
                if member.status == INTERRUPTED:
                    self.stopped = True
        return self

    def groups(self, members: list[Member]) -> list[list[Member]]:
        """``members`` packed by ``sweep.replicas`` (:func:`pack`)."""
        size = members[0].config.get("sweep", {}).get("replicas", 1) if members else 1
        return pack(members, size, self.directory)

    def run_group(self, group: list[Member], *, progress: bool | None = None,
                  data_dir: str | None = None, address: str | None = None) -> list[bool]:
        """Run one group (:func:`run_group_in`) in this process; returns which members ran."""
        if len(group) == 1:
            return [self.run_member(group[0], progress=progress, data_dir=data_dir,
                                    address=address)]
        outcomes = run_group_in([self.directory(m) for m in group], [m.config for m in group],
                                progress=progress, data_dir=data_dir, address=address)
        for member, outcome in zip(group, outcomes, strict=True):
            self._settle(member, outcome)
        return [o.ran for o in outcomes]

    def run_member(self, member: Member, *, progress: bool | None = None,
                   data_dir: str | None = None, address: str | None = None) -> bool:
        """Run (start or resume) one member in this process, or keep it if it is finished; set its
        status, error and summary. Returns whether it ran."""
        outcome = run_in(self.directory(member), member.config, progress=progress,
                         data_dir=data_dir, address=address)
        self._settle(member, outcome)
        return outcome.ran

    @staticmethod
    def _settle(member: Member, outcome: Outcome) -> None:
        member.status, member.error = outcome.status, outcome.error
        if outcome.summary is not None or outcome.status in FINISHED:
            member.summary = outcome.summary

    def unfinished(self) -> list[Member]:
        """The members still to run; the finished ones get the status and summary of their
        run directory."""
        left = []
        for member in self.members:
            finished = finished_outcome(self.directory(member))
            if finished is None:
                left.append(member)
            else:
                self._settle(member, finished)
        return left

    def run_parallel(self, executor: Executor, *, max_retries: int = 2,
                     report: Callable[[Member], None] | None = None,
                     display: SweepDisplay | None = None) -> Sweep:
        """Run every member that is not finished in ``executor``, as many at once as it has
        slots, in order; see the module docstring for what happens when a worker dies and at
        Ctrl-C. ``report`` is called after each member that ran, ``display`` follows them all."""
        display = display or _NoDisplay()
        left = self.unfinished()
        display.begin(len(self.members), len(self.members) - len(left))
        queue = self.groups(left)
        running: dict[object, tuple[list[Member], float]] = {}
        deaths: Counter = Counter()  # this command's restarts, per member
        stop = StopRequest(escalate=False)
        forwarded = 0
        try:
            with stop.trapped():
                while queue or running:
                    if stop.signals > forwarded:  # each Ctrl-C reaches the running members once
                        forwarded = stop.signals
                        if running:
                            executor.interrupt(forwarded)
                    while not stop.requested and queue and len(running) < max(executor.slots(), 1):
                        group = queue.pop(0)
                        running[executor.start(group, [self.directory(m) for m in group])] = (
                            group, time.monotonic())
                        for member in group:
                            display.started(member)
                    if not running:
                        break  # stopped: the members still queued do not start
                    for handle, outcomes in executor.wait(0.25):
                        group, started = running.pop(handle)
                        seconds = time.monotonic() - started
                        if not isinstance(outcomes, list):  # one for all (e.g. its worker died)
                            outcomes = [outcomes] * len(group)
                        retry = [m for m, o in zip(group, outcomes, strict=True)
                                 if self._end(m, o, stop, deaths, max_retries)]
                        self.save()
                        if retry:  # resumed from their checkpoints, packed again
                            queue[:0] = self.groups(retry)
                        for member in group:
                            if member in retry:
                                display.restarted(member)
                                continue
                            display.finished(member, seconds)
                            if report is not None:
                                report(member)
                    display.refresh(len(queue), [time.monotonic() - t for _, t in running.values()],
                                    max(executor.slots(), 1))
        finally:
            display.close()
        self.stopped = stop.requested and any(m.status not in FINISHED for m in self.members)
        return self

    def _end(self, member: Member, outcome: Outcome | Died, stop: StopRequest, deaths: Counter,
             max_retries: int) -> bool:
        """Record how an attempt at ``member`` ended; True when it is to be resumed again."""
        if stop.requested and (isinstance(outcome, Died) or outcome.status == INTERRUPTED):
            if (self.directory(member) / "config.json").exists():  # else it never began: pending
                self._settle(member, outcome if isinstance(outcome, Outcome)
                             else Outcome(INTERRUPTED))
            return False
        if isinstance(outcome, Died):
            reason = outcome.reason
        elif outcome.status == INTERRUPTED:  # its worker was stopped, but not by this sweep
            reason = "its worker was stopped from outside the sweep"
        else:
            self._settle(member, outcome)
            return False
        deaths[member.index] += 1
        if deaths[member.index] <= max_retries:
            member.restarts += 1
            log.warning("%s: %s; resuming it from its last checkpoint (restart %d of at most %d)",
                        member.name, reason, deaths[member.index], max_retries)
            return True
        member.status = FAILED
        times = "once" if deaths[member.index] == 1 else f"{deaths[member.index]} times"
        member.error = (f"{reason} ({times} in this command, so it was not resumed again); its "
                        f"run directory keeps its last checkpoint: coagents resume {self.path} "
                        "tries again")
        return False

    # ---- outcome -----------------------------------------------------------------------------
    def counts(self) -> Counter:
        return Counter(m.status for m in self.members)

    def exit_code(self) -> int:
        """0 when every member completed, 130 when Ctrl-C stopped the sweep, else 1."""
        if self.stopped:
            return 130
        return 0 if all(m.status == COMPLETED for m in self.members) else 1

    def summary_lines(self) -> list[str]:
        """The closing summary: every member with its status and directory, then what to do."""
        counts = self.counts()
        order = (COMPLETED, DIVERGED, FAILED, INTERRUPTED, PENDING)
        tally = ", ".join(f"{counts[s]} {s}" for s in order if counts[s])
        lines = [f"sweep {self.path}: {len(self.members)} runs, {tally}"]
        width = max(len(s) for s in order)
        for member in self.members:
            point = " ".join(f"{k}={v}" for k, v in member.point.items())
            line = f"  {member.status:<{width}}  {point}  -> {self.directory(member)}"
            if member.restarts:
                times = "once" if member.restarts == 1 else f"{member.restarts} times"
                line += f"  (its worker died; resumed from its checkpoint {times})"
            if member.error and member.status != COMPLETED:  # its first line: said in full above
                line += f"\n  {'':<{width}}  {member.error.splitlines()[0]}"
            lines.append(line)
        if self.stopped:
            not_started = counts[PENDING]
            lines.append(f"the sweep stopped: {not_started} of its {len(self.members)} runs did "
                         "not start")
        if any(m.status not in FINISHED for m in self.members):
            lines.append(f"continue with: coagents resume {self.path}")
        return lines


class SweepDisplay(Protocol):
    """What :meth:`Sweep.run_parallel` tells a progress display
    (:class:`~async_coagents.experiment.progress.SweepProgress`)."""

    def begin(self, total: int, done: int) -> None: ...
    def started(self, member: Member) -> None: ...
    def restarted(self, member: Member) -> None: ...
    def finished(self, member: Member, seconds: float) -> None: ...
    def refresh(self, queued: int, running_s: list[float], slots: int) -> None: ...
    def close(self) -> None: ...


class _NoDisplay:
    def begin(self, total: int, done: int) -> None:
        pass

    def started(self, member: Member) -> None:
        pass

    def restarted(self, member: Member) -> None:
        pass

    def finished(self, member: Member, seconds: float) -> None:
        pass

    def refresh(self, queued: int, running_s: list[float], slots: int) -> None:
        pass

    def close(self) -> None:
        pass


def open_executor(execution: Execution, sweep: Sweep, *, data_dir: str | None = None,
                  address: str | None = None) -> Executor:
    """The executor of a parallel ``execution`` for ``sweep``; ``address`` moves Ray-backend
    members to another cluster as ``coagents resume --address`` does (local processes only: a
    Ray task's member joins the cluster its task runs in)."""
    if execution.executor == "ray":
        from async_coagents.experiment.sweep_ray import RayExecutor

        return RayExecutor(execution, sweep.path, data_dir=data_dir)
    from async_coagents.experiment.sweep_processes import ProcessExecutor

    return ProcessExecutor(execution.jobs, data_dir=data_dir, address=address)


def _plain(config: dict) -> dict:
    """``config`` as it reads back from JSON (what the manifest holds and compares)."""
    return json.loads(json.dumps(config))


def _check_same(path: Path, existing: list[Member], planned: list[Member]) -> None:
    """An existing sweep directory must hold exactly the planned members."""
    manifest = path / MANIFEST
    if len(existing) != len(planned):
        raise ConfigError(f"{manifest} holds another sweep ({len(existing)} runs, this command "
                          f"has {len(planned)}); choose another --out")
    for old, new in zip(existing, planned, strict=True):
        if (old.name, old.point, _what(old.config)) != (new.name, new.point, _what(new.config)):
            keys = sorted(_differences(_what(old.config), _what(new.config)))
            differs = f" (differs in {', '.join(keys)})" if keys else ""
            raise ConfigError(f"{manifest} holds another sweep: its run {old.index} is "
                              f"{old.name}{differs}, this command's is {new.name}; "
                              "choose another --out")


def _what(config: dict) -> dict:
    """What a member computes: its config without the sections that say where it runs."""
    return {k: v for k, v in config.items() if k not in EXECUTION_SECTIONS}


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two configs."""
    keys = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            keys.append(f"{prefix}{key}")
    return keys
