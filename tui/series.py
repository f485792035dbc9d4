"""A chart series with bounded memory that keeps its shape: min/max per bucket.

A run of a million steps must draw the same spikes and dips as a run of a
hundred, in bounded memory (about 1 MiB for a full series of the default
capacity, whatever its length). `MinMaxSeries` holds at most `capacity`
buckets; when they are full, neighbouring buckets merge pairwise and each
bucket covers twice as many points from then on. A bucket keeps its first and
last point, its lowest and highest value and the sum (for a mean), so no
extreme is ever averaged away, and a chart column that spans several buckets
draws their full range.

The last `capacity` points are also kept as they came, so a window over the
latest steps (the chart's zoom) is drawn at full resolution however long the
run. Each point may carry the time it happened, so one series draws against
steps or against time. Reading a series (`view`, `columns`) costs O(capacity),
never O(points): a redraw of a million-step chart is as cheap as a short one.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

# Index names of a bucket's fields; a bucket is a plain list for speed. T0/T1: the times of its first and last
# point (NaN when the points came without one).
X0, X1, FIRST, LAST, LO, HI, COUNT, SUM, T0, T1 = range(10)
NO_TIME = math.nan


@dataclass(frozen=True)
class Column:
    """The points of one chart column: where the line enters and leaves, its range and its mean."""

    first: float
    last: float
    lo: float
    hi: float
    mean: float


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
        self._recent: deque[tuple[float, float, float]] = deque(maxlen=capacity)  # (x, y, t) as they came

    def __len__(self) -> int:
        return self.count

    def append(self, x: float, y: float, t: float | None = None) -> None:
        if not math.isfinite(y):
            self.skipped += 1
            return
        self.count += 1
        t = NO_TIME if t is None else t
        self._recent.append((x, y, t))
        buckets = self._buckets
        if buckets:
            b = buckets[-1]
            if b[COUNT] < self.per_bucket:
                b[X1] = x
                b[LAST] = y
                b[T1] = t
                if y < b[LO]:
                    b[LO] = y
                elif y > b[HI]:
                    b[HI] = y
                b[COUNT] += 1
                b[SUM] += y
                return
            if len(buckets) >= self.capacity:
                self._compact()  # every merged bucket is full: the new point starts one more
        buckets.append([x, x, y, y, y, y, 1, y, t, t])

    def _compact(self) -> None:
        """Merge neighbours pairwise: half the buckets, each twice as wide."""
        merged = []
        buckets = self._buckets
        for i in range(0, len(buckets) - 1, 2):
            a, b = buckets[i], buckets[i + 1]
            merged.append([a[X0], b[X1], a[FIRST], b[LAST], min(a[LO], b[LO]), max(a[HI], b[HI]), a[COUNT] + b[COUNT],
                           a[SUM] + b[SUM], a[T0], b[T1]])
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

    @property
    def timed(self) -> bool:
        """Whether every point kept came with its time (the chart can draw it against time)."""
        return bool(self._buckets) and not math.isnan(self._buckets[0][T0]) and not math.isnan(self._buckets[-1][T1])

    def time_at(self, x: float) -> float | None:
        """The time of the first point kept at or after x (None without times): turns "the last N steps" into a time."""
        if self._recent and self._recent[0][0] <= x:
            for px, _, t in self._recent:
                if px >= x:
                    return None if math.isnan(t) else t
        for b in self._buckets:
            if b[X1] >= x:
                return None if math.isnan(b[T0]) else b[T0]
        return None

    def columns(self, width: int, x_min: float, x_max: float) -> list[Column | None]:
        """The whole series cut into `width` columns (see `columns_of`)."""
        return columns_of(self._buckets, width, x_min, x_max)

    def view(self, x_min: float | None = None, by_time: bool = False) -> tuple[list[list[float]], list[float] | None]:
        """The buckets that reach `x_min` or later, and the one before them (to join the line from the left edge).

        A window the raw points still cover is read from them (full resolution).
        With `by_time`, x_min is a time and every bucket returned has its times in
        X0/X1, so the caller draws it the same way.
        """
        lo_key, hi_key = (T0, T1) if by_time else (X0, X1)
        buckets = self._buckets
        if x_min is not None and self.per_bucket > 1 and self._recent:
            first_x, _, first_t = self._recent[0]
            if (first_t if by_time else first_x) <= x_min:
                buckets = [[x, x, y, y, y, y, 1, y, t, t] for x, y, t in self._recent]
        if x_min is None:
            inside, before = buckets, None
        else:
            start = next((i for i, b in enumerate(buckets) if b[hi_key] >= x_min), len(buckets))
            inside, before = buckets[start:], (buckets[start - 1] if start else None)
        if by_time:  # a point that came without its time cannot be placed on a time axis: left out
            inside = [[b[T0], b[T1], *b[FIRST:]] for b in inside if b[T0] == b[T0] and b[T1] == b[T1]]
            before = [before[T0], before[T1], *before[FIRST:]] if before is not None else None
        return inside, before


def columns_of(buckets: list[list[float]], width: int, x_min: float, x_max: float) -> list[Column | None]:
    """Buckets cut into `width` equal x slices over [x_min, x_max]; None where a slice is empty.

    A slice spanning several buckets takes the lowest low and the highest high
    among them, so a single spike survives any zoom level.
    """
    if width <= 0 or not buckets:
        return [None] * max(0, width)
    span = x_max - x_min
    # plain lists, one slot a column: a redraw visits every bucket, so no object is built per bucket
    firsts: list[float | None] = [None] * width
    lasts, sums = [0.0] * width, [0.0] * width
    los, his = [math.inf] * width, [-math.inf] * width
    counts = [0.0] * width
    for b in buckets:
        if span > 0:
            i = int((b[X1] - x_min) / span * width)
            i = width - 1 if i >= width else 0 if i < 0 else i
        else:
            i = width - 1
        if firsts[i] is None:
            firsts[i] = b[FIRST]
        lasts[i] = b[LAST]
        if b[LO] < los[i]:
            los[i] = b[LO]
        if b[HI] > his[i]:
            his[i] = b[HI]
        sums[i] += b[SUM]
        counts[i] += b[COUNT]
    return [None if first is None else Column(first, lasts[i], los[i], his[i], sums[i] / counts[i])
            for i, first in enumerate(firsts)]
