"""The asynchronous-learning demo (``coagents demo``, ``python demos/async_learning.py``): one
coagent network, trained in process and as Ray actors, in two sections.

Every setting trains the same network (the 6-bit multiplexer, two hidden layers of 32 Bernoulli
coagents, REINFORCE with the EMA baseline, seed 0) and gives one row of a printed table.

* ``windows`` (into ``OUT``): batches in flight, late rewards and layers running at their own
  clock rates. A row: final greedy accuracy, each layer agent's mean and maximum staleness
  (parameter steps between a batch's forward and its update), throughput. Settings run on Ray as
  well are checked to end with exactly the local simulation's weights. The learning curves go to
  ``OUT/learning_curves.png`` and the per-layer staleness to ``OUT/staleness.png``.
* ``asynchrony`` (into ``OUT/asynchrony``): the knobs of issue 13 — execution functions
  (``backend.fire`` = ``p:1``, ``p:0.5``, ``p:0.1``), per-layer reward delays (``[2, 1, 0]``
  against the scalar delay 2 and none, window 3) and the staleness correction
  (``network.importance_cap`` 1.0 against off) at window 32, reward delay 31; every run with
  ``run.online_metrics``. A row, read back from the run's directory: final and prequential
  (test-then-train) accuracy, the fraction of stream-steps each layer agent fired on over the run,
  the mean importance ratio (before truncation) and fraction truncated per layer, staleness. On
  Ray every setting runs as a shorter run of ``ray_updates`` updates (a Ray update costs many
  times a local one) and is compared bit for bit — final weights and every metrics row but the
  timings — with a local run of those updates. Figures (local runs): ``learning_curves.png``,
  ``online_accuracy.png`` (the prequential accuracy of each interval), ``staleness.png``,
  ``entropy_sparsity.png``. With Ray, two rows more: a free-running Ray run (``backend.schedule
  = "free"``, window 8: rewards delivered when they arrive; its reward delays printed below the
  table) and its recorded order replayed in process, compared bit for bit with it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from async_coagents.errors import ConfigError
from async_coagents.experiment import config as cfg
from async_coagents.experiment.plots import make_figures, plot_runs
from async_coagents.experiment.replay import replay, same_metrics, same_weights
from async_coagents.experiment.results import load_runs
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

# (label, run name, overrides) of the asynchrony section; all deterministic, all also on Ray
ASYNCHRONY = [
    ("fire p=1", "fire-p1", ['backend.fire="p:1"']),
    ("fire p=0.5", "fire-p0.5", ['backend.fire="p:0.5"']),
    ("fire p=0.1", "fire-p0.1", ['backend.fire="p:0.1"']),
    ("window 3, no delay", "w3-nodelay", ["backend.window=3"]),
    ("window 3, delay 2", "w3-delay2", ["backend.window=3", "backend.reward_delay=2"]),
    ("window 3, delays [2,1,0]", "w3-delays210",
     ["backend.window=3", "backend.reward_delay=[2, 1, 0]"]),
    ("window 32, delay 31", "w32-delay31", ["backend.window=32", "backend.reward_delay=31"]),
    ("window 32, delay 31, cap 1", "w32-delay31-cap1",
     ["backend.window=32", "backend.reward_delay=31", "network.importance_cap=1.0"]),
]
ASYNCHRONY_BASE = [*BASE, "run.online_metrics=true"]
#: (label, run name, overrides) of the free-running Ray run, beside its replay in process
FREE = ("free-running, window 8", "free-w8", ['backend.schedule="free"', "backend.window=8"])

SECTIONS = ("windows", "asynchrony")
UPDATES = {"windows": 4000, "asynchrony": 4000}  # default updates per setting
RAY_UPDATES = 500  # default updates of an asynchrony setting on Ray
QUICK = {"updates": 300, "ray_updates": 100, "eval_every": 50}  # --quick (the tests)


def train_setting(out: Path, name: str, overrides: Sequence[str], backend: str, updates: int,
                  base: Sequence[str] = BASE) -> Path:
    """Train one setting into ``out/name`` and return that directory."""
    ((config, _),) = cfg.load("quickstart", [
        *base, f"run.updates={updates}", f'name="{name}"', f'backend.kind="{backend}"',
        *overrides])
    directory = out / name
    train(config, directory, progress=False)
    return directory


def run_setting(out: Path, label: str, window: int, delay: int, clocks: list[int], backend: str,
                updates: int) -> dict:
    name = label.replace(",", "").replace(" ", "-")
    start = time.perf_counter()
    directory = train_setting(out, f"{name}-{backend}", [
        f"backend.window={window}", f"backend.reward_delay={delay}",
        f"backend.update_every={clocks}"], backend, updates)
    summary = RunDirectory(directory).summary()
    last = RunDirectory(directory).metrics()[-1]
    staleness = [(s["staleness_mean"], s["staleness_max"])
                 for s in summary["accounting"]["agents"]]
    return {"label": label, "backend": backend, "dir": directory,
            "accuracy": last["test_accuracy"], "staleness": staleness,
            "samples_per_s": summary["samples_per_s"], "seconds": time.perf_counter() - start}


def _over_run(rows: list[dict], column: str) -> list[float | None] | None:
    """Per layer agent, the interval figures of ``column`` averaged over the run (each row's
    value weighted by the updates of its interval); ``None`` for an agent (or a run) that
    recorded none."""
    weighted, weights, previous = None, None, 0
    for row in rows:
        values, span, previous = row.get(column), row["step"] - previous, row["step"]
        if values is None:
            continue
        if weighted is None:
            weighted, weights = [0.0] * len(values), [0] * len(values)
        for i, value in enumerate(values):
            if value is not None:
                weighted[i] += value * span
                weights[i] += span
    if weighted is None or not any(weights):
        return None
    return [w / n if n else None for w, n in zip(weighted, weights, strict=True)]


def read_asynchrony_row(directory: Path) -> dict:
    """The figures of one asynchrony row, from its run directory alone."""
    run = RunDirectory(directory)
    rows, summary = run.metrics(), run.summary()
    last = rows[-1]
    return {"updates": last["step"], "accuracy": last["test_accuracy"],
            "prequential": last["prequential_accuracy"], "fired": _over_run(rows, "fired"),
            "importance": _over_run(rows, "importance_mean"),
            "truncated": _over_run(rows, "importance_truncated"),
            "staleness": [(s["staleness_mean"], s["staleness_max"])
                          for s in summary["accounting"]["agents"]]}


def run_asynchrony(out: Path, updates: int, ray: bool, ray_updates: int,
                   eval_every: int | None = None) -> list[dict]:
    """Train every asynchrony setting into ``out`` (and on Ray for ``ray_updates`` updates);
    returns the rows of the table."""
    base = ASYNCHRONY_BASE + ([f"run.eval_every={eval_every}"] if eval_every else [])
    rows = []
    for label, name, overrides in ASYNCHRONY:
        local = train_setting(out, f"{name}-local", overrides, "local", updates, base)
        rows.append({"label": label, "backend": "local", "dir": local,
                     **read_asynchrony_row(local)})
        if not ray:
            continue
        short = min(updates, ray_updates)
        twin = local if short == updates else train_setting(
            out, f"{name}-local-{short}", overrides, "local", short, base)
        remote = train_setting(out, f"{name}-ray", overrides, "ray", short, base)
        rows.append({"label": label, "backend": "ray", "dir": remote, "twin": twin,
                     "same_as_local": same_weights(twin, remote) and same_metrics(twin, remote),
                     **read_asynchrony_row(remote)})
    if ray:
        rows.extend(run_free(out, min(updates, ray_updates), base))
    return rows


def run_free(out: Path, updates: int, base: Sequence[str]) -> list[dict]:
    """The free-running Ray run and its deterministic replay in process: two rows, the replay's
    ``same_as_local`` saying whether it ended with the free run's weights and metrics."""
    label, name, overrides = FREE
    free = train_setting(out, f"{name}-ray", overrides, "ray", updates, base)
    replayed = replay(free, out / f"{name}-replay")
    schedule = RunDirectory(free).summary()["schedule"]
    return [{"label": label, "backend": "free", "dir": free, "schedule": schedule,
             **read_asynchrony_row(free)},
            {"label": label, "backend": "replay", "dir": replayed["out"],
             "same_as_local": replayed["same_weights"] and replayed["same_metrics"],
             **read_asynchrony_row(replayed["out"])}]


def _per_agent(values: list[float | None] | None, digits: int) -> str:
    if values is None:
        return "-"
    return " ".join("-" if v is None else f"{v:.{digits}f}" for v in values)


def asynchrony_table(rows: list[dict]) -> list[str]:
    """The printed table of the asynchrony section."""
    lines = [f"{'setting':<28}{'backend':<8}{'updates':>8}{'test acc':>9}{'preq acc':>9}  "
             f"{'fired per agent':<16}{'ratio mean/truncated per agent':<32}"
             f"{'staleness mean/max per agent':<30}ray == local"]
    for row in rows:
        ratio = "-" if row["importance"] is None else " ".join(
            "-" if m is None else f"{m:.3f}/{t:.2f}"
            for m, t in zip(row["importance"], row["truncated"], strict=True))
        stale = " ".join(f"{mean:.1f}/{peak}" for mean, peak in row["staleness"])
        same = {True: "yes", False: "NO"}.get(row.get("same_as_local"), "")
        lines.append(f"{row['label']:<28}{row['backend']:<8}{row['updates']:>8}"
                     f"{row['accuracy']:>9.3f}{row['prequential']:>9.3f}  "
                     f"{_per_agent(row['fired'], 2):<16}{ratio:<32}{stale:<30}{same}".rstrip())
    if any(row["backend"] == "ray" for row in rows):
        lines.append("ray rows: a shorter run of each setting, compared bit for bit (weights and "
                     "metrics but timings) with a local run of as many updates")
    for row in rows:
        if row["backend"] == "free":
            schedule = row["schedule"]
            histogram = ", ".join(f"{d}: {n}" for d, n in schedule["delay_histogram"].items())
            lines.append(f"free row: Ray with backend.schedule = \"free\" (not reproducible); "
                         f"the reward delays (forwards) its layers saw: mean "
                         f"{schedule['delay_mean']:.2f}, max {schedule['delay_max']}, batches "
                         f"per delay {{{histogram}}}; the replay row reruns its recorded order "
                         f"in process (coagents replay), compared bit for bit with it")
    if not any(row["backend"] == "free" for row in rows):
        lines.append('free-running Ray (backend.schedule = "free") and its replay: run with Ray')
    return lines


def plot_asynchrony(rows: list[dict], out: Path) -> list[Path]:
    """The section's figures, of its local runs (the Ray runs are shorter and equal them)."""
    dirs = [row["dir"] for row in rows if row["backend"] == "local"]
    written = plot_runs(dirs, out)
    online = make_figures(load_runs(dirs), metric="online_accuracy")["learning_curves.png"]
    path = out / "online_accuracy.png"
    online.savefig(path, format="png", bbox_inches="tight", pad_inches=0.05)
    return [*written, path]


@contextmanager
def _one_ray(ray: bool) -> Iterator[None]:
    """One local Ray instance for every Ray run of the demo (or the one already running)."""
    if not ray:
        yield
        return
    from async_coagents.bench import ray_instance

    with ray_instance():
        yield


def run_demo(out: str | Path, updates: int | None = None, ray: bool = True,
             report: Callable[[str], None] = print, sections: Sequence[str] = SECTIONS,
             quick: bool = False, ray_updates: int | None = None) -> bool:
    """Train every setting of ``sections`` into ``out`` (which must be new or empty), report the
    tables and the figures written; returns whether every Ray run ended with its local
    simulation's weights. ``updates`` (default per section, 300 with ``quick``) applies to every
    section; ``ray_updates`` (default 500, 100 with ``quick``) to the asynchrony section's Ray
    runs."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} is not empty; choose another --out")
    for what, value in (("--updates", updates), ("--ray-updates", ray_updates)):
        if value is not None and value < 1:
            raise ConfigError(f"{what} must be >= 1, got {value}")
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown or not sections:
        raise ConfigError(f"sections must be among {', '.join(SECTIONS)}, got {list(sections)}")
    if ray_updates is None:
        ray_updates = QUICK["ray_updates"] if quick else RAY_UPDATES
    ok = True
    with _one_ray(ray):
        if "windows" in sections:
            ok &= _windows(out, updates or (QUICK["updates"] if quick else UPDATES["windows"]),
                           ray, report)
        if "asynchrony" in sections:
            where = out / "asynchrony"
            rows = run_asynchrony(where, updates or (
                QUICK["updates"] if quick else UPDATES["asynchrony"]), ray, ray_updates,
                QUICK["eval_every"] if quick else None)
            report("\n" + "\n".join(asynchrony_table(rows)))
            report("\n" + "\n".join(str(p) for p in plot_asynchrony(rows, where)))
            ok &= all(row.get("same_as_local", True) for row in rows)
    return ok


def _windows(out: Path, updates: int, ray: bool, report: Callable[[str], None]) -> bool:
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
