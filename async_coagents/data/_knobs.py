"""Shared by tasks and streams: validation of their knobs (a ``ConfigError`` naming the knob) and
the data layer's random streams. Every draw comes from a Generator derived from the caller's seed
and a fixed integer key, so generated data depend only on (seed, key) — never on how much
randomness anything else consumed, and never on the global numpy RNG."""

from __future__ import annotations

import math
import zlib
from enum import IntEnum

import numpy as np

from async_coagents.errors import ConfigError

SeedLike = int | np.random.SeedSequence

# First spawn-key element of every data stream, so that data keys cannot collide with children a
# caller spawns from the same SeedSequence for other purposes (initialisation, sampling).
DATA_NAMESPACE = 0x44415441  # "DATA"


class Key(IntEnum):
    """Second spawn-key element: what the draws are for. Never renumber (it changes the data)."""

    CORRELATED_WALK = 1
    CORRELATED_BLOCKS = 2
    CORRELATED_VALID = 3
    CORRELATED_TEST = 4
    EPOCH_SHUFFLE = 5
    UNIFORM_DRAWS = 6
    CLASS_ORDER = 7
    CLASS_DRAWS = 8
    CORRELATED_BLOCK_TEST = 9


def as_seed_sequence(seed: SeedLike) -> np.random.SeedSequence:
    """Accept a non-negative int or a ``SeedSequence``; anything else is a ``ConfigError``."""
    if isinstance(seed, np.random.SeedSequence):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"seed must be a non-negative int or a SeedSequence, got {seed!r}")
    return np.random.SeedSequence(int(seed))


def derive_rng(seed: np.random.SeedSequence, key: Key, *index: int) -> np.random.Generator:
    """The Generator for ``(key, *index)`` under ``seed``."""
    child = np.random.SeedSequence(
        seed.entropy,
        spawn_key=(*seed.spawn_key, DATA_NAMESPACE, int(key), *index),
        pool_size=seed.pool_size,
    )
    return np.random.Generator(np.random.PCG64(child))


def fingerprint(seed: np.random.SeedSequence, *parts: object) -> int:
    """A 32-bit check value of ``seed`` and ``parts`` (stream knobs), safe to store in msgpack."""
    words = seed.generate_state(4).tolist()
    return zlib.crc32(repr((words, parts)).encode())


def check_int(name: str, value: object, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``; otherwise a ``ConfigError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_optional_int(name: str, value: object, minimum: int = 1) -> int | None:
    """Like ``check_int``, but None (no limit) is allowed."""
    return None if value is None else check_int(name, value, minimum)


def check_unit_interval(name: str, value: object) -> float:
    """``value`` as a float in [0, 1]; otherwise a ``ConfigError`` naming ``name``."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float | np.integer | np.floating)
        or not math.isfinite(value)
        or not 0.0 <= value <= 1.0
    ):
        raise ConfigError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)
