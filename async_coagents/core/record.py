"""A compact record of batch ids (sorted disjoint ranges): which batches a layer applied, dropped
or lost. Batch ids are mostly consecutive, so a run of millions of batches is a handful of ranges;
the record goes into checkpoints as a flat list of ints."""

from __future__ import annotations

import bisect


class BatchRecord:
    """A set of non-negative ints stored as sorted, disjoint, non-adjacent ``[start, end)`` ranges.

    >>> r = BatchRecord(); [r.add(i) for i in (3, 1, 2, 7)] and None; r.ranges, len(r), 2 in r
    ([(1, 4), (7, 8)], 4, True)
    """

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []

    def __contains__(self, sid: int) -> bool:
        if not self.ends or sid >= self.ends[-1]:  # the usual case: a new, larger id
            return False
        i = bisect.bisect_right(self.starts, sid) - 1
        return i >= 0 and sid < self.ends[i]

    def add(self, sid: int) -> bool:
        """Add ``sid``; False if it was already there."""
        if self.ends and sid == self.ends[-1]:  # the usual case: the next id extends the last range
            self.ends[-1] = sid + 1
            return True
        i = bisect.bisect_right(self.starts, sid) - 1
        if i >= 0 and sid < self.ends[i]:
            return False
        joins_left = i >= 0 and self.ends[i] == sid
        joins_right = i + 1 < len(self.starts) and self.starts[i + 1] == sid + 1
        if joins_left and joins_right:
            self.ends[i] = self.ends[i + 1]
            del self.starts[i + 1], self.ends[i + 1]
        elif joins_left:
            self.ends[i] = sid + 1
        elif joins_right:
            self.starts[i + 1] = sid
        else:
            self.starts.insert(i + 1, sid)
            self.ends.insert(i + 1, sid + 1)
        return True

    def __len__(self) -> int:
        return sum(e - s for s, e in zip(self.starts, self.ends, strict=True))

    @property
    def ranges(self) -> list[tuple[int, int]]:
        return list(zip(self.starts, self.ends, strict=True))

    def to_list(self) -> list[int]:
        """Flat ``[start0, end0, start1, end1, ...]`` for checkpoints."""
        return [v for pair in self.ranges for v in pair]

    @classmethod
    def from_list(cls, flat: list[int]) -> BatchRecord:
        record = cls()
        record.starts = [int(v) for v in flat[0::2]]
        record.ends = [int(v) for v in flat[1::2]]
        return record

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BatchRecord) and self.ranges == other.ranges

    def __repr__(self) -> str:
        return f"BatchRecord({self.ranges})"
