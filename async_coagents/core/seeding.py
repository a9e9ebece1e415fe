"""Independent, named random streams derived from one run seed (numpy ``SeedSequence``).

Every consumer gets its own stream — data, each layer's initialisation, each layer's sampling —
so changing one consumer never changes what another draws (the paper's code shares one global
torch RNG, `paper_method.md` §9.14). RNG states are exported in a msgpack-safe form (PCG64's
128-bit integers as decimal strings) for checkpoints.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from async_coagents.core.replicas import PerReplica, ReplicaGenerator
from async_coagents.errors import CheckpointError

#: The purposes a stream can serve; the number is part of the stream's spawn key, so never
#: renumber them (old checkpoints and seeds would change meaning).
PURPOSES = {"data": 0, "init": 1, "sampling": 2, "firing": 3}


def generator(seed: int | Sequence[int], purpose: str, *key: int
              ) -> np.random.Generator | ReplicaGenerator:
    """The stream for ``purpose`` and ``key`` (e.g. a layer index) under run ``seed``; for a
    sequence of seeds (replicas, ``core/replicas.py``) each replica's own stream of its seed.

    >>> a = generator(7, "sampling", 0); b = generator(7, "sampling", 1)
    >>> bool(a.random() != b.random())
    True
    """
    if not isinstance(seed, int | np.integer):
        return ReplicaGenerator([generator(s, purpose, *key) for s in seed])
    spawn_key = (PURPOSES[purpose], *(int(k) for k in key))
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(int(seed), spawn_key=spawn_key)))


def rng_state(rng: np.random.Generator | ReplicaGenerator) -> dict | PerReplica:
    """The generator's state with every integer wider than 64 bits written as a string (one
    state per replica for a :class:`ReplicaGenerator`)."""
    if isinstance(rng, ReplicaGenerator):
        return PerReplica(rng_state(g) for g in rng.generators)
    return _stringify(rng.bit_generator.state)


def set_rng_state(rng: np.random.Generator | ReplicaGenerator, state,
                  what: str = "random generator") -> None:
    """Restore a state saved by :func:`rng_state` (``what`` names the stream in errors)."""
    if isinstance(rng, ReplicaGenerator):
        if not isinstance(state, list) or len(state) != rng.replicas:
            raise CheckpointError(f"invalid {what} state: expected {rng.replicas} replica "
                                  f"states, got {type(state).__name__}")
        for r, (g, part) in enumerate(zip(rng.generators, state, strict=True)):
            set_rng_state(g, part, f"{what} (replica {r})")
        return
    try:
        rng.bit_generator.state = _integerify(state)
    except (TypeError, ValueError, KeyError, OverflowError) as exc:
        raise CheckpointError(f"invalid {what} state: {exc}") from None


def _stringify(value):
    if isinstance(value, dict):
        return {k: _stringify(v) for k, v in value.items()}
    if isinstance(value, int) and not -(2**63) <= value < 2**64:
        return str(value)
    return value


def _integerify(value):
    if isinstance(value, dict):
        return {k: _integerify(v) for k, v in value.items()}
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return value
