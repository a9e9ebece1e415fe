"""One training run: the loop that feeds the stream to a backend, evaluates, checkpoints and
accounts for every batch; resuming it bit-exactly; evaluating a finished run in process.

A run writes into a :class:`~async_coagents.experiment.rundir.RunDirectory`: ``config.json`` (the
resolved config), ``metrics.jsonl`` (one JSON object per evaluation), ``summary.json`` (final
metrics, throughput, the accounting of every batch, status) and ``checkpoint.ckpt`` (msgpack:
every weight, optimizer and baseline state, every RNG state, the batches in flight and the stream
position). Ctrl-C stops at the next batch boundary, writes the checkpoint and the summary, and
``coagents resume DIR`` continues exactly where it stopped.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from async_coagents import __version__
from async_coagents.backends.base import schedule_of
from async_coagents.backends.free_running import SCHEDULE_FILE
from async_coagents.backends.local import LocalBackend
from async_coagents.checkpoint import save_checkpoint
from async_coagents.core.metrics import LAYER_METRICS, evaluate
from async_coagents.core.network import Network, build_network
from async_coagents.data import ClassBlockedStream, CorrelatedStream
from async_coagents.errors import CheckpointError, ConfigError, DivergedError, ProtocolError
from async_coagents.experiment.divergence import DivergenceCriterion, reference_loss
from async_coagents.experiment.footprint import memory_backstop
from async_coagents.experiment.online import (
    append_block,
    block_mse,
    block_mse_row,
    block_row,
    keep_blocks_until,
    per_class_accuracy,
)
from async_coagents.experiment.phases import CoagentTraining, Pretraining
from async_coagents.experiment.progress import Progress
from async_coagents.experiment.rundir import CONFIG, RunDirectory
from async_coagents.experiment.rundir import write_json as _write_json
from async_coagents.experiment.signals import StopRequest
from async_coagents.experiment.workload import Workload, build_workload, network_spec

log = logging.getLogger(__name__)
#: Counters a checkpoint of an earlier version may lack (it then resumes with their defaults).
SINCE_WAVE_3 = {"may_be_missing": True}


@dataclass
class Counters:
    """Counters of a run, saved in its checkpoints (so throughput and accounting survive resume)."""

    updates: int = 0
    samples: int = 0
    completed: int = 0
    wall_s: float = 0.0
    train_s: float = 0.0
    loss_sum: float = 0.0
    loss_batches: int = 0
    interval_samples: int = 0
    interval_train_s: float = 0.0
    switched: bool = False  # backprop pre-training done (§5.4)
    # The whole run's prequential (test-then-train) figures: every batch's loss and hits as it
    # was predicted, before the network learnt from it. Added after wave 2: a checkpoint written
    # before then resumes with them counting from the resume (the summary says so).
    loss_total: float = field(default=0.0, metadata=SINCE_WAVE_3)
    loss_batches_total: int = field(default=0, metadata=SINCE_WAVE_3)
    hits_total: int = field(default=0, metadata=SINCE_WAVE_3)
    examples_total: int = field(default=0, metadata=SINCE_WAVE_3)
    totals_since: int = field(default=0, metadata=SINCE_WAVE_3)  # the update they count from
    # run.online_metrics (experiment/online.py): hits since the last row, and each class's test
    # accuracy after its last block of a class-blocked stream
    interval_hits: int = field(default=0, metadata=SINCE_WAVE_3)
    interval_examples: int = field(default=0, metadata=SINCE_WAVE_3)
    block_initial: dict = field(default_factory=dict, metadata=SINCE_WAVE_3)


class Run:
    """Builds everything a validated config needs and runs it into a :class:`RunDirectory`: a
    small loop over the run's phases (:mod:`~async_coagents.experiment.phases`), evaluating and
    checkpointing, with the divergence criterion, the accounting of every batch and the stop
    signals (:mod:`~async_coagents.experiment.signals`) each in their own piece."""

    def __init__(self, config: dict, directory: RunDirectory, *, progress: bool | None = None,
                 data_dir: str | None = None) -> None:
        self.config = config
        self.directory = directory
        self.name = config["name"]
        with memory_backstop(f"the run {self.name!r}"):
            self.workload: Workload = build_workload(config, data_dir)
            self.spec = network_spec(config, self.workload)
            seed = config["run"]["seed"]
            self.network: Network = build_network(self.spec, seed)
            self.record_grad_variance = config["run"]["record_grad_variance"]
            if self.record_grad_variance:
                self.network.record_grad_variance()  # before the agents go where they run
        self.pretrain_updates = config["run"]["pretrain_updates"]
        self.online = config["run"]["online_metrics"]
        stream = self.workload.stream
        self.blocked = self.online and isinstance(stream, ClassBlockedStream | CorrelatedStream)
        self._block_sets: list = []  # the correlated stream's per-block test sets, as reached
        self.backend, self.coagent, self.pretraining = build_phases(
            config, self.spec, self.network, seed, directory.path, self.workload.updates)
        self.state = Counters()
        self.show_progress = progress
        self.checkpoint_every = config["run"]["checkpoint_every"]
        self.stop = StopRequest()
        # its reference, the step-0 evaluation loss, is known once the run starts (run())
        self._divergence = DivergenceCriterion(config["run"]["diverge_factor"])

    @property
    def phase(self) -> Pretraining | CoagentTraining:
        """The phase of the current update: pre-training until the hand-over, then coagents."""
        if self.pretraining is not None and not self.state.switched:
            return self.pretraining
        return self.coagent

    def request_stop(self) -> None:
        """Stop at the next batch boundary, as Ctrl-C does."""
        self.stop.request()

    # ---- the loop ---------------------------------------------------------------------------
    def run(self) -> dict:
        """Train to the end (or to Ctrl-C), evaluating and checkpointing; returns the summary.

        A loss that diverges (``experiment/divergence.py``) ends the run with status
        ``diverged``: the summary is written, no checkpoint, and :class:`DivergedError` raised.
        numpy's overflow warnings are silenced: a diverging network is reported by its status.
        """
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return self._run()

    def _run(self) -> dict:
        w, s = self.workload, self.state
        if s.updates == 0:
            self._evaluate()
        rows = self.directory.metrics()
        self._divergence = DivergenceCriterion(
            self.config["run"]["diverge_factor"],
            reference_loss(rows[0]) if rows and rows[0].get("step") == 0 else None)
        bar = Progress(self.name, w.updates, s.updates, self.show_progress)
        status, error, diverged = "completed", None, None
        started = time.perf_counter()
        wall_at_start = s.wall_s
        try:
            with self.stop.trapped():
                while s.updates < w.updates:
                    if self.stop.requested:
                        status = "interrupted"
                        break
                    batch = next(w.stream)
                    t0 = time.perf_counter()
                    self._train_one(batch)
                    dt = time.perf_counter() - t0
                    s.train_s += dt
                    s.interval_train_s += dt
                    s.updates += 1
                    s.samples += len(batch.x)
                    s.interval_samples += len(batch.x)
                    s.wall_s = wall_at_start + time.perf_counter() - started
                    bar.advance()
                    if self.blocked and s.updates % w.stream.run_length == 0:
                        self._evaluate_block()
                    if s.updates % w.eval_every == 0 or s.updates == w.updates:
                        if s.updates == w.updates:
                            self._account(self.backend.finish(), s.updates)
                        bar.evaluation(self._evaluate())
                    if self._checkpoint_due():
                        self.save_checkpoint()
        except DivergedError as exc:
            status, error, diverged = "diverged", str(exc), {"update": exc.update,
                                                             "loss": exc.value}
        except ProtocolError as exc:  # a message the agents refuse: a critic's feedback not finite
            update = s.updates + 1
            status, error = "diverged", f"diverged at update {update}: {exc}"
            diverged = {"update": update, "loss": None}
        finally:
            bar.close()
        s.wall_s = wall_at_start + time.perf_counter() - started
        if status != "diverged":
            self.save_checkpoint()
        summary = self.summary(status, error, diverged)
        self.directory.write_summary(summary)
        if status == "diverged":
            raise DivergedError(f"{self.name}: {error}", update=diverged["update"],
                                value=diverged["loss"])
        return summary

    def _train_one(self, batch) -> None:
        s = self.state
        if self.phase is self.pretraining and s.updates >= self.pretrain_updates:
            self._account(self.pretraining.hand_over(self.backend), s.updates)  # (§5.4)
            s.switched = True
        self._account(self.phase.submit(batch.sid, batch.x, batch.y), s.updates + 1)

    def _account(self, completed, update: int) -> None:
        """Count the batches completed at ``update``; raises :class:`DivergedError` at the first
        whose loss diverges."""
        s = self.state
        for batch in completed:
            self._divergence.check(update, batch.sid, batch.loss)
            count_completed(s, batch)

    def _checkpoint_due(self) -> bool:
        s, w = self.state, self.workload
        every = self.checkpoint_every or w.eval_every
        return s.updates % every == 0 and s.updates < w.updates

    # ---- evaluation -------------------------------------------------------------------------
    def _evaluate(self) -> dict:
        s, phase = self.state, self.phase
        measured: dict[tuple[int, int], dict] = {}  # a split that is another's arrays is evaluated once
        by_split = {}
        for split_name, split in self.workload.eval_sets.items():
            key_of_split = id(split.x), id(split.y)
            if key_of_split not in measured:
                measured[key_of_split] = phase.evaluate(split.x, split.y)
            by_split[split_name] = measured[key_of_split]
        staleness = grad_variance = asynchrony = None
        if phase is self.coagent:  # the agents' staleness; the twin's is not the network's
            staleness = self.backend.take_staleness()
            if self.record_grad_variance:
                grad_variance = self.backend.take_grad_variance()
            asynchrony = self.backend.take_asynchrony()
        row = evaluation_row(s, by_split, phase.name if self.pretraining is not None else None,
                             staleness, grad_variance, asynchrony, self.online)
        self.directory.append_metrics(row)
        return row

    def _evaluate_block(self) -> None:
        """A block just ended: a class block's per-class greedy test accuracy, or every
        mean-block's MSE so far on the correlated stream, with forgetting and backward transfer,
        into ``blocks.jsonl`` (``experiment/online.py``)."""
        if self.phase is not self.coagent:
            return
        s, stream = self.state, self.workload.stream
        block = s.updates // stream.run_length - 1
        initial = {int(c): a for c, a in s.block_initial.items()}
        if isinstance(stream, CorrelatedStream):
            while len(self._block_sets) <= block:
                self._block_sets.append(stream.block_test_set(len(self._block_sets)))
            mse = block_mse(self.backend.predict, self._block_sets[:block + 1])
            row = block_mse_row(s.updates, block, mse, initial)
        else:
            test = self.workload.eval_sets["test"]
            predicted = self.backend.predict(test.x).argmax(axis=-1)
            accuracy = per_class_accuracy(predicted, test.y, [int(c) for c in stream.class_order])
            row = block_row(s.updates, block, stream.block_class(s.updates - 1), accuracy, initial)
        s.block_initial = {str(c): a for c, a in initial.items()}
        append_block(self.directory.path, row)

    # ---- summary and checkpoints ------------------------------------------------------------
    def summary(self, status: str, error: str | None = None,
                diverged: dict | None = None) -> dict:
        """The run's ``summary.json``; ``diverged`` (update and loss) for a diverged run."""
        return run_summary(self.name, self.state, self.workload.updates, self.directory.metrics(),
                           self.backend, self.pretrain_updates, status, error, diverged)

    def save_checkpoint(self) -> None:
        state = {
            "config": self.config,
            "progress": asdict(self.state),
            "stream": self.workload.stream.position(),
            "backend": self.backend.state_dict(),
            "pretrain": None if self.pretraining is None else self.pretraining.state_dict(),
        }
        save_checkpoint(self.directory.checkpoint, state, kind="run")

    def load_checkpoint(self) -> None:
        """Restore the run from its checkpoint (checked as :func:`read_run_checkpoint` does)."""
        directory = self.directory
        state = read_run_checkpoint(directory, self.config, self.workload)
        self.state = Counters(**state["progress"])
        if "loss_batches_total" not in state["progress"]:  # written before the run counted them
            self.state.totals_since = self.state.updates
        with directory.restoring():
            self.workload.stream.restore(state["stream"])
            self.backend.load_state_dict(state["backend"])
            if self.pretraining is not None:
                self.pretraining.load_state_dict(_pretrain_state(state, directory))

    def close(self) -> None:
        if self.pretraining is not None:
            self.pretraining.close()
        self.backend.close()


#: Per-agent lists of a metrics row that describe the interval since the previous row, not the
#: network at the row: left out of the summary's final metrics.
_INTERVAL_LISTS = ("staleness_mean", "staleness_max", "grad_variance", "fired", "importance_mean",
                   "importance_truncated")


def count_completed(s: Counters, batch) -> None:
    """Count one completed batch (a :class:`~async_coagents.coordinator.Completed`) in ``s``."""
    s.loss_sum += batch.loss
    s.loss_batches += 1
    s.completed += 1
    s.loss_total += batch.loss
    s.loss_batches_total += 1
    if batch.hits is not None:
        s.hits_total += batch.hits
        s.examples_total += batch.size
        s.interval_hits += batch.hits
        s.interval_examples += batch.size


def evaluation_row(s: Counters, by_split: dict[str, dict], phase: str | None,
                   staleness: list | None, grad_variance: list | None,
                   asynchrony: list[dict] | None = None, online: bool = False) -> dict:
    """One ``metrics.jsonl`` row from the run's counters ``s`` and each split's metrics; starts the
    counters' next interval. ``phase`` names the phase of a run that pre-trains; ``staleness``
    (per agent ``(mean, max)``), ``grad_variance`` and ``asynchrony`` (per agent its firing and
    staleness-correction figures, ``take_asynchrony``) are the agents' intervals (coagent phase):
    each key of ``asynchrony`` that some agent reports is a per-agent list (``None`` for the
    others), so a run without firing schedules or correction writes none of them. ``online``
    (``run.online_metrics``) adds the prequential figures (``experiment/online.py``)."""
    row = {"step": s.updates, "samples": s.samples, "wall_s": round(s.wall_s, 3),
           "train_loss": s.loss_sum / s.loss_batches if s.loss_batches else None}
    if phase is not None:
        row["phase"] = phase
    for split_name, metrics in by_split.items():
        for key, value in metrics.items():
            if key in LAYER_METRICS:
                if split_name == "test":
                    row[key] = value
            else:
                row[f"{split_name}_{key}"] = value
    if staleness is not None:
        row["staleness_mean"] = [mean for mean, _ in staleness]
        row["staleness_max"] = [peak for _, peak in staleness]
        if grad_variance is not None:
            row["grad_variance"] = grad_variance
        for key in dict.fromkeys(k for taken in asynchrony or [] for k in taken):
            row[key] = [taken.get(key) for taken in asynchrony]
    if online:
        so_far = prequential(s)
        row["prequential_loss"], row["prequential_accuracy"] = (so_far["loss_mean"],
                                                                so_far["accuracy"])
        row["online_accuracy"] = (s.interval_hits / s.interval_examples if s.interval_examples
                                  else None)
    row["samples_per_s"] = s.interval_samples / s.interval_train_s if s.interval_train_s else None
    s.loss_sum, s.loss_batches, s.interval_samples, s.interval_train_s = 0.0, 0, 0, 0.0
    s.interval_hits = s.interval_examples = 0
    return row


def run_summary(name: str, s: Counters, updates_total: int, rows: list[dict], backend,
                pretrain_updates: int, status: str, error: str | None = None,
                diverged: dict | None = None, reports: list[dict] | None = None) -> dict:
    """A run's ``summary.json`` from its counters, its metrics rows and its backend (whose layer
    agents' counters are ``reports``, default ``backend.layer_stats()``)."""
    final = rows[-1] if rows else {}
    described = backend.describe()
    return {
        "name": name, "status": status, "error": error, "version": __version__,
        **({"diverged": diverged} if diverged is not None else {}),
        "updates": s.updates, "updates_total": updates_total, "samples": s.samples,
        "wall_s": round(s.wall_s, 3), "train_s": round(s.train_s, 3),
        "samples_per_s": s.samples / s.train_s if s.train_s else None,
        "updates_per_s": s.updates / s.train_s if s.train_s else None,
        "final": {k: v for k, v in final.items() if k not in _INTERVAL_LISTS},
        "train": prequential(s),
        "accounting": accounting(s, pretrain_updates,
                                 backend.layer_stats() if reports is None else reports),
        "backend": described.pop("backend"), **described,
    }


def prequential(progress: Counters) -> dict:
    """The run's test-then-train figures: the mean training loss of every batch and, for
    classification, the fraction of training examples the network got right as it predicted
    them, before learning from them (``since``: the update they count from, 0 unless the run
    resumed from a checkpoint of a version that did not count them)."""
    s = progress
    return {"batches": s.loss_batches_total,
            "loss_mean": s.loss_total / s.loss_batches_total if s.loss_batches_total else None,
            "accuracy": s.hits_total / s.examples_total if s.examples_total else None,
            "since": s.totals_since}


def accounting(progress: Counters, pretrain_updates: int, reports: list[dict]) -> dict:
    """What happened to every batch: submitted, pre-training, sent to the agents, rewarded, in
    flight; per agent its counters and ``unaccounted`` (batches sent to it that are neither
    applied, dropped, lost nor pending: 0 when the accounting is complete)."""
    pretrain = min(progress.updates, pretrain_updates)
    to_agents = progress.updates - pretrain  # batches the agents were sent
    agents = []
    for report in reports:  # each batch: applied, dropped, lost or pending
        settled = sum(report[f"{kind}_batches"] for kind in ("applied", "dropped", "lost"))
        agents.append({**report, "unaccounted": to_agents - settled - report["pending"]})
    return {"submitted": progress.updates, "pretrain": pretrain, "to_agents": to_agents,
            "rewarded": progress.completed, "in_flight": progress.updates - progress.completed,
            "complete": all(a["unaccounted"] == 0 for a in agents), "agents": agents}


def build_phases(config: dict, spec, network: Network, seed, run_dir: Path, updates: int
                 ) -> tuple[object, CoagentTraining, Pretraining | None]:
    """The backend of ``network`` and the run's phases: coagent training on it and, with
    ``run.pretrain_updates``, the backprop twin of ``seed`` (one seed, or the replicas' seeds)
    pre-training synchronously before it (§5.4)."""
    pretrain_updates = config["run"]["pretrain_updates"]
    if pretrain_updates >= updates:
        raise ConfigError(f"run.pretrain_updates ({pretrain_updates}) must be smaller "
                          f"than the run's {updates} updates")
    backend = make_backend(config, network, run_dir)
    pretraining = None
    if pretrain_updates:
        synchronous = {**config, "backend": {**config["backend"], "window": 1,
                                             "reward_delay": 0, "schedule": "ordered"}}
        pretraining = Pretraining(
            build_network(spec.pretraining_twin(), seed),
            lambda twin, agents: make_backend(synchronous, twin, run_dir, agents))
    return backend, CoagentTraining(backend), pretraining


def make_backend(config: dict, network: Network, run_dir: Path, agents: str = "agents"):
    """The backend of ``config["backend"]`` around ``network``; Ray actors checkpoint themselves in
    ``backend.checkpoint_dir`` or ``run_dir/agents`` (``agents``: that subdirectory of the run
    directory, or of ``checkpoint_dir`` past its first part, e.g. ``agents/pretrain``)."""
    backend = config["backend"]
    schedule_path = str(Path(run_dir) / SCHEDULE_FILE)  # a free run's recorded message order
    if backend["kind"] == "local":
        return LocalBackend(network, window=backend["window"], reward_delay=backend["reward_delay"],
                            schedule=schedule_of(backend), schedule_path=schedule_path)
    from async_coagents.backends import ray_env

    ray_env.prepare(backend["address"])  # before ray is imported: it reads the auth mode then
    from async_coagents.backends.ray_backend import RayBackend

    if backend["checkpoint_dir"]:
        agent_dir = Path(backend["checkpoint_dir"]).joinpath(*Path(agents).parts[1:])
    else:
        agent_dir = Path(run_dir) / agents
    return RayBackend(network, backend, agent_dir=str(agent_dir), schedule_path=schedule_path)


def read_run_checkpoint(directory: RunDirectory, config: dict,
                        workload: Workload | None = None) -> dict:
    """The checkpoint of the run in ``directory``, checked against the run's ``config`` (and the
    length of its ``workload``): the one check that ``resume`` and ``eval`` share."""
    return directory.read_checkpoint(config, progress=Counters,
                                     updates_total=None if workload is None else workload.updates)


def _pretrain_state(state: dict, directory: RunDirectory) -> dict:
    if state["pretrain"] is None:
        raise CheckpointError(f"{directory.checkpoint}: entry pretrain is missing, but the run "
                              "pre-trains (run.pretrain_updates)")
    return state["pretrain"]


def train(config: dict, out: str | Path, *, progress: bool | None = None,
          data_dir: str | None = None) -> dict:
    """Run a validated ``config`` into a new run directory ``out``; returns the summary.

    ``out`` must be missing or an empty directory: a file, a run (resume it) or any other
    non-empty directory is refused before anything is written. The run directory is locked while
    the run trains.
    """
    if data_dir:
        config = {**config, "data": {**config["data"], "data_dir": str(data_dir)}}
    directory = RunDirectory(out)
    directory.check_target()
    created = directory.make()
    with directory.lock():
        try:
            directory.check_target()  # again under the lock: another process may have begun here
            run = Run(config, directory, progress=progress)  # builds (and checks the data) first
        except BaseException:
            directory.discard(created)
            raise
        try:
            directory.start(config)
        except BaseException:
            run.close()
            directory.discard(created)
            raise
        try:
            return run.run()
        finally:
            run.close()


def resume(path: str | Path, *, progress: bool | None = None, address: str | None = None,
           data_dir: str | None = None) -> dict:
    """Continue the run in ``path`` from its last checkpoint, bit-exactly (from the beginning
    when it has none); ``data_dir`` is where to look for dataset files first. The run directory
    is locked while it runs.

    ``address`` moves a Ray run to another cluster (e.g. a restarted head); it changes where the
    agents run, never what they compute, and is recorded in the run's ``config.json`` once the
    run has joined that cluster and loaded its checkpoint (a wrong address changes nothing).
    """
    directory = RunDirectory(path)
    directory.config()  # a run directory? (checked before the lock file is made in it)
    with directory.lock():
        return _resume(directory, progress=progress, address=address, data_dir=data_dir)


def _resume(directory: RunDirectory, *, progress: bool | None, address: str | None,
            data_dir: str | None) -> dict:
    config = directory.config()
    fresh = not directory.checkpoint.exists()
    moved = address is not None and address != config["backend"]["address"]
    if moved:
        if config["backend"]["kind"] != "ray":
            raise ConfigError(f"--address applies to Ray runs; {directory.path} ran on the "
                              f"{config['backend']['kind']!r} backend")
        config = {**config, "backend": {**config["backend"], "address": address}}
    finished = directory.summary()
    if not fresh and finished is not None and finished.get("status") == "completed":
        saved = read_run_checkpoint(directory, config)["progress"]  # checks the file
        if saved["updates"] == finished.get("updates"):
            log.info("%s: the run is already complete; nothing to resume", directory.path)
            return finished
    # Run() joins the cluster, so the address is checked before anything is written
    run = Run(config, directory, progress=progress, data_dir=data_dir)
    try:
        if not fresh:
            run.load_checkpoint()
        if moved:
            _write_json(directory.path / CONFIG, config)
        if fresh:  # it stopped before its first checkpoint
            log.info("%s has no checkpoint yet: starting the run from the beginning",
                     directory.path)
            directory.keep_metrics_until(-1)
            keep_blocks_until(directory.path, -1)
            return run.run()
        if run.state.updates >= run.workload.updates:  # finished, but its summary was lost
            summary = run.summary("completed")
            directory.write_summary(summary)
            return summary
        directory.keep_metrics_until(run.state.updates)
        keep_blocks_until(directory.path, run.state.updates)
        return run.run()
    finally:
        run.close()


def evaluate_run(path: str | Path, *, splits: tuple[str, ...] = ("valid", "test"),
                 data_dir: str | None = None) -> dict:
    """Greedy evaluation of the last checkpoint of the run in ``path`` on ``splits``; ``data_dir``
    is where to look for dataset files first.

    The network is rebuilt from the config and the checkpoint in this process: no backend is
    started, so a Ray run is evaluated anywhere, its cluster gone or not.
    """
    directory = RunDirectory(path)
    config = directory.config()
    if not directory.checkpoint.exists():
        raise CheckpointError(f"{directory.path} has no checkpoint to evaluate")
    workload = build_workload({**config, "run": {**config["run"], "eval_train": "train" in splits}},
                              data_dir)
    state = read_run_checkpoint(directory, config, workload)
    spec, seed = network_spec(config, workload), config["run"]["seed"]
    progress = state["progress"]
    with directory.restoring():
        if config["run"]["pretrain_updates"] and not progress["switched"]:  # still pre-training
            net = build_network(spec.pretraining_twin(), seed)
            net.load_state_dict(_pretrain_state(state, directory))
        else:
            net = build_network(spec, seed)
            net.load_state_dict(state["backend"]["network"])
    results = {"step": progress["updates"]}
    for name in splits:
        if name not in workload.eval_sets:
            raise ConfigError(f"no {name!r} split in this run; splits: {sorted(workload.eval_sets)}")
        split = workload.eval_sets[name]
        metrics = evaluate(net, split.x, split.y)
        results.update({f"{name}_{k}": v for k, v in metrics.items() if k not in LAYER_METRICS})
        if name == "test":
            results.update({k: metrics[k] for k in LAYER_METRICS})
    return results
