"""The asynchronous-learning demo (``coagents demo``, ``python demos/async_learning.py``): one
coagent network, trained in process and as Ray actors, with batches in flight, late rewards and
layers running at their own clock rates.

Every setting trains the same network (the 6-bit multiplexer, two hidden layers of 32 Bernoulli
coagents, REINFORCE with the EMA baseline, seed 0) and gives one row: final greedy accuracy, each
layer agent's mean and maximum staleness (parameter steps between a batch's forward and its
update), throughput. Settings run on Ray as well are checked to end with exactly the local
simulation's weights. The learning curves go to ``OUT/learning_curves.png`` and the per-layer
staleness to ``OUT/staleness.png``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from async_coagents.checkpoint import load_checkpoint
from async_coagents.errors import ConfigError
from async_coagents.experiment import config as cfg
from async_coagents.experiment.plots import plot_runs
from async_coagents.experiment.run import RunDirectory, train

BASE = ["network.hidden=[32, 32]", "network.lr=0.01", "run.eval_every=250", "run.seed=0"]

# (label, window, reward delay, clock rates per layer agent: layer0, layer1, output)
SETTINGS = [
    ("synchronous", 1, 0, [1, 1, 1]),
    ("window 4, delay 3", 4, 3, [1, 1, 1]),
    ("window 16, delay 15", 16, 15, [1, 1, 1]),
    ("window 64, delay 63", 64, 63, [1, 1, 1]),
    ("layer1 steps every 4", 1, 0, [1, 4, 1]),
    ("delay 3, layer0 every 4", 4, 3, [4, 1, 1]),
]
ON_RAY = {"synchronous", "window 4, delay 3", "delay 3, layer0 every 4"}


def run_setting(out: Path, label: str, window: int, delay: int, clocks: list[int], backend: str,
                updates: int) -> dict:
    name = label.replace(",", "").replace(" ", "-")
    ((config, _),) = cfg.load("quickstart", [
        *BASE, f"run.updates={updates}", f'name="{name}-{backend}"', f'backend.kind="{backend}"',
        f"backend.window={window}", f"backend.reward_delay={delay}",
        f"backend.update_every={clocks}"])
    directory = out / f"{name}-{backend}"
    start = time.perf_counter()
    summary = train(config, directory, progress=False)
    last = RunDirectory(directory).metrics()[-1]
    staleness = [(s["staleness_mean"], s["staleness_max"])
                 for s in summary["accounting"]["agents"]]
    return {"label": label, "backend": backend, "dir": directory,
            "accuracy": last["test_accuracy"], "staleness": staleness,
            "samples_per_s": summary["samples_per_s"], "seconds": time.perf_counter() - start}


def same_weights(a: Path, b: Path) -> bool:
    layers = [load_checkpoint(d / "checkpoint.ckpt", kind="run")["backend"]["network"]["layers"]
              for d in (a, b)]
    return all(np.array_equal(x["params"], y["params"]) for x, y in zip(*layers, strict=True))


def run_demo(out: str | Path, updates: int = 4000, ray: bool = True,
             report: Callable[[str], None] = print) -> bool:
    """Train every setting into ``out`` (which must be new or empty), report the table and the
    figures written; returns whether every Ray run ended with its local simulation's weights."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} is not empty; choose another --out")
    if updates < 1:
        raise ConfigError(f"--updates must be >= 1, got {updates}")
    rows = []
    for label, window, delay, clocks in SETTINGS:
        rows.append(run_setting(out, label, window, delay, clocks, "local", updates))
        if ray and label in ON_RAY:
            rows.append(run_setting(out, label, window, delay, clocks, "ray", updates))
            rows[-1]["same_as_local"] = same_weights(rows[-2]["dir"], rows[-1]["dir"])
    report(f"\n{'setting':<26}{'backend':<8}{'test acc':>9}  {'staleness mean/max per agent':<34}"
           f"{'samples/s':>11}  ray == local")
    for row in rows:
        stale = "  ".join(f"{mean:.1f}/{peak}" for mean, peak in row["staleness"])
        same = {True: "yes", False: "NO"}.get(row.get("same_as_local"), "")
        report(f"{row['label']:<26}{row['backend']:<8}{row['accuracy']:>9.3f}  {stale:<34}"
               f"{row['samples_per_s']:>11,.0f}  {same}")
    written = plot_runs([row["dir"] for row in rows], out)
    report("\n" + "\n".join(str(p) for p in written))
    return all(row.get("same_as_local", True) for row in rows)
