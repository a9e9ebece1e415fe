"""The engine against the paper's own code, like for like (``coagents bench --only paper-code``).

Both codes run the same experiment of the paper's ``even_longer`` set (the correlated stream,
d = 0.95, 1 x 50 units, batch 32: the Gaussian coagent network and the backprop network), at the
same length, one thread each, one run after the other, ``rounds`` times in alternation:

* **whole run**: each code's own run with its own evaluations (the paper's: the validation and
  test sets after every mean-block, and once at the start also the whole training stream; ours:
  the validation and test sets after every mean-block), from its set-up (seeding, the stream and
  the evaluation sets, the network) to its results on disk;
* **update-only**: the same run without evaluations (the paper's with its evaluations made
  no-ops; ours evaluated at the start and the end only, two evaluations of two sets).

The paper's side runs in the Python that has torch, through ``async_coagents/paper_driver.py``
(a standalone script: this package never imports torch), on the user's checkout of the paper's
repository (``Dhawgupta/gupta2021structural``). Printed, never asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from async_coagents.errors import ConfigError
from async_coagents.experiment import config as cfg

#: Paper experiment JSON (in its checkout) -> our built-in config of the same experiment.
EXPERIMENTS = {
    "pg": ("regression/experiments/longer_correlation/even_longer/d95/correlated_pg.json",
           "correlated-pg-d95"),
    "bp": ("regression/experiments/longer_correlation/even_longer/d95/correlated_bp.json",
           "correlated-backprop-d95"),
}
DRIVER = Path(__file__).resolve().parent.parent / "paper_driver.py"
MEANS = 200


def check_checkout(paper_code: str | Path, paper_python: str) -> None:
    """Clear errors for a missing checkout or a Python without torch."""
    root = Path(paper_code)
    for experiment, _ in EXPERIMENTS.values():
        if not (root / experiment).is_file():
            raise ConfigError(f"--paper-code {root}: no {experiment} (give the checkout of "
                              "Dhawgupta/gupta2021structural)")
    try:
        probe = subprocess.run([paper_python, "-c", "import torch, sklearn"],
                               capture_output=True, text=True)
        failure = probe.stderr.strip()[-300:] if probe.returncode else None
    except OSError as error:
        failure = str(error)
    if failure is not None:
        raise ConfigError(f"--paper-python {paper_python} cannot import torch and scikit-learn, "
                          f"which the paper's code needs: {failure}")


def paper_run(paper_code: str | Path, paper_python: str, experiment: str, segments: int,
              evaluate: bool, work: Path) -> dict:
    """One run of the paper's code through the driver; its JSON line."""
    command = [paper_python, str(DRIVER), "--paper-code", str(paper_code), "--config",
               experiment, "--means", str(MEANS), "--segments", str(segments), "--work-dir",
               str(work)] + ([] if evaluate else ["--no-eval"])
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the paper's code failed ({' '.join(command)}):\n"
                           f"{done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def our_run(name: str, segments: int, evaluate: bool, work: Path) -> dict:
    """One run of ours (``coagents train NAME``) at the same length; its wall time and final
    test MSE."""
    from async_coagents.experiment.run import train

    updates = MEANS * segments
    sets = [f"data.means={MEANS}", f"data.segments={segments}", "run.seed=1"]
    if not evaluate:
        sets.append(f"run.eval_every={updates}")
    config = cfg.load(name, sets)[0][0]
    out = Path(tempfile.mkdtemp(prefix="ours-", dir=work)) / "run"
    start = time.perf_counter()
    summary = train(config, out, progress=False)
    seconds = time.perf_counter() - start
    return {"total_s": seconds, "updates": summary["updates"],
            "final_test_mse": summary["final"]["test_mse"]}


def paper_code(paper_code: str | Path, paper_python: str = sys.executable, *,
               segments: int = 160, rounds: int = 2,
               report: Callable[[str], None] = print) -> dict:
    """Run both codes alternately ``rounds`` times at ``200 x segments`` updates; print per
    experiment the whole-run and update-only seconds of each and their ratios."""
    if segments < 1 or rounds < 1:
        raise ConfigError("--segments and --rounds must be >= 1")
    check_checkout(paper_code, paper_python)
    figures: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="paper-bench-") as scratch:
        work = Path(scratch)
        for round_ in range(rounds):
            for key, (experiment, ours) in EXPERIMENTS.items():
                for evaluate in (True, False):
                    mode = "whole" if evaluate else "update-only"
                    theirs = paper_run(paper_code, paper_python, experiment, segments,
                                       evaluate, work)
                    mine = our_run(ours, segments, evaluate, work)
                    row = figures.setdefault(f"{key}-{mode}", {"paper_s": [], "ours_s": []})
                    row["paper_s"].append(theirs["total_s"])
                    row["ours_s"].append(mine["total_s"])
                    report(f"round {round_ + 1} {key:<2} {mode:<11} paper {theirs['total_s']:8.2f}"
                           f" s ({theirs['updates']:,} updates, test MSE "
                           f"{theirs['final_test_mse']:.4f})   ours {mine['total_s']:7.2f} s "
                           f"({mine['updates']:,} updates, test MSE "
                           f"{mine['final_test_mse']:.4f})   ratio "
                           f"{theirs['total_s'] / mine['total_s']:.1f}x")
    for name, row in figures.items():
        ratios = [p / o for p, o in zip(row["paper_s"], row["ours_s"], strict=True)]
        row["ratios"] = ratios
        report(f"{name:<16} paper / ours: " + " / ".join(f"{r:.1f}x" for r in ratios))
    return {"updates": MEANS * segments, "rounds": rounds, "figures": figures}
