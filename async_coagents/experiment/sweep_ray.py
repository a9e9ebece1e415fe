"""The Ray executor of a parallel sweep (``sweep.executor = "ray"``, ``--executor ray``): each
member runs as one Ray task holding ``sweep.cpus_per_member`` CPUs, which trains or resumes the
member's run directory exactly as the in-process sweep does
(:func:`~async_coagents.experiment.sweep.run_in`) and returns how it ended.

The task writes the member's run directory where the sweep directory is, so on a cluster the
sweep directory must be on storage every node sees at the same path (NFS or similar); a task on a
node that cannot see it, or cannot write there, fails its member with an error naming the node.

Ray is a run-level executor here, separate from the layer-as-actor backend; the two combine: a
member whose config says ``backend.kind = "ray"`` starts its layer actors from inside its task, on
the cluster the task runs in (Ray is already initialised in the task's worker, so the backend
joins it rather than starting Ray), and they end with the member.

A task whose worker dies (its node removed, the worker killed) is not retried by Ray
(``max_retries=0``): the sweep resumes that member from its own checkpoint in a new task
(``sweep.max_retries``), since a retried task must resume, not start again. A new attempt first
waits for the lock of the member's run directory, which the dead attempt's process may still hold
while it exits.

Ray is started or joined by the Ray backend's own :func:`~async_coagents.backends.ray_backend.connect`
(a private local instance unless an address is given; its log lines stay in Ray's log files).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from pathlib import Path

from async_coagents.backends import ray_env
from async_coagents.errors import ConfigError
from async_coagents.experiment.rundir import RunDirectory
from async_coagents.experiment.sweep import (
    FAILED,
    INTERRUPTED,
    MANIFEST,
    Died,
    Execution,
    Member,
    Outcome,
    run_group_in,
)

#: Seconds a new attempt at a member waits for the previous attempt's process to let go of the
#: run directory's lock.
LOCK_WAIT_S = 60.0
log = logging.getLogger(__name__)


def member_task(targets: list[str], configs: list[dict], data_dir: str | None,
                sweep_dir: str) -> list[Outcome]:
    """The body of a group's Ray task (on whichever node Ray chose): one member, or members
    packed as replicas."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,  # into Ray's worker log
                        format=f"{Path(targets[0]).name}: %(message)s")
    here = f"node {socket.gethostname()}"
    shared = ("a sweep on a Ray cluster needs its directory on storage every node sees at the "
              "same path (NFS or similar)")
    if not (Path(sweep_dir) / MANIFEST).is_file():
        return [Outcome(FAILED, f"the sweep directory {sweep_dir} is not visible on {here}: "
                                f"{shared}")] * len(targets)
    if not os.access(sweep_dir, os.W_OK | os.X_OK):
        return [Outcome(FAILED, f"the sweep directory {sweep_dir} is not writable on {here}: "
                                f"{shared}")] * len(targets)
    for target in targets:
        RunDirectory(target).wait_unlocked(LOCK_WAIT_S)
    return run_group_in([Path(t) for t in targets], configs, progress=False, data_dir=data_dir)


class RayExecutor:
    """Members as Ray tasks on the cluster at ``execution.address`` (a private local instance
    when empty), at most ``execution.jobs`` at once (0: as many as the cluster's CPUs hold)."""

    def __init__(self, execution: Execution, sweep_dir: Path, *, data_dir: str | None = None) -> None:
        ray_env.prepare(execution.address)  # before ray is imported: it reads the auth mode then
        import ray

        from async_coagents.backends.ray_backend import connect

        self.ray = ray
        self.started_ray = connect(execution.address)
        try:
            check_cpus(execution, ray.nodes(), self.started_ray)
        except BaseException:
            self.close()
            raise
        self.sweep_dir = os.path.abspath(sweep_dir)
        self.data_dir = data_dir
        self.jobs = execution.jobs
        self.cpus = execution.cpus_per_member
        self.task = ray.remote(member_task).options(
            num_cpus=self.cpus, max_retries=0, scheduling_strategy="SPREAD")
        self.running: dict = {}  # ObjectRef -> member name
        self._capacity = (0.0, 1)  # (when, slots) of the last look at the cluster

    def slots(self) -> int:
        if self.jobs:
            return self.jobs
        checked, slots = self._capacity
        if time.monotonic() - checked > 2.0:  # nodes come and go
            cpus = self.ray.cluster_resources().get("CPU", 0.0)
            slots = max(1, int(cpus // self.cpus))
            self._capacity = (time.monotonic(), slots)
        return slots

    def start(self, group: list[Member], targets: list[Path]):
        ref = self.task.remote([os.path.abspath(t) for t in targets], [m.config for m in group],
                               self.data_dir, self.sweep_dir)
        self.running[ref] = group[0].name
        return ref

    def wait(self, timeout_s: float) -> list[tuple[object, list[Outcome] | Died]]:
        if not self.running:
            return []
        refs = list(self.running)
        ready, rest = self.ray.wait(refs, num_returns=1, timeout=timeout_s)
        if ready and rest:
            more, _ = self.ray.wait(rest, num_returns=len(rest), timeout=0)
            ready += more
        ended = []
        for ref in ready:
            del self.running[ref]
            ended.append((ref, self._outcome(ref)))
        return ended

    def _outcome(self, ref) -> list[Outcome] | Outcome | Died:
        from ray.exceptions import RayError, RayTaskError, TaskCancelledError

        try:
            return self.ray.get(ref)
        except TaskCancelledError:  # Ctrl-C before its run had trapped signals
            return Outcome(INTERRUPTED)  # for every member
        except RayTaskError as exc:  # an exception that is not the project's: a bug, or the
            cause = exc.cause if isinstance(exc.cause, BaseException) else None  # package missing
            what = f"{type(cause).__name__}: {cause}" if cause else _first_line(exc)
            return Outcome(FAILED, f"its Ray task raised {what}")
        except RayError as exc:  # the task's worker or node died
            return Died(f"its Ray task died ({type(exc).__name__}: {_first_line(exc)})")

    def interrupt(self, level: int) -> None:
        for ref in self.running:
            # 1: a KeyboardInterrupt (SIGINT) in the task, which the run traps: it stops at its
            # next batch boundary; 2 or more: the task's worker is killed, the last checkpoint stays
            self.ray.cancel(ref, force=level >= 2, recursive=False)

    def close(self) -> None:
        for ref in getattr(self, "running", {}):  # only after an error in the sweep
            self.ray.cancel(ref, force=True, recursive=False)
        self.running = {}
        if self.started_ray:
            from async_coagents.backends.ray_backend import disconnect

            disconnect()


def check_cpus(execution: Execution, nodes: list[dict], private: bool) -> None:
    """Fail, naming what is needed and offered, when no alive node has the CPUs of a member's
    task: Ray would keep the tasks waiting for ever, and the sweep would hang without a word."""
    alive = [n for n in nodes if n["Alive"]]
    most = max((n["Resources"].get("CPU", 0.0) for n in alive), default=0.0)
    if most >= execution.cpus_per_member:
        return
    where = (f"the cluster at {execution.address}" if execution.address else
             "the private local Ray instance" if private else "the Ray instance joined")
    raise ConfigError(f"no node of {where} has the {execution.cpus_per_member:g} CPUs a member's "
                      f"task needs (sweep.cpus_per_member); the most one node offers is {most:g}: "
                      "lower sweep.cpus_per_member, or add a worker with more CPUs "
                      "(cluster/start-worker.sh --num-cpus N)")


def _first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of Ray's message, at most ``limit`` characters (Ray's run on)."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if len(line) <= limit else line[:limit - 3] + "..."
