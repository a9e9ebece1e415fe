"""Replaying a free-running run (``coagents replay RUN_DIR``): the same config, its recorded
message order sent again deterministically (``backends/free_running.py``), into a new run
directory; and the comparisons that say whether two runs ended the same (final weights bit for
bit, every metrics row but the timings), which the demo uses too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from async_coagents.backends.free_running import SCHEDULE_FILE
from async_coagents.checkpoint import load_checkpoint
from async_coagents.errors import ConfigError
from async_coagents.experiment import config as cfg
from async_coagents.experiment.run import RunDirectory, train

TIMINGS = ("wall_s", "samples_per_s")  # the metrics that differ between two equal runs


def same_weights(a: str | Path, b: str | Path) -> bool:
    """Whether the last checkpoints of two runs hold the same weights, bit for bit."""
    layers = [load_checkpoint(Path(d) / "checkpoint.ckpt", kind="run")["backend"]["network"][
        "layers"] for d in (a, b)]
    return all(np.array_equal(x["params"], y["params"]) for x, y in zip(*layers, strict=True))


def same_metrics(a: str | Path, b: str | Path) -> bool:
    """Whether two runs wrote the same metrics rows, but for their timings."""
    rows = [[{k: v for k, v in row.items() if k not in TIMINGS} for row in RunDirectory(d).metrics()]
            for d in (a, b)]
    return rows[0] == rows[1]


def replay_config(run_dir: str | Path, backend: str = "local") -> dict:
    """The config that replays the free run in ``run_dir`` on ``backend`` (local or ray)."""
    directory = RunDirectory(run_dir)
    config = directory.config()
    if config["backend"]["schedule"] != "free":
        raise ConfigError(f"{directory.path} is not a free-running run (backend.schedule is "
                          f"{config['backend']['schedule']!r}): an ordered run is deterministic "
                          "already; rerun it with coagents train")
    summary = directory.summary()
    status = None if summary is None else summary.get("status")
    if status != "completed":
        raise ConfigError(f"{directory.path}: only a completed free run can be replayed (its "
                          f"status is {status or 'unknown: no summary'}); finish it with "
                          f"coagents resume {directory.path}")
    schedule = directory.path / SCHEDULE_FILE
    if not schedule.is_file():
        raise ConfigError(f"{directory.path}: the recorded schedule {SCHEDULE_FILE} is missing")
    section = {**config["backend"], "kind": backend, "schedule": "replay",
               "replay": str(schedule.resolve()), "free_rate": 0.0}
    if backend == "local":
        section["address"] = ""
    return cfg.validate({**config, "name": f"{config['name']}-replay", "backend": section},
                        f"the replay of {directory.path}")


def replay(run_dir: str | Path, out: str | Path | None = None, *, backend: str = "local",
           progress: bool | None = None, data_dir: str | None = None) -> dict:
    """Replay the free run in ``run_dir`` into ``out`` (default ``RUN_DIR-replay``); returns
    ``{"out", "summary", "same_weights", "same_metrics"}``."""
    config = replay_config(run_dir, backend)
    out = Path(out) if out is not None else Path(f"{str(run_dir).rstrip('/')}-replay")
    summary = train(config, out, progress=progress, data_dir=data_dir)
    return {"out": out, "summary": summary, "same_weights": same_weights(run_dir, out),
            "same_metrics": same_metrics(run_dir, out)}
