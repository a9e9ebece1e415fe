"""BatchRecord, the range set of batch ids a layer applied, dropped or lost, against a Python set."""

import numpy as np
import pytest

from async_coagents.core.record import BatchRecord


@pytest.mark.parametrize("order", ["ascending", "shuffled", "mostly ascending"])
def test_record_behaves_like_a_set(order):
    rng = np.random.default_rng(7)
    ids = rng.integers(0, 300, size=600).tolist()
    if order == "ascending":
        ids = sorted(ids)
    elif order == "mostly ascending":
        ids = sorted(ids)
        for i in rng.integers(0, len(ids) - 1, size=40):
            ids[i], ids[i + 1] = ids[i + 1], ids[i]
    record, reference = BatchRecord(), set()
    for sid in ids:
        assert (sid in record) == (sid in reference)
        assert record.add(sid) == (sid not in reference)
        reference.add(sid)
    assert len(record) == len(reference)
    assert all((sid in record) == (sid in reference) for sid in range(-2, 305))
    starts, ends = zip(*record.ranges, strict=True)
    assert all(e < s for e, s in zip(ends[:-1], starts[1:], strict=True)), "ranges must not touch"
    assert BatchRecord.from_list(record.to_list()) == record


def test_consecutive_ids_stay_one_range():
    record = BatchRecord()
    for sid in range(10_000):
        record.add(sid)
    assert record.ranges == [(0, 10_000)] and record.to_list() == [0, 10_000]
