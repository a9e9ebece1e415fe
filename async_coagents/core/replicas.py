"""Replicas: R independent copies of one network on a leading array axis (``run.replicas``).

A replicated network holds, in every array, a leading axis of length R: replica ``r`` is exactly
the network a separate run with seed ``seeds[r]`` builds, draws and learns. Three things make it
so, and this module owns them:

* :class:`ReplicaGenerator` — one generator per replica behind the ``numpy.random.Generator``
  methods the core calls (``random``, ``standard_normal``, ``uniform``, ``choice``). A draw of
  shape ``(R, *shape)`` fills slice ``r`` from replica ``r``'s own generator with the call a
  separate run makes for ``shape``, so every replica sees its separate run's numbers.
* the core's arithmetic is written on the trailing axes (``x (..., B, n)``, ``W (..., n, m)``), so
  one numpy call does the work of R runs; each call reduces within a replica only, so a replica's
  numbers never depend on another's (bit for bit where numpy's kernels are the same per slice:
  element-wise ops, row sums and one BLAS call per matrix slice).
* :func:`slice_state` and :func:`stack_states` — a replicated agent's state, sliced, is the state
  of a separate run's agent, and R separate states stacked are a replicated one. So each replica's
  checkpoint is a plain run checkpoint (``coagents eval``/``resume`` of one replica work as on any
  run), and a replicated run resumes from its replicas' checkpoints.

The layout rule :func:`slice_state` relies on: inside a replicated state every numpy array is per
replica (leading axis R), every generator state is a :class:`PerReplica` list, and every other
value (counters, batch ids, names) is shared by all replicas, which move in lockstep.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from async_coagents.errors import CheckpointError, ConfigError


class PerReplica(list):
    """A list with one entry per replica (generator states) inside a replicated state."""


class ReplicaGenerator:
    """R generators drawing as one: slice ``r`` of every draw comes from generator ``r``."""

    def __init__(self, generators: Sequence[np.random.Generator]) -> None:
        if not generators:
            raise ConfigError("a replica generator needs at least one generator")
        self.generators = list(generators)

    @property
    def replicas(self) -> int:
        return len(self.generators)

    def _split(self, shape) -> tuple[int, ...]:
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        if not shape or shape[0] != len(self.generators):
            raise ValueError(f"a replicated draw has the replica axis ({len(self.generators)}) "
                             f"first, got shape {shape}")
        return shape[1:]

    def random(self, size, dtype=np.float64) -> np.ndarray:
        """Uniform ``[0, 1)`` of shape ``(R, *shape)``, slice r as ``generators[r].random(shape)``."""
        out = np.empty(size, dtype=dtype)
        self._split(size)
        for r, g in enumerate(self.generators):
            g.random(out=out[r], dtype=dtype)
        return out

    def standard_normal(self, size, dtype=np.float64) -> np.ndarray:
        """Standard normals of shape ``(R, *shape)``, per replica as :meth:`random`."""
        out = np.empty(size, dtype=dtype)
        self._split(size)
        for r, g in enumerate(self.generators):
            g.standard_normal(out=out[r], dtype=dtype)
        return out

    def uniform(self, low: float, high: float, size) -> np.ndarray:
        """``U(low, high)`` of shape ``(R, *shape)``, float64, per replica."""
        inner = self._split(size)
        return np.stack([g.uniform(low, high, size=inner) for g in self.generators])

    def choice(self, a: int, size: int, replace: bool = True) -> np.ndarray:
        """``generators[r].choice(a, size, replace)`` for every replica, ``(R, size)``."""
        return np.stack([g.choice(a, size=size, replace=replace) for g in self.generators])


def replicas_of(rng) -> int | None:
    """The replica count of a generator (``None`` for a plain ``numpy`` generator)."""
    return rng.replicas if isinstance(rng, ReplicaGenerator) else None


def leading(replicas: int | None) -> tuple[int, ...]:
    """The leading shape of a per-replica array: ``(R,)``, or ``()`` for one network."""
    return () if replicas is None else (replicas,)


# ---- states ---------------------------------------------------------------------------------
def slice_state(state, r: int):
    """Replica ``r``'s part of a replicated state: the state its separate run would have."""
    if isinstance(state, PerReplica):
        return state[r]
    if isinstance(state, np.ndarray):
        part = state[r]
        return part.item() if part.ndim == 0 else part.copy()
    if isinstance(state, dict):
        return {key: slice_state(value, r) for key, value in state.items()}
    if isinstance(state, list | tuple):
        return type(state)(slice_state(value, r) for value in state)
    return state


def _is_generator_state(value) -> bool:
    return isinstance(value, dict) and "bit_generator" in value


def stack_states(states: Sequence, where: str = "state"):
    """The replicated state of R separate states (the inverse of :func:`slice_state`): arrays
    stacked on a new leading axis, generator states gathered, numbers that differ between
    replicas made arrays, everything else required equal."""
    first = states[0]
    if _is_generator_state(first):
        return PerReplica(states)
    if isinstance(first, np.ndarray):
        if any(not isinstance(s, np.ndarray) or s.shape != first.shape or s.dtype != first.dtype
               for s in states):
            raise CheckpointError(f"{where}: the replicas' arrays differ in shape or dtype")
        return np.stack(states)
    if isinstance(first, dict):
        keys = list(first)
        if any(not isinstance(s, dict) or list(s) != keys for s in states):
            raise CheckpointError(f"{where}: the replicas' states have different entries")
        return {key: stack_states([s[key] for s in states], f"{where}.{key}") for key in keys}
    if isinstance(first, list | tuple):
        if any(not isinstance(s, list | tuple) or len(s) != len(first) for s in states):
            raise CheckpointError(f"{where}: the replicas' states have different lengths")
        if not _holds_arrays(first) and all(s == first for s in states):
            return first
        return type(first)(stack_states([s[i] for s in states], f"{where}[{i}]")
                           for i in range(len(first)))
    if all(_same(s, first) for s in states):
        return first
    if all(isinstance(s, int | float) and not isinstance(s, bool) for s in states):
        return np.array(states)  # a per-replica number (a baseline's value)
    raise CheckpointError(f"{where}: the replicas are out of step ({states[0]!r} vs others)")


def _same(a, b) -> bool:
    return type(a) is type(b) and (a == b or (a != a and b != b))  # NaN equals NaN here


def _holds_arrays(value) -> bool:
    if isinstance(value, np.ndarray) or _is_generator_state(value):
        return True
    if isinstance(value, dict):
        return any(_holds_arrays(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_holds_arrays(v) for v in value)
    return False
