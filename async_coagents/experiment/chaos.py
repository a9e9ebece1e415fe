"""Chaos for Ray runs: layer actors killed with SIGKILL at seeded random moments of a run, the
comparison of a faulted run with the same run without faults, and the soak (``coagents bench
--only soak``) that puts the two together.

A :class:`Chaos` is attached to a :class:`~async_coagents.experiment.run.Run` on the Ray backend
before it runs: after each update it may kill one or several of the run's layer actors (their
processes must be on this machine: one node, or a ``ray.cluster_utils.Cluster``). Everything it
draws — the updates at which it strikes and the actors it kills — comes from its seed.
"""

from __future__ import annotations

import os
import signal
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from async_coagents.checkpoint import load_checkpoint
from async_coagents.experiment import config as cfg
from async_coagents.experiment.rundir import RunDirectory

#: Metrics that measure time, not learning: they differ between any two runs.
TIMING_METRICS = ("wall_s", "samples_per_s")


@dataclass
class Strike:
    """Actors killed after one update: their names and the pids they had."""

    update: int
    agents: list[str] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)


class Chaos:
    """Strikes ``strikes`` times, after updates drawn uniformly (without repeats) from
    ``[first, last)``: a strike kills ``at_once`` layer actors with probability ``several`` (at
    most every actor), else one, with SIGKILL; the victims are drawn uniformly."""

    def __init__(self, seed: int, strikes: int, first: int, last: int, *, several: float = 0.0,
                 at_once: int = 2) -> None:
        if not 0 < first < last or strikes > last - first:
            raise ValueError(f"cannot place {strikes} strikes in updates [{first}, {last})")
        self.rng = np.random.default_rng(seed)
        self.due = sorted(int(u) for u in self.rng.choice(np.arange(first, last), strikes,
                                                          replace=False))
        self.several = several
        self.at_once = at_once
        self.strikes: list[Strike] = []

    @property
    def kills(self) -> int:
        """Actors killed so far."""
        return sum(len(s.pids) for s in self.strikes)

    def attach(self, run) -> None:
        """Strike after the updates that are due (the run's loop calls ``run._train_one``)."""
        train_one = run._train_one
        due = set(self.due)

        def train_one_then_strike(batch) -> None:
            train_one(batch)
            if run.state.updates + 1 in due:
                self.strike(run, run.state.updates + 1)

        run._train_one = train_one_then_strike

    def strike(self, run, update: int) -> Strike:
        """Kill actors of ``run``'s backend now (SIGKILL of their processes)."""
        transport = run.backend.transport
        infos = transport.infos()
        count = self.at_once if self.rng.random() < self.several else 1
        victims = self.rng.choice(len(infos), size=min(count, len(infos)), replace=False)
        strike = Strike(update)
        for index in sorted(int(v) for v in victims):
            strike.agents.append(infos[index]["name"])
            strike.pids.append(infos[index]["pid"])
            os.kill(infos[index]["pid"], signal.SIGKILL)
        self.strikes.append(strike)
        return strike


def run_with(config: dict, out: str | Path, chaos: Chaos | None = None,
             action: Callable | None = None, at_update: int = 0) -> dict:
    """Run ``config`` into ``out`` (with ``chaos`` attached, and ``action(run)`` called after
    update ``at_update``); returns the summary."""
    from async_coagents.experiment.run import Run

    run = Run(config, RunDirectory.create(out, config), progress=False)
    if chaos is not None:
        chaos.attach(run)
    if action is not None:
        train_one = run._train_one

        def train_one_then_act(batch) -> None:
            train_one(batch)
            if run.state.updates + 1 == at_update:
                action(run)

        run._train_one = train_one_then_act
    try:
        return run.run()
    finally:
        run.close()


def differences(a: str | Path, b: str | Path) -> list[str]:
    """How two finished runs differ, bit for bit: every array of the final checkpoint's network,
    every metrics row but its timings, and the accounting of every batch (empty: identical)."""
    found = []
    nets = [load_checkpoint(Path(d) / "checkpoint.ckpt")["backend"]["network"] for d in (a, b)]
    for path, x, y in _leaves(*nets):
        if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            same = (isinstance(x, np.ndarray) and isinstance(y, np.ndarray) and x.dtype == y.dtype
                    and x.shape == y.shape and x.tobytes() == y.tobytes())
        else:
            same = x == y
        if not same:
            found.append(f"network{path} differs")
    rows = [[{k: v for k, v in row.items() if k not in TIMING_METRICS}
             for row in RunDirectory(d).metrics()] for d in (a, b)]
    if len(rows[0]) != len(rows[1]):
        found.append(f"metrics: {len(rows[0])} rows against {len(rows[1])}")
    for x, y in zip(*rows, strict=False):
        if x != y:
            keys = sorted(k for k in x.keys() | y.keys() if x.get(k) != y.get(k))
            found.append(f"metrics row of step {x.get('step')} differs in {keys}")
    accounts = [RunDirectory(d).summary()["accounting"] for d in (a, b)]
    if accounts[0] != accounts[1]:
        found.append("accounting differs")
    return found


def _leaves(x, y, path: str = ""):
    """Pairs of leaves of two nested states, with their path (a missing key pairs with None)."""
    if isinstance(x, dict) and isinstance(y, dict):
        for key in sorted(x.keys() | y.keys(), key=str):
            yield from _leaves(x.get(key), y.get(key), f"{path}[{key!r}]")
    elif isinstance(x, list) and isinstance(y, list) and len(x) == len(y):
        for i, (u, v) in enumerate(zip(x, y, strict=True)):
            yield from _leaves(u, v, f"{path}[{i}]")
    else:
        yield path, x, y


def soak_config(updates: int, checkpoint_every: int = 50) -> dict:
    """The soak's run: the 11-bit multiplexer on Ray, window 4, reward delay 2, agent
    checkpoints every ``checkpoint_every`` updates."""
    ((config, _),) = cfg.load("multiplexer", [
        f"run.updates={updates}", f"run.eval_every={max(updates // 10, 1)}",
        'backend.kind="ray"', "backend.window=4", "backend.reward_delay=2",
        f"backend.checkpoint_every={checkpoint_every}"])
    return config


def soak(*, updates: int = 12_000, strikes: int = 20, seed: int = 0,
         several: float = 0.2) -> dict:
    """The same Ray run without faults and with ``strikes`` SIGKILLs of its layer actors (one,
    or with probability ``several`` two at once) at seeded moments; what recovery did, whether
    the two ended bit for bit the same, and the slowdown."""
    config = soak_config(updates)
    with tempfile.TemporaryDirectory(prefix="coagents-soak-") as tmp:
        clean = run_with(config, Path(tmp) / "clean")
        chaos = Chaos(seed, strikes, updates // 20, updates - updates // 20, several=several)
        faulted = run_with(config, Path(tmp) / "chaos", chaos)
        diffs = differences(Path(tmp) / "clean", Path(tmp) / "chaos")
    clean_s, faulted_s = clean["wall_s"], faulted["wall_s"]  # the training loop's wall time
    recovery = faulted["recovery"]
    lost = sum(a["lost_batches"] for a in faulted["accounting"]["agents"])
    figures = {
        "updates": updates, "strikes": len(chaos.strikes), "kills": chaos.kills,
        "restarts": recovery["restarts"], "replayed": recovery["replayed"],
        "lost_messages": recovery["lost_messages"], "updates_lost": lost,
        "recovery_s": recovery["seconds"], "identical": not diffs, "differences": diffs[:10],
        "clean_s": round(clean_s, 1), "chaos_s": round(faulted_s, 1),
        "slowdown": round(faulted_s / clean_s, 2),
        "replay_log_peak_bytes": faulted["replay_log"]["peak_bytes"],
        "replay_log_peak_messages": faulted["replay_log"]["peak_messages"],
        "test_accuracy": faulted["final"].get("test_accuracy"),
    }
    return figures
