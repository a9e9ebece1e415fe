"""What a running experiment shows: a progress bar when the output is a terminal, plain log lines
otherwise (CI logs, files), and one line per evaluation either way; for a parallel sweep, one bar
over its members (:class:`SweepProgress`) instead of each member's own."""

from __future__ import annotations

import logging
import sys
import time

from tqdm import tqdm

log = logging.getLogger("async_coagents")

_SHOWN = ("train_loss", "valid_accuracy", "test_accuracy", "valid_mse", "test_mse")


def format_row(name: str, row: dict, total: int) -> str:
    """One evaluation as a log line: step, losses and accuracies or MSE, throughput."""
    parts = [f"[{name}] step {row['step']}/{total}"]
    for key in _SHOWN:
        value = row.get(key)
        if value is not None:
            parts.append(f"{key} {value:.4g}")
    if row.get("samples_per_s"):
        parts.append(f"{row['samples_per_s']:,.0f} samples/s")
    return "  ".join(parts)


class Progress:
    """A tqdm bar (on stderr) over the run's updates if it is a terminal, otherwise log lines."""

    def __init__(self, name: str, total: int, initial: int = 0, enabled: bool | None = None):
        self.name, self.total = name, total
        bar = sys.stderr.isatty() if enabled is None else enabled
        self.bar = tqdm(total=total, initial=initial, desc=name, unit="batch", disable=not bar,
                        dynamic_ncols=True, leave=True)

    def advance(self, n: int = 1) -> None:
        self.bar.update(n)

    def evaluation(self, row: dict) -> None:
        line = format_row(self.name, row, self.total)
        if self.bar.disable:
            log.info(line)
        else:
            self.bar.write(line)

    def close(self) -> None:
        self.bar.close()


def sweep_eta(finished_s: list[float], running_s: list[float], queued: int,
              slots: int) -> float | None:
    """Seconds until a parallel sweep ends, estimated from the members that finished in this
    command (``finished_s``, their durations): each running member still needs the mean duration
    less the time it has run (``running_s``), each queued one the mean duration, shared among
    ``slots`` workers. None before the first member has finished.

    >>> sweep_eta([10.0, 20.0], running_s=[5.0], queued=2, slots=2)
    20.0
    """
    if not finished_s:
        return None
    mean = sum(finished_s) / len(finished_s)
    left = sum(max(mean - s, 0.0) for s in running_s) + queued * mean
    return left / max(slots, 1)


class SweepProgress:
    """The progress of a parallel sweep: on a terminal one bar over its members (done of all,
    running, how the finished ones ended, ETA from :func:`sweep_eta`), and log lines redirected
    above it; otherwise nothing (the sweep prints a line per finished member either way, through
    :meth:`write`)."""

    def __init__(self, enabled: bool | None = None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.bar = None
        self._redirect = None
        self.durations: list[float] = []
        self.running = 0
        self.ended: dict[str, int] = {}
        self._shown = 0.0  # when the bar was last redrawn

    def begin(self, total: int, done: int) -> None:
        if not self.enabled:
            return
        from tqdm.contrib.logging import logging_redirect_tqdm

        self.bar = tqdm(total=total, initial=done, desc="sweep", unit="run", file=sys.stderr,
                        dynamic_ncols=True, leave=True,
                        bar_format="{desc}: {n_fmt}/{total_fmt} runs |{bar}| {elapsed}{postfix}")
        self._redirect = logging_redirect_tqdm()  # log lines above the bar, not through it
        self._redirect.__enter__()

    def started(self, member) -> None:
        self.running += 1

    def restarted(self, member) -> None:
        self.running -= 1

    def finished(self, member, seconds: float) -> None:
        self.running -= 1
        self.durations.append(seconds)
        self.ended[member.status] = self.ended.get(member.status, 0) + 1
        if self.bar is not None:
            self.bar.update(1)
            self._shown = 0.0  # show the new counts at once

    def refresh(self, queued: int, running_s: list[float], slots: int) -> None:
        if self.bar is None or time.monotonic() - self._shown < 1.0:
            return
        self._shown = time.monotonic()
        parts = [f"{self.running} running"]
        parts += [f"{n} {status}" for status, n in sorted(self.ended.items())]
        eta = sweep_eta(self.durations, running_s, queued, slots)
        parts.append("ETA " + ("?" if eta is None else tqdm.format_interval(eta)))
        self.bar.set_postfix_str(", ".join(parts), refresh=True)

    def write(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line)
        else:
            print(line)

    def close(self) -> None:
        if self._redirect is not None:
            self._redirect.__exit__(None, None, None)
            self._redirect = None
        if self.bar is not None:
            self.bar.close()
            self.bar = None
