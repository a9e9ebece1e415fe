"""The run directory: which files it holds, creating it (new, unique, never into someone else's
directory), the lock held while a process trains or resumes it, and reading its files back
(config, metrics, summary, the checkpoint checked against the config).

A run directory holds ``config.json``, ``metrics.jsonl``, ``summary.json``, ``checkpoint.ckpt``
and ``.lock``; ``coagents plot`` may add ``plots/`` and Ray agents ``agents/``. Every file is
written through a temporary file unique to its writer, then renamed over the old one.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from async_coagents.checkpoint import load_checkpoint
from async_coagents.errors import CheckpointError, ConfigError, DataError
from async_coagents.experiment.config import EXECUTION_SECTIONS, validate
from async_coagents.experiment.run_schema import check_run_state

CONFIG, METRICS, SUMMARY, CHECKPOINT = "config.json", "metrics.jsonl", "summary.json", "checkpoint.ckpt"
LOCK = ".lock"
#: Everything a run directory of this project may hold (``plots``: `coagents plot`; ``agents``:
#: the Ray agents' own checkpoints).
RUN_ENTRIES = frozenset({CONFIG, METRICS, SUMMARY, CHECKPOINT, LOCK, "plots", "agents"})
#: Temporary files of our writers (left behind only by a process killed mid-write).
_TEMP_RE = re.compile(r"\.(config\.json|metrics\.jsonl|summary\.json|checkpoint\.ckpt)\..+\.tmp")
log = logging.getLogger(__name__)


def experiment(config: dict) -> dict:
    """What a checkpoint must match: the config without where it runs (``backend.address``, the
    ``[sweep]`` section) and when it counts as diverged (``run.diverge_factor``): none changes a
    number."""
    return {**{k: v for k, v in config.items() if k not in EXECUTION_SECTIONS},
            "run": {k: v for k, v in config.get("run", {}).items() if k != "diverge_factor"},
            "backend": {k: v for k, v in config.get("backend", {}).items() if k != "address"}}


def write_text(path: Path, text: str) -> None:
    """Write ``text`` atomically: a temporary file unique to this writer, then a rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise


def write_json(path: Path, obj: dict) -> None:
    """Write JSON atomically (see :func:`write_text`)."""
    write_text(path, json.dumps(obj, indent=2, allow_nan=True) + "\n")


def new_directory(parent: str | Path, stem: str) -> Path:
    """Create and return a new empty directory ``parent/stem`` (``stem-2``, ``stem-3``, ... when
    that name is taken): two processes asking at the same moment get two directories."""
    parent = Path(parent)
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the directory {parent}: {exc.strerror or exc}") from None
    for attempt in range(1, 10_000):
        path = parent / (stem if attempt == 1 else f"{stem}-{attempt}")
        try:
            path.mkdir()  # atomic: exactly one process creates a given name
            return path
        except FileExistsError:
            continue
        except OSError as exc:
            raise ConfigError(f"cannot create the run directory {path}: "
                              f"{exc.strerror or exc}") from None
    raise ConfigError(f"{parent} already holds 9999 directories named {stem}-N")


class RunDirectory:
    """The files of one run."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    # ---- creating ---------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, config: dict) -> RunDirectory:
        """A new run of ``config`` in ``path``, which must be missing or an empty directory."""
        run = cls(path)
        run.check_target()
        run.make()
        run.start(config)
        return run

    def check_target(self) -> None:
        """Refuse a ``path`` that a new run must not write into: a file, a run of this project
        (resume it instead), or a non-empty directory that is not a run of this project."""
        path = self.path
        if not path.exists():
            if path.is_symlink():
                raise ConfigError(f"--out {path} is a dangling symbolic link")
            return
        if not path.is_dir():
            raise ConfigError(f"--out {path} exists and is not a directory; choose another --out")
        try:
            entries = sorted(entry.name for entry in path.iterdir())
        except OSError as exc:
            raise ConfigError(f"cannot read the directory {path}: {exc.strerror or exc}") from None
        if not entries or entries == [LOCK]:
            return
        reason = self.foreign_reason(entries)
        if reason is None:
            raise ConfigError(f"{path} already holds a run; use `coagents resume {path}` "
                              "or choose another --out")
        raise ConfigError(f"{path} is not empty and is not a run directory of async_coagents "
                          f"({reason}); nothing was written: choose a new or empty directory "
                          "for --out")

    def foreign_reason(self, entries: list[str]) -> str | None:
        """Why a directory holding ``entries`` is not a run of this project (None: it is one)."""
        if CONFIG not in entries:
            shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
            return f"it has no {CONFIG} and holds {shown}"
        others = [e for e in entries if e not in RUN_ENTRIES and not _TEMP_RE.fullmatch(e)]
        if others:
            shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
            return f"it holds files a run does not write: {shown}"
        try:
            self.config()
        except ConfigError as exc:
            return f"its {CONFIG} is not a config of this project: {exc}"
        return None

    def make(self) -> bool:
        """Create the directory (and its parents); True if this call created it."""
        try:
            self.path.mkdir(parents=True)
            return True
        except FileExistsError:
            if self.path.is_dir():
                return False
            raise ConfigError(f"--out {self.path} exists and is not a directory; choose another "
                              "--out") from None
        except OSError as exc:
            raise ConfigError(f"cannot create the run directory {self.path}: "
                              f"{exc.strerror or exc}") from None

    def start(self, config: dict) -> None:
        """Write the run's first files: its config and an empty metrics file."""
        try:
            write_json(self.path / CONFIG, config)
            write_text(self.path / METRICS, "")
        except OSError as exc:
            with suppress(OSError):
                (self.path / CONFIG).unlink()
            raise ConfigError(f"cannot write in the run directory {self.path}: "
                              f"{exc.strerror or exc}") from None

    def discard(self, created: bool) -> None:
        """Undo a run that never started: remove what it made (its lock file, the empty
        ``agents`` folder of Ray, and the directory itself if ``created``)."""
        with suppress(OSError):
            (self.path / LOCK).unlink()
        with suppress(OSError):
            (self.path / "agents").rmdir()
        if created:
            with suppress(OSError):
                self.path.rmdir()

    # ---- locking ----------------------------------------------------------------------------
    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run's lock (``fcntl.flock`` on ``.lock``, with this process's pid in it): a
        second process that tries to train or resume the run fails at once, naming the holder."""
        path = self.path / LOCK
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ConfigError(f"cannot write in the run directory {self.path}: "
                              f"{exc.strerror or exc}") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise ConfigError(f"cannot lock the run directory {self.path}: "
                                      f"{exc.strerror or exc}") from None
                holder = os.pread(fd, 32, 0).decode("ascii", errors="replace").strip()
                who = f"process {holder}" if holder.isdigit() else "another process"
                raise ConfigError(f"{self.path} is in use: {who} is training or resuming it "
                                  f"(it holds {path}); wait for it to end or stop it") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
            try:
                yield
            finally:
                with suppress(OSError):
                    os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # releases the lock

    def wait_unlocked(self, timeout_s: float, poll_s: float = 0.1) -> bool:
        """Wait up to ``timeout_s`` for no process to hold the run's lock (the worker of an earlier
        attempt that is still exiting); True when it is free. Creates nothing."""
        path = self.path / LOCK
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fd = os.open(path, os.O_RDWR)
            except OSError:  # no lock file (or none to open): nobody holds it
                return True
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    return True  # cannot tell: lock() itself reports the problem
            finally:
                os.close(fd)  # releases it
            if time.monotonic() >= deadline:
                return False
            time.sleep(poll_s)

    # ---- reading and writing ----------------------------------------------------------------
    def config(self) -> dict:
        path = self.path / CONFIG
        if not path.is_file():
            raise ConfigError(f"{self.path} is not a run directory (no {CONFIG})")
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path} is not valid JSON: {exc}") from None
        return validate(raw, str(path))

    def append_metrics(self, row: dict) -> None:
        with open(self.path / METRICS, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")

    def metrics(self) -> list[dict]:
        """The evaluations written so far; a partial last line (what a killed process or a full
        disk leaves) is left out (:meth:`keep_metrics_until` removes it from the file)."""
        return [row for _, row in self.read_metrics()[0]]

    def read_metrics(self) -> tuple[list[tuple[int, dict]], int | None]:
        """The evaluation rows with their line numbers, and the number of a partial last line
        that was left out (None when there is none). A line before the last that is not an
        evaluation row is a :class:`CheckpointError` naming the file and the line."""
        path = self.path / METRICS
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return [], False
        except (OSError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"cannot read {path}: {exc}") from None
        lines = text.split("\n")  # the last item is "" when the file ends with a newline
        rows, partial = [], None
        for number, line in enumerate(lines, 1):
            if not line:
                continue
            try:
                row = json.loads(line)
            except ValueError:  # JSONDecodeError, or a number too long to convert
                row = None
            if not isinstance(row, dict) or not isinstance(row.get("step"), int):
                if number == len(lines):  # no newline after it: a write that never finished
                    partial = number
                    continue
                raise CheckpointError(f"{path}, line {number}: not an evaluation row: "
                                      f"{line[:60]!r}")
            rows.append((number, row))
        return rows, partial

    def keep_metrics_until(self, step: int) -> None:
        """Drop the evaluations after ``step`` (a resumed run produces them again) and a partial
        last line, saying so."""
        numbered, partial = self.read_metrics()
        rows = [row for _, row in numbered]
        if partial is not None:
            log.warning("%s: dropped a partial last line (the run was killed while writing it)",
                        self.path / METRICS)
        kept = [row for row in rows if row["step"] <= step]
        write_text(self.path / METRICS, "".join(json.dumps(row) + "\n" for row in kept))

    def write_summary(self, summary: dict) -> None:
        write_json(self.path / SUMMARY, summary)

    def summary(self) -> dict | None:
        """The run's summary, or None while it has none (or an unreadable one: resume rewrites
        it)."""
        try:
            summary = json.loads((self.path / SUMMARY).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None
        return summary if isinstance(summary, dict) else None

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT

    def read_checkpoint(self, config: dict, *, progress: type,
                        updates_total: int | None = None) -> dict:
        """The run's checkpoint, checked once for everything resume and eval rely on: its
        structure (:func:`~async_coagents.experiment.run_schema.check_run_state`, ``progress``
        the dataclass of its counters), that the run's ``config`` wrote it, and that its progress
        lies within the run's ``updates_total`` updates (when given)."""
        state = load_checkpoint(self.checkpoint, kind="run")
        check_run_state(state, str(self.checkpoint), progress)
        try:  # defaults filled in: a key added since the checkpoint was written is not a mismatch
            written_by = validate(state["config"], f"{self.checkpoint}: entry config")
        except ConfigError as exc:
            raise CheckpointError(str(exc)) from None
        if experiment(written_by) != experiment(config):
            raise CheckpointError(f"{self.checkpoint} was written by another config than "
                                  f"{self.path / CONFIG} (another run's checkpoint?)")
        updates = state["progress"]["updates"]
        if updates_total is not None and updates > updates_total:
            raise CheckpointError(f"{self.checkpoint}: entry progress.updates = {updates} "
                                  f"exceeds the run's {updates_total} updates")
        return state

    @contextmanager
    def restoring(self) -> Iterator[None]:
        """Name the checkpoint in the errors of the objects that restore their state from it."""
        try:
            yield
        except (CheckpointError, DataError) as exc:
            raise CheckpointError(f"{self.checkpoint}: {exc}") from None
