"""One training run and its directory: the loop that feeds the stream to a backend, evaluates,
checkpoints and accounts for every batch; resuming it bit-exactly; evaluating a finished run.

A run directory holds ``config.json`` (the resolved config), ``metrics.jsonl`` (one JSON object per
evaluation), ``summary.json`` (final metrics, throughput, the accounting of every batch, status)
and ``checkpoint.ckpt`` (msgpack: every weight, optimizer and baseline state, every RNG state,
the batches in flight and the stream position). Ctrl-C stops at the next batch boundary, writes
the checkpoint and the summary, and ``coagents resume DIR`` continues exactly where it stopped.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from async_coagents import __version__
from async_coagents.backends.local import LocalBackend
from async_coagents.checkpoint import load_checkpoint, save_checkpoint
from async_coagents.core.metrics import LAYER_METRICS, evaluate
from async_coagents.core.network import Network, build_network
from async_coagents.core.trainer import train_step
from async_coagents.errors import CheckpointError, ConfigError, ProtocolError
from async_coagents.experiment.config import validate
from async_coagents.experiment.progress import Progress
from async_coagents.experiment.workload import Workload, build_workload, network_spec

CONFIG, METRICS, SUMMARY, CHECKPOINT = "config.json", "metrics.jsonl", "summary.json", "checkpoint.ckpt"
#: Signals that stop a run at the next batch boundary with its checkpoint written.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
log = logging.getLogger(__name__)


def _experiment(config: dict) -> dict:
    """The config without where it runs (``backend.address``): what a checkpoint must match."""
    return {**config, "backend": {k: v for k, v in config.get("backend", {}).items() if k != "address"}}


def _write_json(path: Path, obj: dict) -> None:
    """Write JSON atomically (temporary file, then rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, allow_nan=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


class RunDirectory:
    """The files of one run."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @classmethod
    def create(cls, path: str | Path, config: dict) -> RunDirectory:
        run = cls(path)
        if (run.path / CONFIG).exists():
            raise ConfigError(f"{run.path} already holds a run; use `coagents resume {run.path}` "
                              "or choose another --out")
        run.path.mkdir(parents=True, exist_ok=True)
        _write_json(run.path / CONFIG, config)
        (run.path / METRICS).write_text("", encoding="utf-8")
        return run

    def config(self) -> dict:
        path = self.path / CONFIG
        if not path.is_file():
            raise ConfigError(f"{self.path} is not a run directory (no {CONFIG})")
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path} is not valid JSON: {exc}") from None
        return validate(raw, str(path))

    def append_metrics(self, row: dict) -> None:
        with open(self.path / METRICS, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")

    def metrics(self) -> list[dict]:
        path = self.path / METRICS
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]

    def keep_metrics_until(self, step: int) -> None:
        """Drop the evaluations after ``step`` (a resumed run produces them again)."""
        rows = [row for row in self.metrics() if row["step"] <= step]
        tmp = self.path / f".{METRICS}.tmp"
        tmp.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
        os.replace(tmp, self.path / METRICS)

    def write_summary(self, summary: dict) -> None:
        _write_json(self.path / SUMMARY, summary)

    def summary(self) -> dict | None:
        """The run's summary, or None while it has none (or an unreadable one: resume rewrites
        it)."""
        try:
            return json.loads((self.path / SUMMARY).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT


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


class Run:
    """Builds everything a validated config needs and runs it into a :class:`RunDirectory`."""

    def __init__(self, config: dict, directory: RunDirectory, *, progress: bool | None = None,
                 data_dir: str | None = None) -> None:
        self.config = config
        self.directory = directory
        self.name = config["name"]
        self.workload: Workload = build_workload(config, data_dir)
        self.spec = network_spec(config, self.workload)
        seed = config["run"]["seed"]
        self.network: Network = build_network(self.spec, seed)
        self.backend = make_backend(config, self.network, directory.path)
        self.pretrain_updates = config["run"]["pretrain_updates"]
        if self.pretrain_updates >= self.workload.updates:
            raise ConfigError(f"run.pretrain_updates ({self.pretrain_updates}) must be smaller "
                              f"than the run's {self.workload.updates} updates")
        self.twin = build_network(self.spec.pretraining_twin(), seed) if self.pretrain_updates \
            else None
        self.state = Counters()
        self.show_progress = progress
        self.checkpoint_every = config["run"]["checkpoint_every"]
        self._stop_requested = False

    # ---- the loop ---------------------------------------------------------------------------
    def run(self) -> dict:
        """Train to the end (or to Ctrl-C), evaluating and checkpointing; returns the summary."""
        w, s = self.workload, self.state
        if s.updates == 0:
            self._evaluate()
        bar = Progress(self.name, w.updates, s.updates, self.show_progress)
        status, error = "completed", None
        started = time.perf_counter()
        wall_at_start = s.wall_s
        previous = self._trap_stop_signals()
        try:
            while s.updates < w.updates:
                if self._stop_requested:
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
                if s.updates % w.eval_every == 0 or s.updates == w.updates:
                    if s.updates == w.updates:
                        self._account(self.backend.finish())
                    bar.evaluation(self._evaluate())
                if self._checkpoint_due():
                    self.save_checkpoint()
        except ProtocolError as exc:
            status, error = "diverged", str(exc)
        finally:
            _restore_handlers(previous)
            bar.close()
        s.wall_s = wall_at_start + time.perf_counter() - started
        if status != "diverged":
            self.save_checkpoint()
        summary = self.summary(status, error)
        self.directory.write_summary(summary)
        if status == "diverged":
            raise ProtocolError(error)
        return summary

    def _train_one(self, batch) -> None:
        s = self.state
        if self.twin is not None and s.updates < self.pretrain_updates:
            loss = train_step(self.twin, batch.sid, batch.x, batch.y)
            s.loss_sum += loss
            s.loss_batches += 1
            s.completed += 1
            return
        if self.twin is not None and not s.switched:
            self.backend.load_pretrained(self.twin)
            s.switched = True
        self._account(self.backend.submit(batch.sid, batch.x, batch.y))

    def _account(self, completed) -> None:
        s = self.state
        for batch in completed:
            s.loss_sum += batch.loss
            s.loss_batches += 1
            s.completed += 1

    def _checkpoint_due(self) -> bool:
        s, w = self.state, self.workload
        every = self.checkpoint_every or w.eval_every
        return s.updates % every == 0 and s.updates < w.updates

    def _trap_stop_signals(self) -> dict:
        """Ctrl-C (SIGINT) and SIGTERM (``kill``, ``ray job stop``, a scheduler's pre-emption) set
        a flag checked between batches; a second signal stops at once. Returns the handlers
        replaced, for :func:`_restore_handlers`."""
        def handler(signum, frame):
            if self._stop_requested:
                raise KeyboardInterrupt
            self._stop_requested = True

        previous = {}
        for signum in STOP_SIGNALS:
            try:
                previous[signum] = signal.signal(signum, handler)
            except ValueError:  # not the main thread: leave signals alone
                break
        return previous

    def request_stop(self) -> None:
        """Stop at the next batch boundary, as Ctrl-C does."""
        self._stop_requested = True

    # ---- evaluation -------------------------------------------------------------------------
    def _pretraining(self) -> bool:
        return self.twin is not None and not self.state.switched

    def _evaluate(self) -> dict:
        s = self.state
        row = {"step": s.updates, "samples": s.samples, "wall_s": round(s.wall_s, 3),
               "train_loss": s.loss_sum / s.loss_batches if s.loss_batches else None}
        if self.twin is not None:
            row["phase"] = "pretrain" if self._pretraining() else "coagent"
        for split_name, split in self.workload.eval_sets.items():
            if self._pretraining():
                metrics = evaluate(self.twin, split.x, split.y)
            else:
                metrics = self.backend.evaluate(split.x, split.y)
            for key, value in metrics.items():
                if key in LAYER_METRICS:
                    if split_name == "test":
                        row[key] = value
                else:
                    row[f"{split_name}_{key}"] = value
        if not self._pretraining():
            staleness = self.backend.take_staleness()
            row["staleness_mean"] = [mean for mean, _ in staleness]
            row["staleness_max"] = [peak for _, peak in staleness]
        row["samples_per_s"] = s.interval_samples / s.interval_train_s if s.interval_train_s else None
        s.loss_sum, s.loss_batches, s.interval_samples, s.interval_train_s = 0.0, 0, 0, 0.0
        self.directory.append_metrics(row)
        return row

    # ---- summary and checkpoints ------------------------------------------------------------
    def summary(self, status: str, error: str | None = None) -> dict:
        s, w = self.state, self.workload
        rows = self.directory.metrics()
        final = rows[-1] if rows else {}
        pretrain = min(s.updates, self.pretrain_updates)
        to_agents = s.updates - pretrain  # batches the agents were sent
        agents = []
        for report in self.backend.layer_stats():  # each batch: applied, dropped, lost or pending
            settled = sum(report[f"{kind}_batches"] for kind in ("applied", "dropped", "lost"))
            agents.append({**report, "unaccounted": to_agents - settled - report["pending"]})
        described = self.backend.describe()
        return {
            "name": self.name, "status": status, "error": error, "version": __version__,
            "updates": s.updates, "updates_total": w.updates, "samples": s.samples,
            "wall_s": round(s.wall_s, 3), "train_s": round(s.train_s, 3),
            "samples_per_s": s.samples / s.train_s if s.train_s else None,
            "updates_per_s": s.updates / s.train_s if s.train_s else None,
            "final": {k: v for k, v in final.items() if k not in ("staleness_mean", "staleness_max")},
            "accounting": {
                "submitted": s.updates, "pretrain": pretrain, "to_agents": to_agents,
                "rewarded": s.completed, "in_flight": s.updates - s.completed,
                "complete": all(a["unaccounted"] == 0 for a in agents), "agents": agents},
            "backend": described.pop("backend"), **described,
        }

    def save_checkpoint(self) -> None:
        state = {
            "config": self.config,
            "progress": asdict(self.state),
            "stream": self.workload.stream.position(),
            "backend": self.backend.state_dict(),
            "pretrain": None if self.twin is None else self.twin.state_dict(),
        }
        save_checkpoint(self.directory.checkpoint, state, kind="run")

    def load_checkpoint(self) -> None:
        state = load_checkpoint(self.directory.checkpoint, kind="run")
        try:
            if _experiment(state["config"]) != _experiment(self.config):
                raise CheckpointError(f"{self.directory.checkpoint} was written by another config")
            self.state = Counters(**state["progress"])
            self.workload.stream.restore(state["stream"])
            self.backend.load_state_dict(state["backend"])
            if self.twin is not None:
                self.twin.load_state_dict(state["pretrain"])
        except (KeyError, TypeError) as exc:
            raise CheckpointError(f"{self.directory.checkpoint}: missing or malformed entry "
                                  f"{exc}") from None

    def close(self) -> None:
        self.backend.close()


def _restore_handlers(previous: dict) -> None:
    for signum, handler in previous.items():
        # None: the handler was installed by C code (Ray's crash handler); Python cannot put it back
        signal.signal(signum, signal.SIG_DFL if handler is None else handler)


def make_backend(config: dict, network: Network, run_dir: Path):
    """The backend of ``config["backend"]`` around ``network``; Ray actors checkpoint themselves in
    ``backend.checkpoint_dir`` or ``run_dir/agents``."""
    backend = config["backend"]
    if backend["kind"] == "local":
        return LocalBackend(network, window=backend["window"], reward_delay=backend["reward_delay"])
    from async_coagents.backends import ray_env

    ray_env.prepare(backend["address"])  # before ray is imported: it reads the auth mode then
    from async_coagents.backends.ray_backend import RayBackend

    return RayBackend(network, backend,
                      agent_dir=backend["checkpoint_dir"] or str(Path(run_dir) / "agents"))


def train(config: dict, out: str | Path, *, progress: bool | None = None,
          data_dir: str | None = None) -> dict:
    """Run a validated ``config`` into a new run directory ``out``; returns the summary."""
    if data_dir:
        config = {**config, "data": {**config["data"], "data_dir": str(data_dir)}}
    directory = RunDirectory(out)
    if (directory.path / CONFIG).exists():
        raise ConfigError(f"{directory.path} already holds a run; use `coagents resume "
                          f"{directory.path}` or choose another --out")
    run = Run(config, directory, progress=progress)  # builds (and checks the data) first
    RunDirectory.create(out, config)
    try:
        return run.run()
    finally:
        run.close()


def resume(path: str | Path, *, progress: bool | None = None, address: str | None = None) -> dict:
    """Continue the run in ``path`` from its last checkpoint, bit-exactly.

    ``address`` moves a Ray run to another cluster (e.g. a restarted head); it changes where the
    agents run, never what they compute, and is recorded in the run's ``config.json`` once the
    run has joined that cluster and loaded its checkpoint (a wrong address changes nothing).
    """
    directory = RunDirectory(path)
    config = directory.config()
    if not directory.checkpoint.exists():
        raise CheckpointError(f"{directory.path} has no checkpoint to resume from")
    moved = address is not None and address != config["backend"]["address"]
    if moved:
        if config["backend"]["kind"] != "ray":
            raise ConfigError(f"--address applies to Ray runs; {directory.path} ran on the "
                              f"{config['backend']['kind']!r} backend")
        config = {**config, "backend": {**config["backend"], "address": address}}
    finished = directory.summary()
    if finished is not None and finished.get("status") == "completed":
        saved = load_checkpoint(directory.checkpoint, kind="run")["progress"]  # checks the file
        if saved["updates"] == finished.get("updates"):
            log.info("%s: the run is already complete; nothing to resume", directory.path)
            return finished
    run = Run(config, directory, progress=progress)  # joins the cluster: checks the address
    try:
        run.load_checkpoint()
        if moved:
            _write_json(directory.path / CONFIG, config)
        if run.state.updates >= run.workload.updates:  # finished, but its summary was lost
            summary = run.summary("completed")
            directory.write_summary(summary)
            return summary
        directory.keep_metrics_until(run.state.updates)
        return run.run()
    finally:
        run.close()


def evaluate_run(path: str | Path, *, splits: tuple[str, ...] = ("valid", "test")) -> dict:
    """Greedy evaluation of the last checkpoint of the run in ``path`` on ``splits``."""
    directory = RunDirectory(path)
    config = directory.config()
    if not directory.checkpoint.exists():
        raise CheckpointError(f"{directory.path} has no checkpoint to evaluate")
    run = Run({**config, "run": {**config["run"], "eval_train": "train" in splits}}, directory,
              progress=False)
    try:
        state = load_checkpoint(directory.checkpoint, kind="run")
        run.network.load_state_dict(state["backend"]["network"])
        progress = state["progress"]
        net = run.twin if run.twin is not None and not progress["switched"] else run.network
        if net is run.twin:
            net.load_state_dict(state["pretrain"])
        results = {"step": progress["updates"]}
        for name in splits:
            if name not in run.workload.eval_sets:
                raise ConfigError(f"no {name!r} split in this run; splits: "
                                  f"{sorted(run.workload.eval_sets)}")
            split = run.workload.eval_sets[name]
            metrics = evaluate(net, split.x, split.y)
            results.update({f"{name}_{k}": v for k, v in metrics.items()
                            if k not in LAYER_METRICS})
            if name == "test":
                results.update({k: metrics[k] for k in LAYER_METRICS})
        return results
    finally:
        run.close()

