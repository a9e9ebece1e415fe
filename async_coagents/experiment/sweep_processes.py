"""The local-process executor of a parallel sweep (``coagents train ... --jobs N``): each member
runs in a worker process of its own, started with the ``spawn`` method (no Ray or numpy state of
this process is inherited), which trains or resumes the member's run directory exactly as the
in-process sweep does (:func:`~async_coagents.experiment.sweep.run_in`) and sends back how it
ended. A process per member keeps a crash to its member: a worker that dies (killed, a segfault,
out of memory) is reported as :class:`~async_coagents.experiment.sweep.Died` and the sweep resumes
that member from its checkpoint.

A worker puts itself in a process group of its own, so a Ctrl-C at the terminal reaches only the
sweep's process, which passes each one on exactly once (:meth:`ProcessExecutor.interrupt`); a
worker whose sweep process is gone stops itself as at SIGTERM (checkpoint written). Each worker
runs numpy's BLAS on one thread (``OPENBLAS_NUM_THREADS`` and friends, unless already set; see
:func:`one_blas_thread`), so a member's numbers do not depend on ``--jobs``.

This module imports only the standard library at module level: a spawned worker imports it first,
and must set its thread count before numpy is loaded.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from async_coagents.experiment.sweep import Died, Member, Outcome

#: The environment variables that set the thread count of numpy's BLAS (OpenBLAS, MKL, OpenMP).
THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
log = logging.getLogger(__name__)


def one_blas_thread() -> None:
    """One BLAS thread for numpy in this process, unless the environment already says how many;
    it takes effect only before numpy is imported. A multi-threaded BLAS splits a large matrix
    product differently, and its last bits differ: a run's numbers would depend on the machine's
    core count (measured: a 100-update Fashion-MNIST off-policy critic run ends with other
    weights on two threads than on one), and would differ from the same run on Ray, whose
    workers Ray gives one thread."""
    for variable in THREAD_VARIABLES:
        os.environ.setdefault(variable, "1")


class ProcessExecutor:
    """Up to ``jobs`` members at once (0: one per CPU), each in its own spawned worker process.

    ``setup`` (``"module:function"``) is called in each worker before its member runs: a hook for
    tests (and profilers) that must act inside the worker.
    """

    def __init__(self, jobs: int, *, data_dir: str | None = None, address: str | None = None,
                 setup: str | None = None) -> None:
        cpus = available_cpus()
        self.jobs = jobs or cpus  # 0: one per CPU
        self.data_dir = data_dir
        self.address = address
        self.setup = setup
        self.context = multiprocessing.get_context("spawn")
        self.workers: dict[multiprocessing.process.BaseProcess, Connection] = {}
        self.outcomes: dict[multiprocessing.process.BaseProcess, list[Outcome]] = {}

    def slots(self) -> int:
        return self.jobs

    def start(self, group: list[Member], targets: list[Path]
              ) -> multiprocessing.process.BaseProcess:
        receive, send = self.context.Pipe(duplex=False)
        process = self.context.Process(
            target=_worker, name=f"coagents-sweep-{group[0].name}",
            args=(send, [os.path.abspath(t) for t in targets], [m.config for m in group],
                  self.data_dir, self.address, self.setup, os.getpid()))
        process.start()
        send.close()  # the worker holds the sending end: EOF here once it is gone
        self.workers[process] = receive
        return process

    def wait(self, timeout_s: float) -> list[tuple[object, list[Outcome] | Died]]:
        from async_coagents.experiment.sweep import Died

        if not self.workers:
            return []
        ready = set(wait([*self.workers.values(), *(p.sentinel for p in self.workers)],
                         timeout_s))
        for process, connection in self.workers.items():
            if connection in ready:  # read as soon as it is sent: a large outcome fills the pipe
                self._receive(process, connection)
        ended = []
        for process in [p for p in self.workers if p.sentinel in ready]:
            process.join()
            connection = self.workers.pop(process)
            if process not in self.outcomes:
                self._receive(process, connection)  # sent just before it exited
            connection.close()
            outcome = self.outcomes.pop(process, None)
            ended.append((process, outcome if outcome is not None
                           else Died(_how_it_ended(process.exitcode))))
        return ended

    def _receive(self, process, connection: Connection) -> None:
        try:
            if connection.poll():
                self.outcomes[process] = connection.recv()
        except Exception:  # EOF without an outcome, or half a message from a killed worker
            pass

    def interrupt(self, level: int) -> None:
        for process in self.workers:
            if not process.is_alive():
                continue
            if level >= 3:
                process.kill()
            else:  # the worker's run stops at its next batch boundary (1), or at once (2)
                _signal(process.pid, signal.SIGINT)

    def close(self) -> None:
        """Stop workers still running (only after an error in the sweep): SIGTERM, which stops
        their runs with a checkpoint, then SIGKILL for any that does not end within 30 s."""
        for process in self.workers:
            if process.is_alive():
                _signal(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for process, connection in self.workers.items():
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()
            connection.close()
        self.workers.clear()


def available_cpus() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # it has just ended
        os.kill(pid, signum)


def _how_it_ended(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"its worker process was killed by {name}"
    return f"its worker process exited with status {exitcode} before it reported"


# ---- in the worker ------------------------------------------------------------------------------
def _worker(connection: Connection, targets: list[str], configs: list[dict],
            data_dir: str | None, address: str | None, setup: str | None,
            parent: int) -> None:
    """The body of a worker process: run one group of members and send their outcomes to the
    sweep."""
    os.setpgid(0, 0)  # Ctrl-C at the terminal reaches the sweep only; it passes it on once
    one_blas_thread()  # before numpy is imported
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format=f"{Path(targets[0]).name}: %(message)s")
    threading.Thread(target=_stop_when_orphaned, args=(parent,), daemon=True).start()
    from async_coagents.experiment.sweep import FAILED, INTERRUPTED, Outcome, run_group_in

    try:
        if setup:
            module, _, function = setup.partition(":")
            getattr(importlib.import_module(module), function)()
        outcomes = run_group_in([Path(t) for t in targets], configs, progress=False,
                                data_dir=data_dir, address=address)
    except KeyboardInterrupt:
        outcomes = [Outcome(INTERRUPTED)] * len(targets)
    except Exception as exc:  # a bug: the members fail with it, the traceback goes to stderr
        traceback.print_exc()
        outcomes = [Outcome(FAILED, f"unexpected {type(exc).__name__} in its worker process: "
                                    f"{exc}")] * len(targets)
    connection.send(outcomes)
    connection.close()


def _stop_when_orphaned(parent: int) -> None:
    """Stop this worker's run (as SIGTERM does: at a batch boundary, checkpoint written) once the
    sweep's process is gone: nobody would record its outcome."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)
