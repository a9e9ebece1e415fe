"""The structure of a run checkpoint (``checkpoint.ckpt`` of kind "run"): which entries it holds
and of which types, checked once when the file is read (by ``resume`` and ``eval`` alike), so that
a CRC-valid file with a missing, extra or mistyped entry is a :class:`CheckpointError` naming the
entry (``backend.network.layers[1].optimizer.steps``) and never reaches the objects it restores.

What needs the network to check (array sizes and dtypes, layer names, the optimizer kind) the
objects check when they load their state; this module knows only the file's shape.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import fields
from itertools import pairwise

import numpy as np

from async_coagents.core.agent import AgentStats
from async_coagents.errors import CheckpointError

__all__ = ["check_run_state"]

Check = Callable[[object, str], None]
_INT64_MAX = 2**63 - 1


class _Invalid(Exception):
    def __init__(self, where: str, problem: str) -> None:
        super().__init__(where, problem)
        self.where, self.problem = where, problem


def _short(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"an array of dtype {value.dtype} and shape {value.shape}"
    text = repr(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    return f"{type(value).__name__} {text}"


# ---- leaves -----------------------------------------------------------------------------------
def count(value: object, where: str) -> None:
    """A non-negative integer of at most 64 bits (a counter, an id, a size)."""
    if type(value) is not int or not 0 <= value <= _INT64_MAX:
        raise _Invalid(where, f"must be a non-negative integer, got {_short(value)}")


def integer(value: object, where: str) -> None:
    """Any integer of at most 64 bits (a fingerprint)."""
    if type(value) is not int:
        raise _Invalid(where, f"must be an integer, got {_short(value)}")


def number(value: object, where: str) -> None:
    """A finite float (an int is accepted)."""
    if type(value) not in (int, float) or not math.isfinite(value):
        raise _Invalid(where, f"must be a finite number, got {_short(value)}")


def positive(value: object, where: str) -> None:
    """A finite number > 0 (a learning rate)."""
    if type(value) not in (int, float) or not (math.isfinite(value) and value > 0):
        raise _Invalid(where, f"must be a finite number > 0, got {_short(value)}")


def flag(value: object, where: str) -> None:
    if type(value) is not bool:
        raise _Invalid(where, f"must be true or false, got {_short(value)}")


def text(value: object, where: str) -> None:
    if type(value) is not str:
        raise _Invalid(where, f"must be a string, got {_short(value)}")


def table_of_anything(value: object, where: str) -> None:
    """A table whose content another check owns (the config, the stream position)."""
    if type(value) is not dict:
        raise _Invalid(where, f"must be a table, got {_short(value)}")


def anything(value: object, where: str) -> None:
    return None


def array(kinds: str, ndim: int | None = None) -> Check:
    """A numpy array whose dtype kind is one of ``kinds`` ("f" float, "i"/"u" int, "b" bool)."""
    def check(value: object, where: str) -> None:
        if type(value) is not np.ndarray or value.dtype.kind not in kinds or (
                ndim is not None and value.ndim != ndim):
            dims = f"{ndim}-d " if ndim is not None else ""
            raise _Invalid(where, f"must be a {dims}array of kind {kinds!r}, got {_short(value)}")
    return check


def batch_record(value: object, where: str) -> None:
    """A flat list of ``[start, end)`` ranges: non-negative ints, sorted, disjoint."""
    list_of(count)(value, where)
    if len(value) % 2 or any(a >= b for a, b in pairwise(value)):
        raise _Invalid(where, "must be sorted, disjoint [start, end) ranges of batch ids, got "
                              f"{_short(value)}")


# ---- containers -------------------------------------------------------------------------------
def optional(check: Check) -> Check:
    def check_optional(value: object, where: str) -> None:
        if value is not None:
            check(value, where)
    return check_optional


def list_of(check: Check) -> Check:
    def check_list(value: object, where: str) -> None:
        if type(value) is not list:
            raise _Invalid(where, f"must be a list, got {_short(value)}")
        for i, item in enumerate(value):
            check(item, f"{where}[{i}]")
    return check_list


def pair(first: Check, second: Check) -> Check:
    def check_pair(value: object, where: str) -> None:
        if type(value) is not list or len(value) != 2:
            raise _Invalid(where, f"must be a pair, got {_short(value)}")
        first(value[0], f"{where}[0]")
        second(value[1], f"{where}[1]")
    return check_pair


def table(entries: dict[str, Check], may_be_missing: frozenset | set = frozenset()) -> Check:
    """A table with exactly these entries (those of ``may_be_missing`` may be absent: entries
    added after checkpoints of an earlier version were written)."""
    def check_table(value: object, where: str) -> None:
        if type(value) is not dict:
            raise _Invalid(where, f"must be a table, got {_short(value)}")
        for key, check in entries.items():
            if key not in value:
                if key in may_be_missing:
                    continue
                raise _Invalid(f"{where}.{key}", "is missing")
            check(value[key], f"{where}.{key}")
        extra = [key for key in value if key not in entries]
        if extra:
            raise _Invalid(f"{where}.{extra[0]}", "is not an entry of this checkpoint format")
    return check_table


def tagged(tag: str, variants: dict[str, dict[str, Check]],
           may_be_missing: dict[str, set[str]] | None = None) -> Check:
    """A table whose ``tag`` entry says which of ``variants`` it is (``may_be_missing``: per
    variant, the entries that may be absent, as for :func:`table`)."""
    missing = may_be_missing or {}
    checks = {name: table({tag: text, **entries}, missing.get(name, frozenset()))
              for name, entries in variants.items()}

    def check_tagged(value: object, where: str) -> None:
        if type(value) is not dict:
            raise _Invalid(where, f"must be a table, got {_short(value)}")
        if tag not in value:
            raise _Invalid(f"{where}.{tag}", "is missing")
        name = value[tag]
        if type(name) is not str or name not in checks:
            raise _Invalid(f"{where}.{tag}", f"must be one of {sorted(checks)}, got {_short(name)}")
        checks[name](value, where)
    return check_tagged


_TYPES: dict[str, Check] = {"int": count, "float": number, "bool": flag, "str": text}


def dataclass_table(cls: type, **extra: Check) -> Check:
    """The table of a dataclass's fields (``int`` a count, ``float`` a finite number, ``bool``,
    ``str``, each possibly ``| None``), plus ``extra`` entries."""
    entries: dict[str, Check] = {}
    for f in fields(cls):
        name = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
        base, _, rest = name.partition(" | ")
        check = _TYPES.get(base, anything)
        entries[f.name] = optional(check) if rest == "None" else check
    may_be_missing = {f.name for f in fields(cls) if f.metadata.get("may_be_missing")}
    return table({**entries, **extra}, may_be_missing)


# ---- the run checkpoint -----------------------------------------------------------------------
_FLOATS = array("f")
_VECTOR = array("f", ndim=1)
_OPTIMIZER = tagged("name", {
    "sgd": {"lr": positive, "steps": count},
    "rmsprop": {"lr": positive, "steps": count, "v": _VECTOR},
    "adam": {"lr": positive, "steps": count, "m": _VECTOR, "v": _VECTOR},
})
_STATE_BASELINE = {"params": _VECTOR, "optimizer": _OPTIMIZER}
_BASELINE = tagged("name", {
    "none": {},
    "ema": {"decay": number, "frozen": flag, "value": optional(number)},
    "state": _STATE_BASELINE,
})
_RNG = table({"bit_generator": text, "state": table_of_anything, "has_uint32": count,
              "uinteger": count})
_PENDING = table({
    "x": array("f", ndim=2), "cache": list_of(optional(array("biuf"))),
    "out": optional(array("f", ndim=2)),  # None: the input baseline sends nothing on
    "version": count, "dist": optional(_FLOATS), "action": optional(array("biuf")),
    "mask": optional(array("b", ndim=1)), "greedy": flag,
    "reward": optional(array("f", ndim=1)),
    "feedback": optional(array("f")),  # (B, *the message shape of the rule above)
    "fired": array("b", ndim=1),  # backend.fire: the streams the layer fired on
    "logp": array("f", ndim=2),  # network.importance_cap: the sampling log-probabilities
}, may_be_missing={"fired", "logp"})
_LAYER = {
    "name": text, "sizes": list_of(count), "params": _VECTOR, "optimizer": _OPTIMIZER,
    "version": count, "stats": dataclass_table(AgentStats, staleness_mean=number),
    "accumulated": optional(_VECTOR), "accumulated_batches": count,
    "pending": list_of(pair(count, _PENDING)),
    "records": table({"applied": batch_record, "dropped": batch_record, "lost": batch_record}),
}
_COAGENT = {**_LAYER, "rng": _RNG, "baseline": _BASELINE,
            "critic": optional(table({"params": _VECTOR, "optimizer": _OPTIMIZER})),
            "subset_mask": optional(array("b", ndim=1)),
            "grad_variance": table({"total": number, "batches": count}),
            "hold": table({"value": array("f", ndim=2), "fired": count, "steps": count,
                           "interval_fired": count, "interval_steps": count}),
            "firing_rng": _RNG,
            "importance": table({"total": number, "truncated": count, "terms": count})}
#: Entries of a coagent layer's state that only some runs write: run.record_grad_variance,
#: backend.fire (the hold; the firing stream of a random schedule), network.importance_cap.
_COAGENT_MAY_BE_MISSING = {"grad_variance", "hold", "firing_rng", "importance"}
_NETWORK = table({
    "spec": table_of_anything,
    "layers": list_of(tagged("kind", {
        "coagent": _COAGENT,
        "readout": {**_LAYER, "rng": optional(_RNG)},
        "grouped": {"name": text, "groups": list_of(tagged(
            "kind", {"coagent": _COAGENT}, {"coagent": _COAGENT_MAY_BE_MISSING}))},
    }, {"coagent": _COAGENT_MAY_BE_MISSING})),
    "input_baseline": optional(tagged("kind", {"input-baseline": _LAYER})),
})
_STREAM_POSITION = table({"stream": text, "next_sid": count, "fingerprint": integer})
_COORDINATOR = table({
    "forwards": count,
    "inflight": list_of(table({"sid": count, "index": count, "output": array("f", ndim=2),
                               "y": array("biuf"), "size": count,
                               # per-layer delays: a batch delivered to some layers only
                               "signal": array("f", ndim=1), "delivered": list_of(count),
                               "messages": list_of(pair(count, optional(array("f"))))},
                              may_be_missing={"signal", "delivered", "messages"})),
})


def check_run_state(state: object, source: str, progress: type) -> None:
    """Check the decoded run checkpoint ``state`` read from ``source``; ``progress`` is the
    dataclass of the run's counters. Raises CheckpointError naming the first bad entry."""
    check = table({"config": table_of_anything, "progress": dataclass_table(progress),
                   "stream": _STREAM_POSITION,
                   "backend": table({"network": _NETWORK, "coordinator": _COORDINATOR}),
                   "pretrain": optional(_NETWORK)})
    try:
        check(state, "checkpoint")
    except _Invalid as exc:
        where = "the run state" if exc.where == "checkpoint" else (
            f"entry {exc.where.removeprefix('checkpoint.')}")
        raise CheckpointError(f"{source}: {where} {exc.problem}") from None
