"""MinMaxSeries and the chart drawn from it: bounded memory, extremes kept, shape kept."""

from __future__ import annotations

import math
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scorch_tui.series import MinMaxSeries
from scorch_tui.widgets.line_chart import Line, render_chart


def test_a_million_steps_keep_their_spike_and_dip_in_bounded_memory():
    # GIVEN a loss curve of a million steps with one spike and one dip
    series = MinMaxSeries(capacity=1024)
    n = 1_000_000
    for i in range(n):
        y = 2.0 / (1 + i * 1e-4)
        if i == 612_345:
            y = 50.0
        elif i == 87_654:
            y = -3.0
        series.append(i, y)
    # THEN memory is bounded: never more than `capacity` buckets of 7 numbers
    assert series.buckets <= 1024
    assert sys.getsizeof(series._buckets) < 16 * 1024
    # AND every point was counted and the extremes survived
    assert series.count == n
    assert series.y_range == (-3.0, 50.0)
    assert series.x_range == (0, n - 1)
    # AND an 80-column view still shows the spike in the column it falls in
    columns = series.columns(80, 0, n - 1)
    spike_column = max(range(80), key=lambda i: columns[i].hi if columns[i] else -math.inf)
    assert spike_column == int(612_345 / (n - 1) * 80)
    assert min(c.lo for c in columns if c) == -3.0


def test_columns_follow_the_true_envelope_of_a_wave():
    # GIVEN a sine wave of 200k points, downsampled to 256 buckets
    series = MinMaxSeries(capacity=256)
    xs = range(200_000)
    ys = [math.sin(x / 5000) for x in xs]
    for x, y in zip(xs, ys):
        series.append(x, y)
    # WHEN cut into 40 columns
    columns = series.columns(40, 0, 199_999)
    # THEN each column spans exactly the points of its slice, give or take one bucket at its edges
    width = series.per_bucket
    for i, column in enumerate(columns):
        assert column is not None
        lo_x, hi_x = i * 200_000 // 40, (i + 1) * 200_000 // 40
        surely_in = ys[lo_x:hi_x - width]
        maybe_in = ys[max(0, lo_x - width):hi_x]
        assert min(maybe_in) <= column.lo <= min(surely_in)
        assert max(surely_in) <= column.hi <= max(maybe_in)


def test_non_finite_values_are_counted_not_drawn():
    series = MinMaxSeries()
    series.append(0, 1.0)
    series.append(1, math.nan)
    series.append(2, math.inf)
    series.append(3, 2.0)
    assert series.count == 2 and series.skipped == 2
    assert series.y_range == (1.0, 2.0)


def test_capacity_must_be_even():
    with pytest.raises(ValueError):
        MinMaxSeries(capacity=3)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=600), st.sampled_from([2, 4, 16, 64]),
       st.integers(1, 50))
def test_any_sequence_keeps_its_extremes_and_stays_bounded(values, capacity, width):
    series = MinMaxSeries(capacity=capacity)
    for i, y in enumerate(values):
        series.append(i, y)
    assert series.buckets <= capacity
    assert series.y_range == (min(values), max(values))
    assert series.last == values[-1]
    columns = [c for c in series.columns(width, 0, len(values) - 1) if c]
    assert min(c.lo for c in columns) == min(values)
    assert max(c.hi for c in columns) == max(values)


def test_the_chart_draws_the_spike_at_the_top_row():
    # GIVEN a flat loss with one spike
    series = MinMaxSeries()
    for i in range(1000):
        series.append(i, 10.0 if i == 500 else 1.0)
    # WHEN drawn 40 cells wide and 6 high
    text = render_chart([Line("train", series, "blue")], 40, 6, "step").plain.splitlines()
    # THEN the top row is labelled with the spike's value and has dots only around the middle
    assert text[0].startswith("     10┤")
    plotted = [i for i, ch in enumerate(text[0][8:]) if ch != " "]
    assert plotted and all(14 <= i <= 18 for i in plotted)
    # AND the bottom row is the flat line, all the way across
    assert text[-2].startswith("      1┤")
    assert sum(ch != " " for ch in text[-2][8:]) >= 30
    assert text[-1].endswith("999 step")


def test_an_empty_chart_says_it_is_waiting():
    text = render_chart([Line("train", MinMaxSeries(), "blue")], 30, 5, "step").plain
    assert "waiting for data" in text
