"""What a running experiment shows: a progress bar when the output is a terminal, plain log lines
otherwise (CI logs, files), and one line per evaluation either way."""

from __future__ import annotations

import logging
import sys

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
