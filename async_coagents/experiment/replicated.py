"""A replicated run: R runs that differ only in their seed, trained as one network of R replicas
on a leading array axis (``core/replicas.py``), each replica writing its own run directory.

Replica r's directory is a plain run directory (``config.json`` with its own seed,
``metrics.jsonl``, ``summary.json``, ``checkpoint.ckpt``) holding what a separate run of that
seed would write, bit for bit but for the timings: its checkpoint is its slice of the replicated
state, so ``coagents eval``, ``plot`` and ``resume`` of one replica work as on any run (a replica
resumed alone continues as a separate run), and the group resumes from its replicas' checkpoints
stacked. Every replica feeds from its own stream; all move in lockstep (the same schedule, the
same batch sizes), so one coordinator drives them.

A replica whose loss diverges (``experiment/divergence.py``, per replica) or that sent an agent a
message that is not finite is marked diverged at that update and its summary written; it keeps
its place on the replica axis (its numbers are contained in its slice, and rewarded 0 when not
finite), and the others go on. Throughput figures in each replica's summary are the group's: the
train time is shared by the R replicas (``replicas`` in the summary says with whom).

Sweeps use it (``experiment/sweep.py``): members that differ only in ``run.seed`` run up to
``sweep.replicas`` at a time as one replicated run; ``run.replicas = R`` is a sweep over the R
seeds ``run.seed .. run.seed + R - 1`` packed that way.
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from async_coagents.allocator import keep_freed_memory
from async_coagents.checkpoint import save_checkpoint
from async_coagents.core.network import build_network
from async_coagents.core.replicas import slice_state, stack_states
from async_coagents.data.streams import ReplicaStreams
from async_coagents.errors import CheckpointError, ConfigError, DivergedError
from async_coagents.experiment.divergence import DivergenceCriterion, reference_loss
from async_coagents.experiment.footprint import memory_backstop
from async_coagents.experiment.phases import CoagentTraining, Pretraining
from async_coagents.experiment.progress import Progress
from async_coagents.experiment.run import (
    Counters,
    _pretrain_state,
    build_phases,
    count_completed,
    evaluation_row,
    read_run_checkpoint,
    run_summary,
)
from async_coagents.experiment.rundir import RunDirectory
from async_coagents.experiment.signals import StopRequest
from async_coagents.experiment.workload import Workload, build_workload, network_spec

log = logging.getLogger(__name__)
RUNNING, COMPLETED, DIVERGED, INTERRUPTED = "running", "completed", "diverged", "interrupted"


@dataclass
class Replica:
    """One replica of the group: its run directory, config, data and counters."""

    index: int
    directory: RunDirectory
    config: dict
    workload: Workload
    state: Counters = field(default_factory=Counters)
    divergence: DivergenceCriterion | None = None
    status: str = RUNNING
    error: str | None = None
    diverged: dict | None = None

    @property
    def seed(self) -> int:
        return self.config["run"]["seed"]


#: The counters a completed batch adds to (``run.count_completed``), kept per replica in arrays
#: (tests/test_replicas.py checks that this is every counter it changes).
TALLIED = ("loss_sum", "loss_batches", "completed", "loss_total", "loss_batches_total",
           "hits_total", "examples_total", "interval_hits", "interval_examples")


class Tallies:
    """The replicas' batch counters as arrays ``(R,)``, so that counting a completed batch is a
    few numpy operations for all replicas instead of R objects updated one by one. The same IEEE
    additions as :func:`~async_coagents.experiment.run.count_completed` in the same order, so the
    replicas' counters stay those of their separate runs bit for bit. The replicas' ``Counters``
    are the truth outside the loop: :meth:`store` writes the tallies into them before anything
    reads them, :meth:`load` reads them back after anything changed them."""

    def __init__(self, replicas: list[Replica]) -> None:
        self.replicas = replicas
        self.load()

    def load(self) -> None:
        self.arrays = {name: np.array([getattr(r.state, name) for r in self.replicas])
                       for name in TALLIED}

    def store(self) -> None:
        for name, values in self.arrays.items():
            for replica, value in zip(self.replicas, values.tolist(), strict=True):
                setattr(replica.state, name, value)

    def count(self, batch, which: np.ndarray) -> None:
        """Count ``batch`` (a replicated ``Completed``) for the replicas ``which``: the run's own
        :func:`count_completed` applied to the tallies of those replicas at once."""
        gathered = SimpleNamespace(**{name: values[which] for name, values in self.arrays.items()})
        count_completed(gathered, SimpleNamespace(
            loss=np.asarray(batch.loss, dtype=np.float64)[which], size=batch.size,
            hits=None if batch.hits is None else np.asarray(batch.hits)[which]))
        for name, values in self.arrays.items():
            values[which] = getattr(gathered, name)


def same_but_seed(configs: list[dict]) -> bool:
    """Whether the configs differ in ``run.seed`` only (what one replicated run can hold)."""
    def without_seed(c: dict) -> dict:
        return {**c, "run": {k: v for k, v in c["run"].items() if k != "seed"}}
    first = without_seed(configs[0])
    return all(without_seed(c) == first for c in configs[1:])


class ReplicatedRun:
    """The run of the replicas ``configs`` (validated configs that differ only in ``run.seed``)
    into the run directories ``paths``; ``run()`` trains them to the end and returns each
    replica's summary."""

    def __init__(self, configs: list[dict], paths: list[Path], *, progress: bool | None = None,
                 data_dir: str | None = None, group_dir: Path | None = None) -> None:
        if not configs or len(configs) != len(paths):
            raise ConfigError("a replicated run needs one run directory per replica")
        if not same_but_seed(configs):
            raise ConfigError("replicas must differ in run.seed only")
        seeds = [c["run"]["seed"] for c in configs]
        if len(set(seeds)) != len(seeds):
            raise ConfigError(f"replicas need distinct seeds, got {seeds}")
        config = configs[0]
        self.name = config["name"]
        self.group_dir = Path(group_dir) if group_dir is not None else Path(paths[0]).parent
        with memory_backstop(f"the {len(configs)} replicas of {self.name!r}"):
            self.replicas = [Replica(r, RunDirectory(p), c, build_workload(c, data_dir))
                             for r, (c, p) in enumerate(zip(configs, paths, strict=True))]
            self.spec = network_spec(config, self.replicas[0].workload)
            for replica in self.replicas[1:]:
                if network_spec(replica.config, replica.workload) != self.spec:
                    raise ConfigError("the replicas' networks differ (their data differ in shape)")
            self.network = build_network(self.spec, seeds)
            self.record_grad_variance = config["run"]["record_grad_variance"]
            if self.record_grad_variance:
                self.network.record_grad_variance()
        w = self.replicas[0].workload
        if config["run"]["online_metrics"] and (config["data"]["stream"] == "class-blocked"
                                                 or config["data"]["dataset"] == "correlated"):
            raise ConfigError("run.online_metrics on a class-blocked or correlated stream "
                              "(blocks.jsonl) is written by separate runs only: set "
                              "sweep.replicas = 1")
        self.updates, self.eval_every = w.updates, w.eval_every
        self.pretrain_updates = config["run"]["pretrain_updates"]
        agents_dir = self.group_dir / f".agents-{seeds[0]}"  # Ray agents' own checkpoints
        self.backend, self.coagent, self.pretraining = build_phases(
            config, self.spec, self.network, seeds, agents_dir, self.updates)
        self.switched = False
        self.show_progress = progress
        self.checkpoint_every = config["run"]["checkpoint_every"]
        self.stop = StopRequest()
        self._eval_sets = self._stacked_eval_sets()
        self.streams = ReplicaStreams([r.workload.stream for r in self.replicas])
        self._tallies: Tallies | None = None  # the batch counters while the loop runs
        keep_freed_memory()  # R x B x U temporaries: keep their pages (allocator.py)

    @property
    def seeds(self) -> list[int]:
        return [r.seed for r in self.replicas]

    @property
    def running(self) -> list[Replica]:
        return [r for r in self.replicas if r.status == RUNNING]

    @property
    def phase(self) -> Pretraining | CoagentTraining:
        if self.pretraining is not None and not self.switched:
            return self.pretraining
        return self.coagent

    def _stacked_eval_sets(self) -> dict[str, tuple[np.ndarray, np.ndarray, tuple]]:
        """Each split once for all replicas (``x (N, d)``) when every replica's is the same
        (a dataset's fixed split), else stacked ``(R, N, d)`` (each seed's own sample); a split
        that is another's arrays is marked so it is evaluated once (as a run does)."""
        sets = {}
        for name, split in self.replicas[0].workload.eval_sets.items():
            splits = [r.workload.eval_sets[name] for r in self.replicas]
            shared = all(np.array_equal(s.x, split.x) and np.array_equal(s.y, split.y)
                         for s in splits[1:])
            x = split.x if shared else np.stack([s.x for s in splits])
            y = split.y if shared else np.stack([s.y for s in splits])
            same_as = tuple((id(s.x), id(s.y)) for s in splits)
            sets[name] = (x, y, same_as)
        return sets

    # ---- the loop ---------------------------------------------------------------------------
    def run(self) -> list[dict]:
        """Train every replica to the end (or to Ctrl-C); returns each replica's summary."""
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return self._run()

    def _run(self) -> list[dict]:
        first = self.replicas[0].state
        if first.updates == 0:
            self._evaluate()
        for replica in self.replicas:
            rows = replica.directory.metrics()
            replica.divergence = DivergenceCriterion(
                replica.config["run"]["diverge_factor"],
                reference_loss(rows[0]) if rows and rows[0].get("step") == 0 else None)
        self._limits = np.array([r.divergence.limit for r in self.replicas])
        self._tallies = Tallies(self.replicas)
        label = f"{self.name} x{len(self.replicas)}"
        bar = Progress(label, self.updates, first.updates, self.show_progress)
        started = time.perf_counter()
        walls = {r.index: r.state.wall_s for r in self.replicas}
        interrupted = False
        try:
            with self.stop.trapped():
                while first.updates < self.updates and self.running:
                    if self.stop.requested:
                        interrupted = True
                        break
                    batch = next(self.streams)
                    t0 = time.perf_counter()
                    self._train_one(batch.sid, batch.x, batch.y)
                    dt = time.perf_counter() - t0
                    now = time.perf_counter() - started
                    for replica in self.replicas:
                        s = replica.state
                        s.train_s += dt
                        s.interval_train_s += dt
                        s.updates += 1
                        s.samples += batch.x.shape[1]
                        s.interval_samples += batch.x.shape[1]
                        s.wall_s = walls[replica.index] + now
                    bar.advance()
                    if first.updates % self.eval_every == 0 or first.updates == self.updates:
                        if first.updates == self.updates:
                            self._account(self.backend.finish(), first.updates)
                        row = self._evaluate()
                        if row is not None:
                            bar.evaluation(row)
                    if self._checkpoint_due():
                        self.save_checkpoints()
        finally:
            bar.close()
        self._tallies.store()
        self._tallies = None
        now = time.perf_counter() - started
        for replica in self.running:
            replica.state.wall_s = walls[replica.index] + now
            replica.status = INTERRUPTED if interrupted else COMPLETED
        self.save_checkpoints()
        return [self._finish(replica) for replica in self.replicas]

    def _train_one(self, sid: int, x: np.ndarray, y: np.ndarray) -> None:
        update = self.replicas[0].state.updates
        if self.phase is self.pretraining and update >= self.pretrain_updates:
            self._account(self.pretraining.hand_over(self.backend), update)  # (§5.4)
            self.switched = True
            for replica in self.replicas:
                replica.state.switched = True
        self._account(self.phase.submit(sid, x, y), update + 1)

    def _account(self, completed, update: int) -> None:
        """Count each replica's share of the batches completed at ``update`` (into the tallies,
        for all replicas at once); a replica whose loss diverges is marked diverged (the others
        go on)."""
        for batch in completed:
            running = np.array([r.index for r in self.running], dtype=np.int64)
            loss = np.asarray(batch.loss, dtype=np.float64)[running]
            fine = np.isfinite(loss) & (loss <= self._limits[running])
            for index in running[~fine]:  # the criterion's own check says why
                replica = self.replicas[index]
                try:
                    replica.divergence.check(update, batch.sid, float(batch.loss[index]))
                except DivergedError as exc:
                    self._mark_diverged(replica, str(exc), exc.update, exc.value)
                else:  # (fine says it cannot pass; were it to, the batch still counts)
                    fine[running == index] = True
            self._tallies.count(batch, running[fine])

    def _mark_diverged(self, replica: Replica, error: str, update: int,
                       loss: float | None) -> None:
        replica.status, replica.error = DIVERGED, error
        replica.diverged = {"update": update, "loss": loss}
        log.warning("%s (seed %d): %s; the other replicas go on", self.name, replica.seed, error)

    def _check_messages(self) -> None:
        """Mark diverged the replicas whose messages to an agent were not finite."""
        update = self.replicas[0].state.updates
        for index in sorted(self.backend.take_non_finite()):
            replica = self.replicas[index]
            if replica.status == RUNNING:
                self._mark_diverged(replica, f"diverged by update {update}: a message to an "
                                             "agent was not finite", update, None)

    def _checkpoint_due(self) -> bool:
        updates = self.replicas[0].state.updates
        every = self.checkpoint_every or self.eval_every
        return updates % every == 0 and updates < self.updates

    # ---- evaluation -------------------------------------------------------------------------
    def _evaluate(self) -> dict | None:
        """One metrics row per running replica; returns the first one's (for the progress bar)."""
        if self._tallies is not None:
            self._tallies.store()
        try:
            return self._evaluate_stored()
        finally:
            if self._tallies is not None:
                self._tallies.load()  # evaluation_row started the next interval

    def _evaluate_stored(self) -> dict | None:
        self._check_messages()
        phase = self.phase
        measured: dict[tuple, list[dict]] = {}
        by_split = {}
        for name, (x, y, same_as) in self._eval_sets.items():
            if same_as not in measured:
                measured[same_as] = phase.evaluate(x, y)
            by_split[name] = measured[same_as]
        staleness = grad_variance = asynchrony = None
        if phase is self.coagent:
            staleness = self.backend.take_staleness()
            if self.record_grad_variance:
                grad_variance = self.backend.take_grad_variance()
            asynchrony = self.backend.take_asynchrony()
        shown = None
        phase_name = phase.name if self.pretraining is not None else None
        for replica in self.running:
            r = replica.index
            per_replica = None if grad_variance is None else [
                None if v is None else float(v[r]) for v in grad_variance]
            row = evaluation_row(replica.state, {k: v[r] for k, v in by_split.items()},
                                 phase_name, None if staleness is None else [
                                     (replica_number(mean, r), replica_number(peak, r))
                                     for mean, peak in staleness], per_replica,
                                 None if asynchrony is None else [
                                     {k: finite_or_none(v, r) for k, v in taken.items()}
                                     for taken in asynchrony],
                                 replica.config["run"]["online_metrics"])
            replica.directory.append_metrics(row)
            shown = shown or row
        return shown

    # ---- summaries and checkpoints ------------------------------------------------------------
    def _finish(self, replica: Replica) -> dict:
        r = replica.index  # its entry of the agents' counters that differ between replicas
        reports = [{k: replica_number(v, r) for k, v in report.items()}
                   for report in self.backend.layer_stats()]
        summary = run_summary(replica.config["name"], replica.state, self.updates,
                              replica.directory.metrics(), self.backend, self.pretrain_updates,
                              replica.status, replica.error, replica.diverged, reports)
        summary["replicas"] = {"seeds": self.seeds, "replica": replica.index,
                               "note": "timings are the group's: its replicas trained together"}
        replica.directory.write_summary(summary)
        return summary

    def save_checkpoints(self) -> None:
        """Each running replica's checkpoint: its slice of the replicated state."""
        if self._tallies is not None:
            self._tallies.store()
        self._check_messages()
        backend = self.backend.state_dict()
        pretrain = None if self.pretraining is None else self.pretraining.state_dict()
        for replica in self.replicas:
            if replica.status == DIVERGED:
                continue  # a diverged run keeps no checkpoint
            r = replica.index
            state = {"config": replica.config, "progress": asdict(replica.state),
                     "stream": replica.workload.stream.position(),
                     "backend": slice_state(backend, r),
                     "pretrain": None if pretrain is None else slice_state(pretrain, r)}
            save_checkpoint(replica.directory.checkpoint, state, kind="run")

    def load_checkpoints(self) -> None:
        """Restore every replica from its own checkpoint (all at the same update)."""
        states = []
        for replica in self.replicas:
            state = read_run_checkpoint(replica.directory, replica.config, replica.workload)
            replica.state = Counters(**state["progress"])
            states.append(state)
        updates = {s["progress"]["updates"] for s in states}
        if len(updates) > 1:
            raise CheckpointError(f"the replicas of {self.name!r} stopped at different updates "
                                  f"({sorted(updates)}): resume them one at a time")
        self.switched = self.replicas[0].state.switched
        for replica, state in zip(self.replicas, states, strict=True):
            replica.workload.stream.restore(state["stream"])
        with self.replicas[0].directory.restoring():
            self.backend.load_state_dict(stack_states([s["backend"] for s in states], "backend"))
            if self.pretraining is not None:
                self.pretraining.load_state_dict(stack_states(
                    [_pretrain_state(s, r.directory) for s, r in zip(states, self.replicas,
                                                                       strict=True)],
                    "pretrain"))

    def close(self) -> None:
        if self.pretraining is not None:
            self.pretraining.close()
        self.backend.close()


# ---- entry points: train or resume a group of run directories ------------------------------
def train_replicas(configs: list[dict], paths: list[Path], *, progress: bool | None = None,
                   data_dir: str | None = None, group_dir: Path | None = None) -> list[dict]:
    """Train the replicas ``configs`` into the new run directories ``paths`` (each missing or
    empty); returns each replica's summary. The directories are locked while they train."""
    if data_dir:
        configs = [{**c, "data": {**c["data"], "data_dir": str(data_dir)}} for c in configs]
    directories = [RunDirectory(p) for p in paths]
    for directory in directories:
        directory.check_target()
    created = [directory.make() for directory in directories]
    with ExitStack() as stack:
        for directory in directories:
            stack.enter_context(directory.lock())
        try:
            for directory in directories:
                directory.check_target()
            run = ReplicatedRun(configs, paths, progress=progress, group_dir=group_dir)
        except BaseException:
            for directory, made in zip(directories, created, strict=True):
                directory.discard(made)
            raise
        try:
            for directory, config in zip(directories, configs, strict=True):
                directory.start(config)
            return run.run()
        finally:
            run.close()


def resume_replicas(paths: list[Path], *, progress: bool | None = None,
                    data_dir: str | None = None, group_dir: Path | None = None) -> list[dict]:
    """Continue the replicas in the run directories ``paths`` from their checkpoints (all at the
    same update), or from the beginning when none has one yet."""
    directories = [RunDirectory(p) for p in paths]
    configs = [directory.config() for directory in directories]
    fresh = [not directory.checkpoint.exists() for directory in directories]
    if any(fresh) and not all(fresh):
        raise CheckpointError("some replicas have a checkpoint and some not: resume them one at "
                              "a time (coagents resume RUN_DIR)")
    with ExitStack() as stack:
        for directory in directories:
            stack.enter_context(directory.lock())
        run = ReplicatedRun(configs, paths, progress=progress, data_dir=data_dir,
                            group_dir=group_dir)
        try:
            if all(fresh):
                for directory in directories:
                    directory.keep_metrics_until(-1)
            else:
                run.load_checkpoints()
                for directory, replica in zip(directories, run.replicas, strict=True):
                    directory.keep_metrics_until(replica.state.updates)
            return run.run()
        finally:
            run.close()


def replica_number(value, r: int):
    """Replica ``r``'s entry of a figure shared by the replicas (a number) or one per replica
    (an array: their staleness and step counters once a replica that fired on no stream skipped
    a step)."""
    return value[r].item() if isinstance(value, np.ndarray) else value


def finite_or_none(value, r: int) -> float | None:
    """Replica ``r``'s entry of a per-replica interval figure (``None``: none measured)."""
    if value is None:
        return None
    part = float(value[r])
    return part if math.isfinite(part) else None
