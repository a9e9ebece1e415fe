"""Online streams: determinism in (seed, batch index), save/restore, epochs, class blocks, knobs."""

import math

import msgpack
import numpy as np
import pytest

from async_coagents.data import streams
from async_coagents.data.datasets import Split
from async_coagents.data.streams import (
    ClassBlockedStream,
    CorrelatedStream,
    ShuffledEpochs,
    UniformPatterns,
)
from async_coagents.data.tasks import multiplexer
from async_coagents.errors import ConfigError, DataError

CLASS_COUNTS = np.array([3, 5, 8, 13, 21, 34, 55, 89, 144, 233])  # unequal classes, 605 examples


def labelled_split(counts=CLASS_COUNTS) -> Split:
    """x[i] = (i, label): every example can be recognised in a batch."""
    y = np.random.default_rng(0).permutation(np.repeat(np.arange(len(counts)), counts))
    x = np.stack([np.arange(len(y)), y], axis=1).astype(np.float32)
    return Split(x, y.astype(np.int64))


FACTORIES = {
    "correlated": lambda seed: CorrelatedStream(0.9, 5, 7, 4, seed),
    "shuffled": lambda seed: ShuffledEpochs(labelled_split(), 32, 3, seed),
    "uniform": lambda seed: UniformPatterns(multiplexer(2).train, 4, seed),
    "class-blocked": lambda seed: ClassBlockedStream(labelled_split(), 4, 3, 0.7, seed, 40),
    "class-blocked-endless": lambda seed: ClassBlockedStream(labelled_split(), 4, 3, 0.7, seed, None),
}
N_TAKE = 40  # batches compared per stream: several chunks with the small chunks set below


@pytest.fixture(autouse=True)
def _small_chunks(monkeypatch):
    """Chunks of 64 samples, so that a few dozen batches cross several chunk boundaries."""
    monkeypatch.setattr(streams, "CHUNK_SAMPLES", 64)


def take(stream, n=N_TAKE):
    return [b for _, b in zip(range(n), stream, strict=False)]


def assert_same(batches_a, batches_b):
    assert [b.sid for b in batches_a] == [b.sid for b in batches_b]
    for a, b in zip(batches_a, batches_b, strict=True):
        np.testing.assert_array_equal(a.x, b.x)
        np.testing.assert_array_equal(a.y, b.y)


@pytest.mark.parametrize("name", FACTORIES)
def test_numbered_consecutively_and_read_only(name):
    batches = take(FACTORIES[name](0))
    assert [b.sid for b in batches] == list(range(len(batches)))
    assert len(batches) >= 35
    for b in batches:
        assert b.x.ndim == 2 and b.x.dtype == np.float32 and b.y.shape == (b.x.shape[0],)
        assert not b.x.flags.writeable and not b.y.flags.writeable


@pytest.mark.parametrize("name", FACTORIES)
@pytest.mark.parametrize("t", [0, 1, 15, 17, 33])
def test_restore_continues_identically(name, t):
    make = FACTORIES[name]
    reference = take(make(11))
    stream = make(11)
    take(stream, t)
    position = msgpack.unpackb(msgpack.packb(stream.position()))
    assert position == stream.position()
    assert all(isinstance(v, int | str) and not isinstance(v, bool) for v in position.values())
    assert all(-(2**63) <= v < 2**63 for v in position.values() if isinstance(v, int))
    assert_same(take(stream, N_TAKE - t), reference[t:])  # the uninterrupted stream
    restored = make(11)
    restored.restore(position)
    assert_same(take(restored, N_TAKE - t), reference[t:])
    assert_same([make(11).batch(t)], [reference[t]])  # random access agrees


@pytest.mark.parametrize("name", FACTORIES)
def test_same_seed_same_stream_other_seed_other_stream(name):
    make = FACTORIES[name]
    assert_same(take(make(3)), take(make(3)))
    assert_same(take(make(3)), take(make(np.random.SeedSequence(3))))
    a, b = take(make(3)), take(make(4))
    assert any(not np.array_equal(p.x, q.x) for p, q in zip(a, b, strict=True))
    child0, child1 = np.random.SeedSequence(3).spawn(2)
    c, d = take(make(child0)), take(make(child1))
    assert any(not np.array_equal(p.x, q.x) for p, q in zip(c, d, strict=True))


@pytest.mark.parametrize(
    ("short", "endless"),
    [
        (FACTORIES["class-blocked"], FACTORIES["class-blocked-endless"]),
        (FACTORIES["shuffled"], lambda seed: ShuffledEpochs(labelled_split(), 32, None, seed)),
    ],
)
def test_the_length_of_a_stream_does_not_change_its_batches(short, endless):
    reference = take(short(2))
    assert_same(take(endless(2)), reference)
    a = short(2)
    take(a, 10)
    b = endless(2)
    b.restore(a.position())  # a run may be extended from a checkpoint
    assert_same(take(b, N_TAKE - 10), reference[10:])


def test_restore_refuses_foreign_positions():
    stream = CorrelatedStream(0.9, 5, 7, 4, seed=1)
    with pytest.raises(DataError, match="another seed or other knobs"):
        stream.restore(CorrelatedStream(0.9, 5, 7, 4, seed=2).position())
    with pytest.raises(DataError, match="another seed or other knobs"):
        stream.restore(CorrelatedStream(0.8, 5, 7, 4, seed=1).position())
    with pytest.raises(DataError, match="'uniform' stream cannot restore a 'correlated'"):
        stream.restore(UniformPatterns(multiplexer(2).train, 4, 1).position())
    with pytest.raises(DataError, match="not a stream position"):
        stream.restore({"next_sid": 3})


def test_finite_stream_end():
    stream = CorrelatedStream(0.5, 3, 2, 4, seed=0)
    assert stream.total_batches == 6
    assert len(list(stream)) == 6 and next(stream, None) is None
    stream.seek(6)
    assert list(stream) == []
    stream.seek(4)
    assert [b.sid for b in stream] == [4, 5]
    with pytest.raises(DataError, match="batch index 7 is past the end of the stream"):
        stream.seek(7)
    with pytest.raises(DataError, match="batch index 6 is past the end"):
        stream.batch(6)
    with pytest.raises(DataError, match="non-negative int, got -1"):
        stream.seek(-1)


def test_correlated_stream_eval_sets_and_blocks():
    stream = CorrelatedStream(0.95, 4, 5, 8, seed=2)
    valid, test = stream.eval_sets()
    assert len(valid) == len(test) == 1  # ⌊4·5·8/100⌋
    batches = list(stream)
    for b in batches:  # a batch lies around the mean of its block sid // S
        assert abs(b.x.mean() - stream.block_means[b.sid // 5]) < 5 * math.sqrt(0.05 * 0.25 / 8)


def test_shuffled_epochs_visit_every_example_once_per_epoch():
    n = 50_000
    split = Split(np.arange(n, dtype=np.float32)[:, None], np.zeros(n, dtype=np.int64))
    stream = ShuffledEpochs(split, 32, epochs=2, seed=5)
    assert stream.batches_per_epoch == 1563 and stream.total_batches == 3126
    batches = list(stream)
    assert len(batches) == 3126
    assert [len(b.x) for b in batches[1561:1564]] == [32, 16, 32]
    orders = []
    for epoch in range(2):
        seen = np.concatenate([b.x[:, 0] for b in batches[epoch * 1563 : (epoch + 1) * 1563]])
        np.testing.assert_array_equal(np.sort(seen), np.arange(n))
        orders.append(seen)
    assert not np.array_equal(orders[0], orders[1])  # reshuffled every epoch
    assert not np.array_equal(orders[0], np.arange(n))


def test_shuffled_epochs_endless():
    stream = ShuffledEpochs(labelled_split(), 100, epochs=None, seed=0)
    assert stream.total_batches is None and stream.batches_per_epoch == 7
    assert len(take(stream, 50)) == 50


def test_uniform_patterns_cover_the_table_uniformly():
    table = multiplexer(2).train
    stream = UniformPatterns(table, 32, seed=0)
    assert stream.total_batches is None
    rows = np.concatenate([b.x for b in take(stream, 400)])  # 12,800 draws of 64 patterns
    codes = ((rows > 0) @ (2 ** np.arange(6))).astype(int)
    counts = np.bincount(codes, minlength=64)
    # each pattern: binomial(12,800, 1/64), mean 200, sd 14.0; 5 sd either side
    assert counts.min() > 200 - 5 * 14.0 and counts.max() < 200 + 5 * 14.0


def _labels(stream):
    return np.concatenate([b.y for b in stream])


def test_class_blocked_purity_one_gives_exact_runs():
    stream = ClassBlockedStream(labelled_split(), 4, 3, 1.0, seed=9, total_batches=120)
    labels = _labels(stream)
    change = np.flatnonzero(np.diff(labels)) + 1
    runs = np.diff(np.concatenate([[0], change, [labels.size]]))
    np.testing.assert_array_equal(runs, np.full(40, 12))  # run_length · batch
    block_classes = labels[::12]
    assert sorted(block_classes[:10]) == list(range(10))  # every class once per cycle
    np.testing.assert_array_equal(block_classes[10:20], block_classes[:10])
    assert [stream.block_class(sid) for sid in range(0, 120, 3)] == block_classes.tolist()
    other = ClassBlockedStream(labelled_split(), 4, 3, 1.0, seed=10, total_batches=120)
    assert not np.array_equal(_labels(other)[::12][:10], block_classes[:10])  # order per seed


@pytest.mark.parametrize("purity", [0.0, 0.5])
def test_class_blocked_label_frequencies(purity):
    split = labelled_split()
    p = CLASS_COUNTS / CLASS_COUNTS.sum()
    stream = ClassBlockedStream(split, 32, 5, purity, seed=4, total_batches=2000)
    batches = list(stream)
    labels = np.concatenate([b.y for b in batches])
    in_block = np.concatenate([b.y == stream.block_class(b.sid) for b in batches])
    n = labels.size  # 64,000 labels
    # with purity q, a label is the block's class with probability q + (1 − q) p_c, and
    # over whole cycles every class is the block's class equally often
    expected = purity / 10 + (1 - purity) * p
    freq = np.bincount(labels, minlength=10) / n
    assert np.all(np.abs(freq - expected) < 5 * np.sqrt(expected * (1 - expected) / n))
    share = purity + (1 - purity) * np.mean(p)
    assert abs(in_block.mean() - share) < 5 * math.sqrt(share * (1 - share) / n)


def test_class_blocked_rows_come_from_the_split():
    split = labelled_split()
    for b in take(ClassBlockedStream(split, 8, 2, 0.5, seed=0, total_batches=30), 30):
        idx = b.x[:, 0].astype(int)
        np.testing.assert_array_equal(split.y[idx], b.y)
        np.testing.assert_array_equal(split.x[idx], b.x)


REGRESSION = Split(np.zeros((4, 1), np.float32), np.zeros(4, np.float32))
EMPTY = Split(np.zeros((0, 2), np.float32), np.zeros(0, np.int64))


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda s: ShuffledEpochs(s, 0, 1, 0), ConfigError, "batch must be an integer >= 1, got 0"),
        (lambda s: ShuffledEpochs(s, 4, 0, 0), ConfigError, "epochs must be an integer >= 1"),
        (lambda s: ShuffledEpochs(s, 4, 1, -1), ConfigError, "seed must be a non-negative int"),
        (lambda s: ShuffledEpochs(s, 4, 1, 1.5), ConfigError, "seed"),
        (lambda s: ShuffledEpochs(EMPTY, 4, 1, 0), ConfigError, "split is empty"),
        (lambda s: ShuffledEpochs(s.x, 4, 1, 0), ConfigError, "split must be a Split"),
        (lambda s: UniformPatterns(s, True, 0), ConfigError, "batch must be an integer"),
        (lambda s: ClassBlockedStream(s, 4, 0, 0.5, 0, 10), ConfigError, "run_length must be"),
        (lambda s: ClassBlockedStream(s, 4, 2, 1.2, 0, 10), ConfigError, "purity must be a number in"),
        (lambda s: ClassBlockedStream(s, 4, 2, -0.1, 0, 10), ConfigError, "purity"),
        (lambda s: ClassBlockedStream(s, 4, 2, 0.5, 0, 0), ConfigError, "total_batches must be"),
        (
            lambda s: ClassBlockedStream(REGRESSION, 4, 2, 0.5, 0, 10),
            ConfigError,
            "needs integer class labels",
        ),
        (lambda s: CorrelatedStream(1.01, 2, 2, 2, 0), ConfigError, "difficulty"),
        (lambda s: CorrelatedStream(0.5, 2, 0, 2, 0), ConfigError, "segments"),
    ],
)
def test_bad_knobs_are_named(make, error, match):
    with pytest.raises(error, match=match):
        make(labelled_split())


@pytest.mark.parametrize("name", FACTORIES)
def test_replica_streams_stack_what_each_stream_yields_and_move_each_cursor(name):
    seeds = (0, 4, 9)
    alone = [take(FACTORIES[name](s)) for s in seeds]
    own = [FACTORIES[name](s) for s in seeds]
    replicas = streams.ReplicaStreams(own)
    assert replicas._stacked  # streams of one kind and split: served a chunk at a time
    n = len(alone[0])  # the correlated stream here is shorter than N_TAKE
    for t in range(n):
        if t == 17:  # a replica restored (a resumed group) reads on from where it is
            for stream in own:
                stream.restore(stream.position())
        batch = next(replicas)
        assert batch.sid == t and not batch.x.flags.writeable
        for r in range(len(seeds)):
            assert np.array_equal(batch.x[r], alone[r][t].x)
            assert np.array_equal(batch.y[r], alone[r][t].y)
            assert batch.x[r].dtype == alone[r][t].x.dtype
    assert [s.position()["next_sid"] for s in own] == [n] * len(seeds)
    if own[0].total_batches == n:
        with pytest.raises(StopIteration):
            next(replicas)


def test_replica_streams_of_other_splits_or_sizes_are_stacked_batch_by_batch():
    other = streams.ReplicaStreams([FACTORIES["uniform"](0),
                                    UniformPatterns(multiplexer(3).train, 4, 1)])
    assert not other._stacked
    with pytest.raises(ValueError):  # 6-bit and 11-bit inputs cannot stack
        next(other)
    mixed = streams.ReplicaStreams([FACTORIES["correlated"](0), FACTORIES["correlated"](1),
                                    CorrelatedStream(0.9, 5, 7, 8, 2)])
    assert not mixed._stacked
    with pytest.raises(ValueError):  # batches of 4 and 8 cannot stack: said, not hidden
        next(mixed)
