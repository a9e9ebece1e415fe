"""The regression fixture of the redesign (issue 10): a short run of every learning rule, unit
family, learner and backend setting, recorded before the code moved, that every later version must
reproduce bit for bit.

What a case records, through the public experiment API only (a config in, a run directory out), so
the fixture outlives any reorganisation of the internals:

* ``metrics``: every evaluation row of ``metrics.jsonl`` except the timings (greedy losses,
  accuracies or MSE, per-layer entropy and sparsity, staleness), compared exactly;
* ``accounting``: per agent, the batches applied, dropped and lost and the staleness counters;
* ``arrays``: the SHA-256 of the bytes of every numeric array in the final checkpoint's backend
  state (weights, optimizer and baseline states, critics), as a sorted multiset: a later version
  may arrange its state differently, but it must still hold every one of these arrays, bit for
  bit;
* ``scalars``: every floating-point number in that state (EMA baselines, optimizer step counts kept
  as floats), as a sorted multiset, under the same rule.

Record again (only when a change is *meant* to alter the numbers, and say so in the commit)::

    COAGENTS_RECORD_REGRESSION=1 python -m pytest tests/test_regression.py
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from async_coagents.checkpoint import load_checkpoint
from async_coagents.experiment import config as cfg
from async_coagents.experiment.run import train

FIXTURE = Path(__file__).parent / "fixtures" / "regression.json"

_SHORT = ["run.updates=120", "run.eval_every=40"]
_MUX = ["network.hidden=[12, 10]", *_SHORT]
_CRITIC = ["network.hidden=[12, 10, 8]", "network.critic_units=16", *_SHORT]
_CORRELATED = ["data.means=4", "data.segments=30", "data.difficulty=0.95", "run.eval_every=40"]

#: name -> (built-in config, overrides). Every rule, unit family, output, learner, optimizer,
#: option and backend setting of wave 1.
CASES: dict[str, tuple[str, list[str]]] = {
    "reinforce": ("quickstart", ["network.rule=reinforce", *_MUX]),
    "baseline": ("quickstart", _MUX),
    "input-baseline": ("quickstart", ["network.rule=input-baseline", *_MUX]),
    "layer-baseline": ("quickstart", ["network.rule=layer-baseline", *_MUX]),
    "ac": ("quickstart", ["network.rule=ac", *_CRITIC]),
    "ac-offpolicy": ("quickstart", ["network.rule=ac-offpolicy", *_CRITIC]),
    "ac-offpolicy-advantage": ("quickstart", ["network.rule=ac-offpolicy-advantage", *_CRITIC]),
    "ac-mc": ("quickstart", ["network.rule=ac-mc", *_CRITIC]),
    "ac-reinforce": ("quickstart", ["network.rule=ac-reinforce", "network.reinforce_updates=50",
                                    *_CRITIC]),
    "ac-offpolicy-reinforce": ("quickstart", ["network.rule=ac-offpolicy-reinforce",
                                              "network.reinforce_updates=50", *_CRITIC]),
    "ac-offpolicy-2-critic-layers": ("quickstart", ["network.rule=ac-offpolicy",
                                                    "network.critic_layers=2", *_CRITIC]),
    "categorical-k3-symmetric": ("quickstart", ["network.units=categorical", "network.n_actions=3",
                                                "network.normalisation=symmetric", *_MUX]),
    "categorical-k5-index-ac-offpolicy": ("quickstart", [
        "network.units=categorical", "network.n_actions=5", "network.normalisation=index",
        "network.rule=ac-offpolicy", *_CRITIC]),
    "subset": ("quickstart", ["network.subset=4", *_MUX]),
    "staged": ("quickstart", ["network.staged=true", "network.hidden=[12, 10]",
                              "data.stream=shuffled", "run.updates=0", "run.epochs=30",
                              "run.eval_every=20"]),
    "sgd": ("quickstart", ["network.optimizer=sgd", "network.lr=0.1", *_MUX]),
    "adam-float64": ("quickstart", ["network.optimizer=adam", "network.dtype=float64", *_MUX]),
    "straight-through": ("quickstart", ["network.learner=straight-through", *_MUX]),
    "backprop-tanh": ("quickstart", ["network.learner=backprop", "network.activation=tanh", *_MUX]),
    "class-blocked": ("quickstart", ["data.stream=class-blocked", "data.run_length=3",
                                     "data.purity=0.8", *_MUX]),
    "gaussian-pg": ("correlated-pg-d0", [*_CORRELATED]),
    "gaussian-identity-ac": ("correlated-pg-d0", [
        "network.activation=identity", "network.rule=ac", "network.hidden=[10, 8]",
        "network.critic_units=16", *_CORRELATED]),
    "gaussian-partition-ds": ("correlated-pg-d0", [
        "network.partition=ds", "network.hidden=[10, 8]", *_CORRELATED]),
    "gaussian-units-readout": ("quickstart", ["network.units=gaussian", "network.output=readout",
                                              *_MUX]),
    "gaussian-pretrain": ("correlated-pg-d0", ["run.pretrain_updates=40", *_CORRELATED]),
    "backprop-adam-correlated": ("correlated-backprop-d0", [*_CORRELATED]),
    "policy-gradient": ("correlated-pg-d0", ["network.learner=policy-gradient",
                                             "network.rule=reinforce", *_CORRELATED]),
    "window4-delay2": ("quickstart", ["backend.window=4", "backend.reward_delay=2", *_MUX]),
    "ac-offpolicy-window3-delay1": ("quickstart", ["network.rule=ac-offpolicy",
                                                   "backend.window=3", "backend.reward_delay=1",
                                                   *_CRITIC]),
    "update-every-per-layer": ("quickstart", ["backend.update_every=[2, 1, 3]", *_MUX]),
    "units-per-actor": ("quickstart", ["backend.units_per_actor=4", "backend.window=3",
                                       "backend.reward_delay=1", *_MUX]),
    "input-baseline-window2-delay1": ("quickstart", ["network.rule=input-baseline",
                                                     "backend.window=2",
                                                     "backend.reward_delay=1", *_MUX]),
}

#: Cases that need Fashion-MNIST (skipped or failed as conftest.require_dataset says).
DATA_CASES: dict[str, tuple[str, list[str]]] = {
    "fashion-ac-offpolicy": ("fashion-ac-offpolicy", [
        "network.hidden=[16, 16, 16]", "network.critic_units=32", "run.epochs=0",
        "run.updates=60", "run.eval_every=30"]),
}

_TIMINGS = ("wall_s", "samples_per_s")
_ACCOUNTING = ("name", "forwards", "applied", "dropped", "evicted", "unknown", "duplicates",
               "replayed", "staleness_sum", "staleness_max", "applied_batches", "dropped_batches",
               "lost_batches")


def case_config(name: str, extra: list[str] = ()) -> dict:
    """The validated config of case ``name`` (``extra`` overrides appended, e.g. the backend)."""
    base, overrides = {**CASES, **DATA_CASES}[name]
    ((config, _),) = cfg.load(base, [*overrides, *extra])
    return config


def digests(state: object) -> tuple[list[str], list[str]]:
    """SHA-256 of every numeric array in ``state`` (nested dicts and lists), and the exact
    ``repr`` of every float in it; both sorted."""
    found: list[str] = []
    floats: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, np.ndarray):
            if node.dtype.kind in "fiub":
                found.append(hashlib.sha256(np.ascontiguousarray(node).tobytes()).hexdigest())
        elif isinstance(node, float | np.floating):
            floats.append(repr(float(node)))
        elif isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, list | tuple):
            for value in node:
                walk(value)

    walk(state)
    return sorted(found), sorted(floats)


def observe(run_dir: Path) -> dict:
    """What a finished run directory says, in the fixture's terms."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
            if line]
    summary = json.loads((run_dir / "summary.json").read_text())
    state = load_checkpoint(run_dir / "checkpoint.ckpt", kind="run")
    arrays, scalars = digests(state["backend"])
    return {
        "status": summary["status"],
        "metrics": [{k: v for k, v in row.items() if k not in _TIMINGS} for row in rows],
        "accounting": [{k: agent[k] for k in _ACCOUNTING}
                       for agent in summary["accounting"]["agents"]],
        "arrays": arrays,
        "scalars": scalars,
    }


def run_case(name: str, out: Path, extra: list[str] = ()) -> dict:
    """Train case ``name`` into ``out`` and observe it."""
    train(case_config(name, extra), out, progress=False)
    return observe(out)


def compare(name: str, got: dict, want: dict) -> list[str]:
    """The differences between an observation and the recorded one (empty: identical)."""
    problems = []
    for key in ("status", "metrics", "accounting"):
        if got[key] != want[key]:
            problems.append(f"{name}: {key} differ:\n  got  {got[key]}\n  want {want[key]}")
    for key in ("arrays", "scalars"):
        missing = _multiset_minus(want[key], got[key])
        if missing:
            problems.append(f"{name}: {len(missing)} of the {len(want[key])} recorded {key} are no "
                            f"longer in the final state, bit for bit: {missing[:4]}")
    return problems


def _multiset_minus(a: list[str], b: list[str]) -> list[str]:
    left = list(b)
    missing = []
    for item in a:
        if item in left:
            left.remove(item)
        else:
            missing.append(item)
    return missing


def load_fixture() -> dict:
    return json.loads(FIXTURE.read_text(encoding="utf-8"))
