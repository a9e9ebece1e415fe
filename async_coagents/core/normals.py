"""Standard normals for Gaussian units (``network.normals``): how a layer's sampling stream turns
into the noise ``eps`` of ``a = mu + sigma * eps`` (§2.5).

Gaussian units draw B x U normals per update and seed, so on the paper's correlated network
(1 x 50 units, batch 32) drawing them is most of an update's arithmetic. Two samplers, the same
standard normal distribution, different numbers:

* ``ziggurat`` (the default): numpy's ``Generator.standard_normal``. Every run made before this
  setting existed, and the regression fixture, draw this way. On this project's 2-core AMD EPYC it
  costs 10-13 ns per float32 normal (``coagents bench --only normals``), and a replicated network
  pays it once per replica (one call per replica, ``core/replicas.ReplicaGenerator``).
* ``box-muller``: each 64-bit word of the stream's bit generator (``random_raw``, PCG64) gives
  one pair, ``u1 = (k1 + 1) / 2^32`` from its high half and ``u2 = k2 / 2^32`` from its low half,
  and ``z1, z2 = sqrt(-2 ln u1) (cos 2 pi u2, sin 2 pi u2)`` (Box and Muller, 1958), computed in
  float32 with numpy's vectorised ``log``/``sqrt``/``cos``/``sin`` over every replica at once (the
  words are drawn per replica, the arithmetic is one call for all). 3.8-5.8 ns per normal on the
  same machine (the same benchmark). Its tail stops at ``sqrt(2 ln 2^32)`` = 6.66
  (a standard normal passes that with probability 3e-11; ``u1`` keeps all 32 bits where they
  matter, near 0, since small integers are exact in float32). Element-wise arithmetic only, so a
  replica's normals are those its separate run draws, bit for bit.

Pairs are laid out ``(z1, z2)`` consecutively in C order over the draw's shape; a draw of an odd
count uses one word more and drops the last ``z2``. Both samplers advance the stream by a count
that depends only on the draw's shape, so checkpoints and replicas work the same way.
"""

from __future__ import annotations

import math
import sys

import numpy as np

from async_coagents.core.replicas import ReplicaGenerator

SAMPLERS = ("ziggurat", "box-muller")

_U1 = np.float32(2.0**-32)
_ANGLE = np.float32(2 * math.pi * 2.0**-32)
#: Where the high and low 32 bits of a 64-bit word sit when viewed as two 32-bit integers.
_HIGH, _LOW = (1, 0) if sys.byteorder == "little" else (0, 1)


def standard_normal(rng: np.random.Generator | ReplicaGenerator, shape: tuple[int, ...],
                    dtype: np.dtype, sampler: str = "ziggurat") -> np.ndarray:
    """Standard normals of ``shape`` (the replica axis first for a :class:`ReplicaGenerator`)
    drawn by ``sampler`` (one of :data:`SAMPLERS`)."""
    if sampler == "ziggurat":
        return rng.standard_normal(shape, dtype=dtype)
    if sampler != "box-muller":
        raise ValueError(f"normals must be one of {SAMPLERS}, got {sampler!r}")
    if isinstance(rng, ReplicaGenerator):
        replicas, inner = shape[0], shape[1:]
        pairs = -(-math.prod(inner) // 2)
        words = np.empty((replicas, pairs), dtype=np.uint64)
        for r, g in enumerate(rng.generators):
            words[r] = g.bit_generator.random_raw(pairs)
    else:
        replicas, inner = None, shape
        words = rng.bit_generator.random_raw(-(-math.prod(inner) // 2))
    z = box_muller(words)
    z = z.reshape(*z.shape[:-2], -1)[..., :math.prod(inner)]
    return z.reshape(shape).astype(dtype, copy=False)


def box_muller(words: np.ndarray) -> np.ndarray:
    """The normal pairs ``(..., n, 2)`` float32 of 64-bit ``words (..., n)``."""
    halves = words.view(np.uint32).reshape(*words.shape, 2)
    high = halves[..., _HIGH].astype(np.float32)
    low = halves[..., _LOW].astype(np.float32)
    high += np.float32(1.0)
    high *= _U1                      # u1 in (0, 1]
    radius = np.log(high)
    radius *= np.float32(-2.0)
    np.sqrt(radius, out=radius)
    low *= _ANGLE                    # 2 pi u2 in [0, 2 pi)
    z = np.empty((*words.shape, 2), dtype=np.float32)
    np.multiply(radius, np.cos(low), out=z[..., 0])
    np.multiply(radius, np.sin(low), out=z[..., 1])
    return z
