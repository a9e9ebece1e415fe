"""Sweeps: one run per point of the Cartesian product of the sweep axes, each in its own
directory inside the sweep directory, listed by the manifest ``sweep.json`` (each member's name,
point, directory, config, status and error), and the closing summary.

:meth:`Sweep.plan` lays out the members of a command line; an existing sweep directory must hold
the same members (so re-running the same ``coagents train`` continues the sweep), and anything
else there is refused. :meth:`Sweep.open` reads a sweep directory back (``coagents resume
SWEEP_DIR``). :meth:`Sweep.run` runs the members one after another: completed and diverged members
are kept, unfinished ones resumed, the others started; a member that raises a project error
(divergence, missing data) is recorded with its error and the sweep goes on; Ctrl-C (or SIGTERM)
stops it with no further member started. How one member runs is :meth:`Sweep.run_member`, the
place for other executors.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from async_coagents.errors import CoagentsError, ConfigError, DivergedError
from async_coagents.experiment import run as run_module
from async_coagents.experiment.config import validate
from async_coagents.experiment.rundir import write_json as _write_json

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

    def record(self) -> dict:
        """The member's entry in ``sweep.json``."""
        return {"name": self.name, "point": self.point, "directory": self.name,
                "status": self.status, "error": self.error, "config": self.config}


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
            members.append(Member(i, entry["name"], entry["point"], config,
                                  status if isinstance(status, str) else PENDING,
                                  entry.get("error") if isinstance(entry.get("error"), str)
                                  else None))
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
        for member in self.members:
            if self.stopped:
                break
            ran = self.run_member(member, progress=progress, data_dir=data_dir, address=address)
            self.save()
            if ran and report is not None:
                report(member)
            if member.status == INTERRUPTED:
                self.stopped = True
        return self

    def run_member(self, member: Member, *, progress: bool | None = None,
                   data_dir: str | None = None, address: str | None = None) -> bool:
        """Run (start or resume) one member, or keep it if it is finished; set its status, error
        and summary. Returns whether it ran."""
        target = self.directory(member)
        run_dir = run_module.RunDirectory(target)
        summary = run_dir.summary() if (target / "config.json").exists() else None
        if summary is not None and summary.get("status") in FINISHED:
            member.status, member.error, member.summary = summary["status"], summary.get(
                "error"), summary
            log.info("%s: already %s", target, member.status)
            return False
        try:
            if (target / "config.json").exists():
                member.summary = run_module.resume(target, progress=progress, address=address,
                                                   data_dir=data_dir)
            else:
                member.summary = run_module.train(validate(member.config), target,
                                                  progress=progress, data_dir=data_dir)
            member.status, member.error = member.summary["status"], None
        except DivergedError as exc:
            member.summary = run_dir.summary()
            member.status = DIVERGED
            member.error = (member.summary or {}).get("error") or str(exc)
        except CoagentsError as exc:
            member.status, member.error = FAILED, str(exc)
        except KeyboardInterrupt:  # a second Ctrl-C, or one before the run traps signals
            member.status, member.error = INTERRUPTED, None
        return True

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
        if (old.name, old.point, old.config) != (new.name, new.point, new.config):
            keys = sorted(_differences(old.config, new.config))
            differs = f" (differs in {', '.join(keys)})" if keys else ""
            raise ConfigError(f"{manifest} holds another sweep: its run {old.index} is "
                              f"{old.name}{differs}, this command's is {new.name}; "
                              "choose another --out")


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
