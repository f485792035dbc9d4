"""A chart series with bounded memory that keeps its shape: min/max per bucket.

A run of a million steps must draw the same spikes and dips as a run of a
hundred, in the same few kilobytes. `MinMaxSeries` holds at most `capacity`
buckets; when they are full, neighbouring buckets merge pairwise and each
bucket covers twice as many points from then on. A bucket keeps its first and
last point and its lowest and highest value, so no extreme is ever averaged
away, and a chart column that spans several buckets draws their full range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Index names of a bucket's fields; a bucket is a plain list for speed.
X0, X1, FIRST, LAST, LO, HI, COUNT = range(7)


@dataclass(frozen=True)
class Column:
    """The points of one chart column: where the line enters and leaves, and its range."""

    first: float
    last: float
    lo: float
    hi: float


class MinMaxSeries:
    """(x, y) points, downsampled in place: bounded memory, extremes kept.

    Points arrive in increasing x. Non-finite y values are counted but not kept
    (a NaN loss is reported elsewhere; it must not flatten the chart).
    """

    def __init__(self, capacity: int = 2048) -> None:
        if capacity < 2 or capacity % 2:
            raise ValueError("capacity must be an even number of at least 2")
        self.capacity = capacity
        self.per_bucket = 1  # points a full bucket holds; doubles at each compaction
        self.count = 0  # finite points seen
        self.skipped = 0  # non-finite points seen
        self._buckets: list[list[float]] = []

    def __len__(self) -> int:
        return self.count

    def append(self, x: float, y: float) -> None:
        if not math.isfinite(y):
            self.skipped += 1
            return
        self.count += 1
        buckets = self._buckets
        if buckets:
            b = buckets[-1]
            if b[COUNT] < self.per_bucket:
                b[X1] = x
                b[LAST] = y
                if y < b[LO]:
                    b[LO] = y
                elif y > b[HI]:
                    b[HI] = y
                b[COUNT] += 1
                return
            if len(buckets) >= self.capacity:
                self._compact()  # every merged bucket is full: the new point starts one more
        buckets.append([x, x, y, y, y, y, 1])

    def _compact(self) -> None:
        """Merge neighbours pairwise: half the buckets, each twice as wide."""
        merged = []
        buckets = self._buckets
        for i in range(0, len(buckets) - 1, 2):
            a, b = buckets[i], buckets[i + 1]
            merged.append([a[X0], b[X1], a[FIRST], b[LAST], min(a[LO], b[LO]), max(a[HI], b[HI]), a[COUNT] + b[COUNT]])
        if len(buckets) % 2:
            merged.append(buckets[-1])
        self._buckets[:] = merged
        self.per_bucket *= 2

    # -- reading ---------------------------------------------------------------------------

    @property
    def buckets(self) -> int:
        """How many buckets are held now (at most `capacity`)."""
        return len(self._buckets)

    @property
    def last(self) -> float | None:
        return self._buckets[-1][LAST] if self._buckets else None

    @property
    def x_range(self) -> tuple[float, float] | None:
        return (self._buckets[0][X0], self._buckets[-1][X1]) if self._buckets else None

    @property
    def y_range(self) -> tuple[float, float] | None:
        if not self._buckets:
            return None
        return min(b[LO] for b in self._buckets), max(b[HI] for b in self._buckets)

    def columns(self, width: int, x_min: float, x_max: float) -> list[Column | None]:
        """The series cut into `width` equal x slices over [x_min, x_max]; None where a slice is empty.

        A slice spanning several buckets takes the lowest low and the highest high
        among them, so a single spike survives any zoom level.
        """
        out: list[Column | None] = [None] * max(0, width)
        if width <= 0 or not self._buckets:
            return out
        span = x_max - x_min
        for b in self._buckets:
            if span > 0:
                i = int((b[X1] - x_min) / span * width)
                i = min(width - 1, max(0, i))
            else:
                i = width - 1
            c = out[i]
            if c is None:
                out[i] = Column(b[FIRST], b[LAST], b[LO], b[HI])
            else:
                out[i] = Column(c.first, b[LAST], min(c.lo, b[LO]), max(c.hi, b[HI]))
        return out
