"""Online data streams: iterators of numbered minibatches with a saveable position.

Every stream is a deterministic function of (seed, batch index): batch ``sid`` is the same
whether the stream was iterated from 0, restored from a saved ``position()`` or ``seek``-ed.
Draws are made a chunk (an epoch, or a fixed number of samples) at a time from one Generator
per chunk, derived from the seed with ``SeedSequence(spawn_key=...)``, and batches are slices
of the chunk, so a batch costs a few microseconds. Batches hold read-only arrays.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar, NamedTuple

import numpy as np

from async_coagents.data._knobs import (
    Key,
    SeedLike,
    as_seed_sequence,
    check_int,
    check_optional_int,
    check_unit_interval,
    derive_rng,
    fingerprint,
)
from async_coagents.data.datasets import Split
from async_coagents.data.tasks import (
    CorrelatedSpec,
    correlated_block_test_set,
    correlated_eval_sets,
    correlated_means,
    correlated_target,
)
from async_coagents.errors import ConfigError, DataError

# Samples drawn per chunk by the streams that are not organised in epochs.
CHUNK_SAMPLES = 1 << 15


class Batch(NamedTuple):
    """One minibatch: ``sid`` its number in the stream (0, 1, 2, ...), ``x`` (B, d) float32,
    ``y`` (B,) int64 class indices or float32 regression targets."""

    sid: int
    x: np.ndarray
    y: np.ndarray


_POSITION_KEYS = frozenset({"stream", "next_sid", "fingerprint"})


class Stream:
    """Base of the streams: the cursor, iteration, position and restore, and the chunk cache.

    Batches are rows of chunks of ``chunk_batches`` batches; one chunk is kept. A subclass sets
    ``kind`` and ``total_batches`` (None for an endless stream) and implements
    ``_generate(chunk)`` (the chunk's arrays, drawn from one Generator) and ``_select`` (batch
    ``sid``, a row of the chunk's arrays). ``position()`` is a small dict of ints and str (msgpack safe);
    ``restore`` refuses a position saved by a stream of another kind, seed, knobs or chunking.
    """

    kind: ClassVar[str]
    total_batches: int | None

    def __init__(self, seed: SeedLike, chunk_batches: int, *knobs: object) -> None:
        self._seed = as_seed_sequence(seed)
        self.chunk_batches = chunk_batches
        self._fingerprint = fingerprint(self._seed, self.kind, chunk_batches, *knobs)
        self._next = 0
        self._chunk_index = -1
        self._chunk: tuple[np.ndarray, ...] = ()

    def _make(self, sid: int) -> Batch:
        row, chunk = self._rows(sid)
        return self._select(sid, row, chunk)

    def _select(self, sid: int, row: int, chunk: tuple[np.ndarray, ...]) -> Batch:
        """Batch ``sid``, row ``row`` of ``chunk``'s arrays; written on the trailing axes, so that
        on chunks of R streams stacked (a leading replica axis, :class:`ReplicaStreams`) it gives
        the R batches stacked."""
        raise NotImplementedError

    def _generate(self, chunk: int) -> tuple[np.ndarray, ...]:
        raise NotImplementedError

    def __iter__(self) -> Stream:
        return self

    def __next__(self) -> Batch:
        sid = self._next
        if self.total_batches is not None and sid >= self.total_batches:
            raise StopIteration
        self._next = sid + 1
        return self._make(sid)

    def batch(self, sid: int) -> Batch:
        """Batch ``sid`` (random access; does not move the cursor)."""
        self._check_sid(sid, allow_end=False)
        return self._make(sid)

    def seek(self, sid: int) -> None:
        """Make ``sid`` the next batch yielded (``total_batches`` means exhausted)."""
        self._next = self._check_sid(sid, allow_end=True)

    def position(self) -> dict[str, Any]:
        """Where the stream is: ``{"stream": kind, "next_sid": int, "fingerprint": int}``."""
        return {"stream": self.kind, "next_sid": self._next, "fingerprint": self._fingerprint}

    def restore(self, position: dict[str, Any]) -> None:
        """Continue from a ``position()`` saved by a stream with the same kind, seed and knobs."""
        if not isinstance(position, dict) or set(position) != _POSITION_KEYS:
            raise DataError(f"not a stream position: {position!r}")
        if position["stream"] != self.kind:
            raise DataError(
                f"position of a {position['stream']!r} stream cannot restore a {self.kind!r} stream"
            )
        if position["fingerprint"] != self._fingerprint:
            raise DataError(
                f"position {position!r} was saved by a {self.kind} stream with another seed or other knobs"
            )
        self.seek(position["next_sid"])

    def _check_sid(self, sid: object, allow_end: bool) -> int:
        end = self.total_batches
        if isinstance(sid, bool) or not isinstance(sid, int | np.integer) or sid < 0:
            raise DataError(f"batch index must be a non-negative int, got {sid!r}")
        if end is not None and (sid > end or (sid == end and not allow_end)):
            raise DataError(f"batch index {sid} is past the end of the stream ({end} batches)")
        return int(sid)

    def _rows(self, sid: int) -> tuple[int, tuple[np.ndarray, ...]]:
        """(row of batch ``sid`` in its chunk, the chunk's arrays)."""
        c, row = divmod(sid, self.chunk_batches)
        if c != self._chunk_index:
            chunk = self._generate(c)
            for array in chunk:
                array.flags.writeable = False
            self._chunk, self._chunk_index = chunk, c
        return row, self._chunk

    def _chunk_sids(self, chunk: int) -> np.ndarray:
        """Batch numbers (chunk_batches,) of ``chunk``."""
        return np.arange(chunk * self.chunk_batches, (chunk + 1) * self.chunk_batches)


class CorrelatedStream(Stream):
    """The correlated regression stream of paper §5.3, in order, exactly once.

    For block k = 1..M (means from ``tasks.correlated_means``) and segment j = 1..S, one batch
    of B i.i.d. x ~ N(m_k, (1 − d)V), V = 1/4: x (B, 1) float32, y = sin(2π x²) (B,) float32.
    ``total_batches`` = M·S; batch ``sid`` belongs to block ``sid // S``.
    """

    kind = "correlated"

    def __init__(self, difficulty: float, means: int, segments: int, batch: int, seed: SeedLike) -> None:
        self.spec = CorrelatedSpec(difficulty, means, segments, batch)
        super().__init__(seed, _chunk_batches(self.spec.batch), *dataclasses.astuple(self.spec))
        self.total_batches = self.spec.total_batches
        self.block_means = correlated_means(self.spec, derive_rng(self._seed, Key.CORRELATED_WALK))
        self.block_means.flags.writeable = False
        self._sigma = math.sqrt(self.spec.segment_variance)

    def eval_sets(self) -> tuple[Split, Split]:
        """(validation, test): i.i.d. N(0, V) samples of ⌊M·S·B/100⌋ points each, x (n, 1)."""
        return correlated_eval_sets(self.spec, self._seed)

    @property
    def run_length(self) -> int:
        """Batches per mean-block (S)."""
        return self.spec.segments

    def block_test_set(self, block: int) -> Split:
        """Mean-block ``block``'s own test set (``tasks.correlated_block_test_set``)."""
        return correlated_block_test_set(self.spec, self._seed, block,
                                         float(self.block_means[block]))

    def _select(self, sid: int, row: int, chunk: tuple[np.ndarray, ...]) -> Batch:
        x, y = chunk  # x (..., chunk, B, 1), y (..., chunk, B)
        return Batch(sid, x[..., row, :, :], y[..., row, :])

    def _generate(self, chunk: int) -> tuple[np.ndarray, ...]:
        sids = self._chunk_sids(chunk)
        sids = sids[sids < self.total_batches]  # the last chunk is short
        z = derive_rng(self._seed, Key.CORRELATED_BLOCKS, chunk).standard_normal((sids.size, self.spec.batch))
        centres = self.block_means[sids // self.spec.segments]
        x = (centres[:, None] + self._sigma * z).astype(np.float32)
        return x[:, :, None], correlated_target(x)


class ShuffledEpochs(Stream):
    """Epochs over a split, reshuffled i.i.d. every epoch (paper §5.1 minibatches).

    Each epoch is a fresh permutation cut into ``batches_per_epoch = ceil(N / batch)`` batches;
    the last batch of an epoch keeps the remainder (50,000 / 32: 1,563 batches, the last of 16).
    ``epochs=None`` makes the stream endless. Batches: x (≤B, d), y (≤B,), as in the split.
    """

    kind = "shuffled-epochs"

    def __init__(self, split: Split, batch: int, epochs: int | None, seed: SeedLike) -> None:
        n = _check_split(split)
        self.split = split
        self.batch_size = check_int("batch", batch)
        self.epochs = check_optional_int("epochs", epochs)
        self.batches_per_epoch = -(-n // self.batch_size)
        super().__init__(seed, self.batches_per_epoch, n, split.x.shape[1], self.batch_size)
        self.total_batches = None if self.epochs is None else self.epochs * self.batches_per_epoch

    def _select(self, sid: int, row: int, chunk: tuple[np.ndarray, ...]) -> Batch:
        (order,) = chunk  # (..., N)
        return _gather(sid, self.split,
                       order[..., row * self.batch_size : (row + 1) * self.batch_size])

    def _generate(self, chunk: int) -> tuple[np.ndarray, ...]:
        """Chunk = epoch: one permutation (N,) of the split."""
        return (derive_rng(self._seed, Key.EPOCH_SHUFFLE, chunk).permutation(len(self.split)),)


class UniformPatterns(Stream):
    """Endless i.i.d. uniform draws (with replacement) of examples of a split.

    Meant for small finite tasks such as the multiplexer truth table. x (B, d), y (B,).
    """

    kind = "uniform"

    def __init__(self, split: Split, batch: int, seed: SeedLike) -> None:
        n = _check_split(split)
        self.split = split
        self.batch_size = check_int("batch", batch)
        super().__init__(seed, _chunk_batches(self.batch_size), n, split.x.shape[1], self.batch_size)
        self.total_batches = None

    def _select(self, sid: int, row: int, chunk: tuple[np.ndarray, ...]) -> Batch:
        (idx,) = chunk  # (..., chunk, B)
        return _gather(sid, self.split, idx[..., row, :])

    def _generate(self, chunk: int) -> tuple[np.ndarray, ...]:
        rng = derive_rng(self._seed, Key.UNIFORM_DRAWS, chunk)
        return (rng.integers(0, len(self.split), size=(self.chunk_batches, self.batch_size)),)


class ClassBlockedStream(Stream):
    """A classification stream with tunable correlation: one class at a time, in blocks.

    The stream visits the classes present in the split in blocks of ``run_length`` batches, in
    one fixed random order per seed, repeated cyclically (so consecutive blocks always differ
    when there are two classes or more). Each example of a batch is drawn uniformly, with
    replacement, from the block's class with probability ``purity`` and from the whole split
    otherwise: ``purity=0`` is i.i.d. uniform sampling, ``purity=1`` gives label runs of exactly
    ``run_length * batch`` examples. ``total_batches=None`` makes it endless.
    """

    kind = "class-blocked"

    def __init__(
        self,
        split: Split,
        batch: int,
        run_length: int,
        purity: float,
        seed: SeedLike,
        total_batches: int | None,
    ) -> None:
        n = _check_split(split)
        if not np.issubdtype(split.y.dtype, np.integer):
            raise ConfigError(
                f"split: a class-blocked stream needs integer class labels, got {split.y.dtype}"
            )
        self.split = split
        self.batch_size = check_int("batch", batch)
        self.run_length = check_int("run_length", run_length)
        self.purity = check_unit_interval("purity", purity)
        self.total_batches = check_optional_int("total_batches", total_batches)
        knobs = (n, split.x.shape[1], self.batch_size, self.run_length, self.purity)
        super().__init__(seed, _chunk_batches(self.batch_size), *knobs)
        classes, counts = np.unique(split.y, return_counts=True)
        self._by_class = np.argsort(split.y, kind="stable")
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        order = derive_rng(self._seed, Key.CLASS_ORDER).permutation(len(classes))
        self.class_order = classes[order]
        self._starts, self._counts = starts[order], counts[order]

    def block_class(self, sid: int) -> int:
        """The class of the block that batch ``sid`` belongs to."""
        return int(self.class_order[(sid // self.run_length) % len(self.class_order)])

    def _select(self, sid: int, row: int, chunk: tuple[np.ndarray, ...]) -> Batch:
        (idx,) = chunk  # (..., chunk, B)
        return _gather(sid, self.split, idx[..., row, :])

    def _generate(self, chunk: int) -> tuple[np.ndarray, ...]:
        sids = self._chunk_sids(chunk)
        rng = derive_rng(self._seed, Key.CLASS_DRAWS, chunk)
        shape = (sids.size, self.batch_size)
        pure = rng.random(shape) < self.purity
        u = rng.random(shape)
        slot = (sids // self.run_length) % len(self.class_order)
        count = self._counts[slot][:, None]
        in_class = self._starts[slot][:, None] + np.minimum((u * count).astype(np.int64), count - 1)
        n = len(self.split)
        anywhere = np.minimum((u * n).astype(np.int64), n - 1)
        return (np.where(pure, self._by_class[in_class], anywhere),)


def _chunk_batches(batch: int) -> int:
    """Batches per chunk for the streams not organised in epochs: ``CHUNK_SAMPLES`` samples."""
    return max(1, CHUNK_SAMPLES // batch)


def _gather(sid: int, split: Split, idx: np.ndarray) -> Batch:
    """Batch ``sid`` made of the examples ``idx`` (..., B) of ``split``, as read-only copies."""
    x, y = split.x[idx], split.y[idx]
    x.flags.writeable = False
    y.flags.writeable = False
    return Batch(sid, x, y)


def _check_split(split: object) -> int:
    """Number of examples of ``split``; a ``ConfigError`` if it is not a non-empty Split."""
    if not isinstance(split, Split):
        raise ConfigError(f"split must be a Split, got {type(split).__name__}")
    if len(split) == 0:
        raise ConfigError("split is empty: a stream needs at least one example")
    return len(split)


class ReplicaStreams:
    """The streams of R replicas (``experiment/replicated.py``) moving in lockstep, yielding their
    batches stacked: ``x (R, B, d)``, ``y (R, B)``; replica r's slice is, value for value, the
    batch its own stream yields, and each stream's cursor moves as if iterated alone (so each
    replica's ``position()`` is its separate run's).

    Streams of one kind over one split with the same chunking (the replicas of one config differ
    in their seed only) are served a chunk at a time: each stream draws its own chunk, the R
    chunks are stacked once, and a batch is one slice of the stack instead of R batches made and
    stacked (at R = 200 that was about a third of a replicated correlated update). Other streams
    are iterated one by one and stacked.
    """

    def __init__(self, streams: list[Stream]) -> None:
        self.streams = list(streams)
        first = self.streams[0]
        self._stacked = all(
            type(s) is type(first) and s.chunk_batches == first.chunk_batches
            and s.total_batches == first.total_batches
            and _same_split(getattr(s, "split", None), getattr(first, "split", None))
            for s in self.streams[1:])
        self._chunk_index = -1
        self._chunk: tuple[np.ndarray, ...] = ()

    def __iter__(self) -> ReplicaStreams:
        return self

    def __next__(self) -> Batch:
        if not self._stacked or len({s._next for s in self.streams}) != 1:
            batches = [next(s) for s in self.streams]
            return Batch(batches[0].sid, np.stack([b.x for b in batches]),
                         np.stack([b.y for b in batches]))
        first = self.streams[0]
        sid = first._next
        if first.total_batches is not None and sid >= first.total_batches:
            raise StopIteration
        c, row = divmod(sid, first.chunk_batches)
        if c != self._chunk_index:
            parts = [s._rows(sid)[1] for s in self.streams]
            self._chunk = tuple(np.stack(arrays) for arrays in zip(*parts, strict=True))
            for array in self._chunk:
                array.flags.writeable = False
            self._chunk_index = c
        for s in self.streams:
            s._next = sid + 1
        return first._select(sid, row, self._chunk)


def _same_split(a: Split | None, b: Split | None) -> bool:
    """Whether two streams gather from the same examples (one cached dataset: the same object)."""
    if a is b:
        return True
    return (a is not None and b is not None and a.x.shape == b.x.shape
            and np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y))
