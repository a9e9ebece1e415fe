"""Learning benchmarks: one task and budget, several learners, many seeds; the figure each learner
reaches, as mean ± standard error over seeds. Printed, never asserted (``coagents bench --only
multiplexer20``).

The 20-bit multiplexer of Chung's Weight Maximization experiments ("Learning by Competition of
Self-Interested Reinforcement Learning Agents", AAAI 2022; his repository's ``config_mp.ini``):
4 address bits and 16 data bits, hidden layers of 64 and 32 units, batch 1 (one episode per
update), the reward +1 for the right answer and -1 otherwise, and the figure is the mean reward
over every training episode (Chung reports 0.81 ± 0.01 for Weight Maximization over 800,000
episodes and 10 runs). Ours is the run summary's test-then-train accuracy ``a`` on the +/-1 scale,
``2a - 1``: the fraction of training episodes the network answered right before learning from
them — its sampled output for a coagent network, its argmax for backprop.

Each learner is a sweep over ``run.seed`` in its own directory under ``out``, so an interrupted
benchmark continues where it stopped (``coagents bench --only multiplexer20 --out DIR`` again).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

from async_coagents.experiment import config as cfg
from async_coagents.experiment.sweep import COMPLETED, Sweep

#: The task and the budget every learner of the benchmark shares.
MULTIPLEXER20_TASK = {
    "data.dataset": '"multiplexer"', "data.address_bits": 4, "data.batch": 1,
    "network.hidden": "[64, 32]",
}
#: Learner -> its settings. Coagent rules learn with a categorical output rewarded +1/-1.
MULTIPLEXER20_LEARNERS: dict[str, dict] = {
    "weight-max": {"network.rule": '"weight-max"', "network.output": '"categorical"'},
    "baseline": {"network.rule": '"baseline"', "network.output": '"categorical"'},
    "hnca": {"network.rule": '"hnca"', "network.output": '"categorical"'},
    "ac-offpolicy": {"network.rule": '"ac-offpolicy"', "network.output": '"categorical"',
                     "network.critic_units": 64},
    "backprop": {"network.learner": '"backprop"'},
}
#: Chung's figure for Weight Maximization (mean reward over all episodes, ± std over 10 runs).
CHUNG_WEIGHT_MAX = (0.81, 0.01)


def mean_se(values: list[float]) -> tuple[float, float | None]:
    """Mean and standard error of the mean (``None`` for one value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def multiplexer20(out: str | Path, *, seeds: int = 5, episodes: int = 800_000,
                  learners: list[str] | None = None, settings: dict | None = None,
                  report: Callable[[str], None] = print,
                  run_sweep: Callable[[Sweep], object] | None = None) -> dict:
    """Run (or continue) the benchmark in ``out``; print and return one row per learner.
    ``settings`` (dotted key -> TOML value) override every learner's; ``run_sweep`` runs each
    learner's sweep (default: in this process, one member after another; ``coagents bench``
    passes its ``--jobs`` executor)."""
    run_sweep = run_sweep or (lambda sweep: sweep.run(progress=False))
    out = Path(out)
    rows = []
    for learner in learners or list(MULTIPLEXER20_LEARNERS):
        if learner not in MULTIPLEXER20_LEARNERS:
            raise cfg.ConfigError(f"unknown learner {learner!r}; the benchmark's learners are "
                                  f"{list(MULTIPLEXER20_LEARNERS)}")
        overrides = {**MULTIPLEXER20_TASK, **MULTIPLEXER20_LEARNERS[learner],
                     "run.updates": episodes, "run.seed": str(list(range(seeds))),
                     # the greedy evaluation of the 2^20-pattern table is costly: at the start and
                     # the end only; checkpoints ten times per run
                     "run.eval_every": episodes, "run.checkpoint_every": max(1, episodes // 10),
                     **(settings or {})}
        runs = cfg.load("multiplexer", [f"{k}={v}" for k, v in overrides.items()])
        runs = [({**config, "name": f"mux20-{learner}"}, point) for config, point in runs]
        sweep = Sweep.plan(out / learner, runs)
        run_sweep(sweep)
        done = [m for m in sweep.members if m.status == COMPLETED and m.summary]
        rewards = [2 * m.summary["train"]["accuracy"] - 1 for m in done]
        mean, se = mean_se(rewards) if rewards else (None, None)
        rows.append({"learner": learner, "seeds": len(done), "of": len(sweep.members),
                     "mean_reward": mean, "se": se,
                     "updates_per_s": mean_se([m.summary["updates_per_s"] for m in done])[0]
                     if done else None})
    report(f"20-bit multiplexer, hidden 64-32, batch 1, {episodes:,} episodes; mean reward over "
           "all episodes (+1 right / -1 wrong), mean ± s.e. over seeds")
    report("| learner | seeds | mean reward | updates/s |")
    report("|---|---|---|---|")
    for row in rows:
        shown = "-" if row["mean_reward"] is None else (
            f"{row['mean_reward']:.3f}" + (f" ± {row['se']:.3f}" if row["se"] is not None else ""))
        speed = "-" if row["updates_per_s"] is None else f"{row['updates_per_s']:,.0f}"
        report(f"| {row['learner']} | {row['seeds']}/{row['of']} | {shown} | {speed} |")
    report(f"(Chung, AAAI 2022: Weight Maximization {CHUNG_WEIGHT_MAX[0]} ± "
           f"{CHUNG_WEIGHT_MAX[1]} (std over 10 runs) after 800,000 episodes)")
    return {"episodes": episodes, "seeds": seeds, "rows": rows}


#: The paper's even_longer experiment (§6.5): the 8 built-in correlated-stream configs.
EVEN_LONGER = tuple(f"correlated-{learner}-d{d}" for learner in ("pg", "backprop")
                    for d in ("0", "95", "98", "1"))


def even_longer(out: str | Path, *, seeds: int = 200, updates: int = 320_000, jobs: int = 1,
                normals: str = "box-muller", settings: dict | None = None,
                report: Callable[[str], None] = print,
                run_sweep: Callable[[Sweep], object] | None = None) -> dict:
    """Run (or continue) the whole even_longer sweep in ``out`` — every config of
    :data:`EVEN_LONGER` with ``seeds`` seeds of ``updates`` updates and their evaluations (every
    1,600 updates, as the configs say) — as one sweep whose members are packed into replicated
    runs, ``jobs`` groups per config so that ``jobs`` workers share the work; print and return
    its wall time. The coagent configs draw their noise by ``normals`` (``network.normals``);
    ``settings`` (dotted key -> TOML value) override every config's."""
    run_sweep = run_sweep or (lambda sweep: sweep.run(progress=False))
    pack = max(1, math.ceil(seeds / max(1, jobs)))
    runs = []
    for name in EVEN_LONGER:
        overrides = {"run.seed": str(list(range(seeds))), "run.updates": updates,
                     "sweep.replicas": pack}
        if "-pg-" in name:
            overrides["network.normals"] = f'"{normals}"'
        overrides.update(settings or {})
        runs += cfg.load(name, [f"{k}={v}" for k, v in overrides.items()])
    sweep = Sweep.plan(out, runs)
    started = time.perf_counter()
    run_sweep(sweep)
    seconds = time.perf_counter() - started
    done = sum(m.status == COMPLETED for m in sweep.members)
    report(f"even_longer: {len(EVEN_LONGER)} configs x {seeds} seeds x {updates:,} updates "
           f"(replicas packed {pack} at a time, {jobs} job(s)): {done}/{len(sweep.members)} runs "
           f"completed in {seconds:,.0f} s ({seconds / 60:.1f} min) in this command")
    return {"configs": list(EVEN_LONGER), "seeds": seeds, "updates": updates, "jobs": jobs,
            "packed": pack, "completed": done, "runs": len(sweep.members), "seconds": seconds}
