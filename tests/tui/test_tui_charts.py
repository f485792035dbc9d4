"""Charts made for long runs: y ticks, log scale, EMA smoothing, steps or time on x, a window over the last
steps, a layout that fills wide terminals, per-rank sparklines. Units first, then the real app under run_test()."""

from __future__ import annotations

import math
import re

import pytest
from helpers.tui import T0, ScriptedRun, ScriptedSource, settle, until
from scorch_tui.app import ScorchApp
from scorch_tui.model import RankUsage
from scorch_tui.series import Column, MinMaxSeries
from scorch_tui.sources import ConnectionChanged
from scorch_tui.widgets.chart_grid import MIN_WIDTH, ChartGrid, grid_for, nice_window
from scorch_tui.widgets.line_chart import ChartView, Line, LineChart, ema, render_chart, tick_text, ticks, use_log
from scorch_tui.widgets.ranks_panel import rank_table, sparkline

LIVE = ConnectionChanged("live", "tcp://127.0.0.1:5556")


def live_app(run: ScriptedRun | None = None, events: list | None = None) -> ScorchApp:
    """The dashboard on a scripted live run: by default 4 epochs and 37 steps into the fifth."""
    run = run or ScriptedRun()
    source = ScriptedSource()
    source.feed(LIVE, *(events if events is not None else run.through(4, 37)))
    return ScorchApp(source, clock=run.clock)


def decaying(n: int = 1000, start: float = 10.0, end: float = 0.01) -> MinMaxSeries:
    """A loss falling geometrically from `start` to `end`: three decades, most of it near the bottom."""
    series = MinMaxSeries()
    for i in range(n):
        series.append(i, start * (end / start) ** (i / (n - 1)), T0 + i)
    return series


def labels_of(lines: list[str]) -> dict[int, str]:
    """The y labels by row of a rendered chart."""
    out = {}
    for row, line in enumerate(lines[:-1]):
        label = line[:7].strip()
        if label:
            assert line[7] == "┤", line
            out[row] = label
    return out


def rows_with_dots(lines: list[str], first_cell: int, last_cell: int) -> set[int]:
    return {row for row, line in enumerate(lines[:-1]) if any(ch != " " for ch in line[8 + first_cell:8 + last_cell])}


# -- ticks ---------------------------------------------------------------------------------------


def test_linear_ticks_are_round_and_inside_the_range():
    assert ticks(0, 1, 5) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert ticks(0.013, 0.987, 4) == [0.2, 0.4, 0.6, 0.8]
    assert ticks(430, 12_345, 3) == [5000.0, 10000.0]


def test_log_ticks_are_decades_then_the_2_and_5_between():
    assert ticks(-2, 1, 4, log=True) == [0.01, 0.1, 1.0, 10.0]
    assert ticks(-1, math.log10(2.3), 6, log=True) == [0.1, 0.2, 0.5, 1.0, 2.0]
    assert ticks(-9, 0, 3, log=True) == [1e-8, 1e-4, 1.0]  # many decades: every fourth, on round powers


def test_tick_labels_fit_the_gutter():
    assert [tick_text(v) for v in (1e-5, 2e6, 0.02, 1500, 0.25)] == ["1e-5", "2e6", "0.02", "1500", "0.25"]
    assert tick_text(0.30000000000000004, 0.1) == "0.3" and tick_text(5000.0, 1000) == "5000"
    assert all(len(tick_text(v)) <= 7 for v in (1.2345678e-7, 9.87654e12, -0.000123))


def test_a_linear_chart_labels_several_round_ticks_at_their_rows():
    # GIVEN a line rising from 0 to 1, drawn 13 rows high
    series = MinMaxSeries()
    for i in range(101):
        series.append(i, i / 100)
    lines = render_chart([Line("v", series, "blue")], 40, 13, "step").plain.splitlines()
    labels = labels_of(lines)
    # THEN there are several labels, round values, top to bottom decreasing, never on adjacent rows
    assert len(labels) >= 4, labels
    values = [float(v) for _, v in sorted(labels.items())]
    assert values == sorted(values, reverse=True)
    assert all(abs(v * 10 - round(v * 10)) < 1e-9 for v in values)
    rows = sorted(labels)
    assert all(b - a >= 2 for a, b in zip(rows, rows[1:]))
    # AND each sits on the row where its value is drawn (12 rows of 4 dots from 1 at the top to 0 at the bottom)
    for row, text in labels.items():
        assert row == round((1 - float(text)) * 47) // 4


# -- log scale -----------------------------------------------------------------------------------


def test_a_loss_over_decades_is_drawn_on_a_log_axis_by_itself():
    # GIVEN a loss falling over three decades
    series = decaying()
    auto = render_chart([Line("train", series, "blue")], 48, 13, "step").plain.splitlines()
    linear = render_chart([Line("train", series, "blue")], 48, 13, "step", ChartView(scale="linear")).plain.splitlines()
    # THEN the automatic axis is log: labelled at decades, and says so
    assert set(labels_of(auto).values()) >= {"10", "1", "0.1", "0.01"}
    assert "log" in auto[-1]
    # AND the second half of the run spreads over many rows, where a linear axis draws it flat on the bottom
    assert len(rows_with_dots(auto, 20, 40)) >= 4
    assert rows_with_dots(linear, 20, 40) == {11}
    assert "log" not in linear[-1]


def test_one_spike_no_longer_flattens_the_run():
    series = MinMaxSeries()
    for i in range(100_000):
        series.append(i, 50.0 if i == 61_234 else 1.0 + 0.5 * math.sin(i / 5000))
    lines = render_chart([Line("train", series, "blue")], 48, 13, "step").plain.splitlines()
    # the wave (0.5 to 1.5) takes several rows under the spike instead of one
    assert "log" in lines[-1]
    assert len(rows_with_dots(lines, 0, 20)) >= 3


def test_auto_keeps_curves_that_use_the_chart_linear_and_log_needs_positive_values():
    rising = [[0, 0, 0.1, 0.97, 0.1, 0.97, 10, 5.0]]  # an accuracy: 0.1 to 0.97, mostly high
    assert not use_log(rising + [[1, 1, 0.9, 0.9, 0.9, 0.9, 90, 81.0]], 0.1, 0.97, "auto")
    assert use_log(rising, 0.1, 0.97, "log")
    assert not use_log(rising, -0.1, 0.97, "log")
    series = MinMaxSeries()
    for i in range(100):
        series.append(i, i - 50.0)
    lines = render_chart([Line("v", series, "blue")], 48, 8, "step", ChartView(scale="log")).plain.splitlines()
    assert "linear: values ≤ 0" in lines[-1]


# -- smoothing -----------------------------------------------------------------------------------


def test_ema_is_debiased_and_smooths_noise():
    flat = [Column(2.0, 2.0, 2.0, 2.0, 2.0)] * 5
    assert [c.mean for c in ema(flat, 0.9)] == pytest.approx([2.0] * 5)  # no pull towards 0 at the start
    noisy = [Column(v, v, v, v, v) for v in [0.0, 1.0] * 50]
    smoothed = [c.mean for c in ema(noisy, 0.9) if c]
    assert all(0.3 < v < 0.7 for v in smoothed[20:])
    assert ema([None, flat[0], None], 0.6)[0] is None


def test_smoothing_draws_one_line_through_the_noise_and_says_so():
    series = MinMaxSeries()
    for i in range(20_000):
        series.append(i, 1.0 + (0.5 if i % 2 else -0.5) * (i % 7) / 7)
    raw = render_chart([Line("v", series, "blue")], 48, 13, "step", ChartView(scale="linear"))
    smooth = render_chart([Line("v", series, "blue")], 48, 13, "step", ChartView(scale="linear", smoothing=0.9))
    assert "ema 0.9" in smooth.plain.splitlines()[-1]
    bright = {span.style for span in smooth.spans} & {"blue"}
    assert bright and "blue dim" in {span.style for span in smooth.spans}  # the raw envelope stays, faint
    assert "blue dim" not in {span.style for span in raw.spans}


# -- window and time ------------------------------------------------------------------------------


def test_a_window_over_the_last_steps_of_a_million_is_drawn_at_full_resolution():
    # GIVEN a million steps with a spike early on, and the last 1000 steps a slow wave
    series = MinMaxSeries(capacity=1024)
    for i in range(1_000_000):
        y = 100.0 if i == 5 else 1.0 + 0.1 * math.sin(i / 50)
        series.append(i, y, T0 + i / 10)
    lines = render_chart([Line("train", series, "blue")], 48, 13, "step", ChartView(window=1000), 1000).plain.splitlines()
    # THEN x spans the window, its y range is the window's own (the spike is outside), and the tag names it
    assert lines[-1].split("└")[1].startswith("998999")
    assert lines[-1].endswith("999999 step") and "last 1k steps" in lines[-1]
    assert max(float(v) for v in labels_of(lines).values()) < 2
    # AND the wave is drawn point by point: every row is used
    assert len(rows_with_dots(lines, 0, 40)) == 12


def test_an_epoch_chart_windowed_enters_from_the_point_before():
    series = MinMaxSeries()
    for epoch in range(1, 11):
        series.append(epoch, epoch / 10)
    lines = render_chart([Line("valid", series, "blue")], 48, 8, "epoch", ChartView(window=300), 3.0).plain.splitlines()
    assert lines[-1].split("└")[1].startswith("7") and lines[-1].endswith("10 epoch")
    assert lines[-2][8] != " " or any(line[8] != " " for line in lines[:-1])  # the line starts at the left edge


def test_time_on_x_reads_as_time_since_the_start_and_windows_by_steps():
    series = MinMaxSeries()
    for i in range(600):
        series.append(i, 1.0 / (1 + i), T0 + 30 + 10 * i)  # a step every 10 s, from 30 s after the start
    lines = render_chart([Line("train", series, "blue")], 48, 8, "step", ChartView(axis="time"), t0=T0).plain.splitlines()
    assert lines[-1].split("└")[1].startswith("30s") and lines[-1].endswith("1:40:20 elapsed")
    windowed = render_chart([Line("train", series, "blue")], 48, 8, "step", ChartView(axis="time", window=60), 60,
                            T0).plain.splitlines()
    assert windowed[-1].split("└")[1].startswith("1:30:20")  # the last 60 steps: 600 s


def test_time_falls_back_to_steps_for_points_without_times():
    series = MinMaxSeries()
    for i in range(10):
        series.append(i, float(i))
    assert render_chart([Line("v", series, "blue")], 40, 6, "step", ChartView(axis="time")).plain.endswith("9 step")


def test_a_point_without_its_time_is_left_off_a_time_axis():
    series = MinMaxSeries()
    for i in range(40):
        series.append(i, float(i), None if i == 20 else T0 + i)
    lines = render_chart([Line("v", series, "blue")], 40, 6, "step", ChartView(axis="time"), t0=T0).plain.splitlines()
    assert lines[-1].endswith("39s elapsed")


def test_zoom_windows_step_through_round_numbers():
    assert [nice_window(w, smaller=True) for w in (430, 200, 100, 50, 20)] == [200, 100, 50, 20, 10]
    assert [nice_window(w, smaller=False) for w in (10, 20, 50, 100)] == [20, 50, 100, 200]
    assert nice_window(1_000_000, smaller=True) == 500_000


# -- layout --------------------------------------------------------------------------------------


def test_grid_fills_the_panel():
    assert grid_for(2, 118, 17).columns == 2  # digits at 120x40: loss and accuracy side by side, no empty third
    assert grid_for(3, 78, 8) == grid_for(3, 78, 8).__class__(2, 8, 2)  # 80x24: two a row, the third spans it
    wide = grid_for(2, 198, 37)
    assert wide.columns == 2 and wide.row_height == 0  # rows share the height
    many = grid_for(12, 198, 37)
    assert (198 - many.columns + 1) / many.columns >= MIN_WIDTH


@pytest.mark.parametrize("size", [(80, 24), (120, 40), (200, 60)])
@pytest.mark.parametrize("metrics", [2, 3])
async def test_charts_cover_their_panel_at_every_size(size, metrics):
    app = live_app(ScriptedRun(few_metrics=metrics == 2))
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        grid = app.screen.query_one(ChartGrid)
        charts = list(app.screen.query(LineChart))
        assert len(charts) == metrics
        panel = grid.content_region
        visible = [c.region for c in charts if c.region.y < panel.bottom]
        # THEN the charts that fit cover the panel's width on every row, and its height, leaving no empty part
        covered = sum(r.width * min(r.height, panel.bottom - r.y) for r in visible)
        gaps = sum(1 for r in visible if r.right < panel.right - 1)  # one gutter column between two charts
        assert covered + gaps * min(r.height for r in visible) >= panel.area * 0.97, (size, visible, panel)
        assert all(r.width >= MIN_WIDTH for r in visible)


# -- keys ----------------------------------------------------------------------------------------


def axis_row(app: ScorchApp, name: str = "loss") -> str:
    chart = next(c for c in app.screen.query(LineChart) if c.chart_name == name)
    return chart.render().plain.splitlines()[-1]


async def test_chart_keys_change_every_chart_and_say_so():
    app = live_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        grid = app.screen.query_one(ChartGrid)
        assert "log" in axis_row(app)  # the loss spans decades: log by itself
        # l: log everywhere, then linear, then automatic again
        await pilot.press("l")
        assert grid.view.scale == "log" and "log" in axis_row(app, "f1")
        await pilot.press("l")
        assert grid.view.scale == "linear" and "log" not in axis_row(app)
        await pilot.press("l")
        assert grid.view.scale == "auto" and "log" in axis_row(app)
        # e: EMA 0.6, 0.9, off
        await pilot.press("e")
        assert "ema 0.6" in axis_row(app) and "ema 0.6" in axis_row(app, "f1")
        await pilot.press("e")
        assert "ema 0.9" in axis_row(app)
        await pilot.press("e")
        assert "ema" not in axis_row(app)
        # x: time since the start, then steps
        await pilot.press("x")
        assert re.search(r"└0s .* 2\ds elapsed$", axis_row(app)), axis_row(app)
        await pilot.press("x")
        assert axis_row(app).endswith("430 step")
        # z: the last 200 steps (and 2 epochs on an epoch chart); Z: the whole run again
        await pilot.press("z")
        assert grid.view.window == 200
        assert axis_row(app).split("└")[1].startswith("230") and "last 200 steps" in axis_row(app)
        assert axis_row(app, "f1").split("└")[1].startswith("2")
        await pilot.press("z")
        assert grid.view.window == 100
        await pilot.press("Z", "Z")
        assert grid.view.window is None and axis_row(app).split("└")[1].startswith("10")


async def test_the_help_lists_the_chart_keys():
    run = ScriptedRun()
    app = live_app(run, run.through(1))
    async with app.run_test(size=(80, 30)) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        await until(pilot, lambda: "keys" in app.export_text())
        text = app.export_text()
        for key, words in (("l", "log"), ("e", "smooth"), ("x", "time"), ("z", "zoom")):
            assert re.search(rf"\b{key}\b.*{words}", text), (key, text)


# -- sparklines ----------------------------------------------------------------------------------


def test_sparklines_share_a_scale_and_show_gaps():
    assert sparkline([0.0, 50.0, 100.0, None, 100.0], 6, 100.0).plain == " ▁▅█ █"
    assert sparkline([1.0] * 30, 4, 2.0).plain == "▅▅▅▅"


async def test_the_ranks_panel_draws_each_ranks_history():
    # GIVEN a 4-rank run where rank 2 slows down in the second half of its system samples
    run = ScriptedRun()
    events = run.through(1)
    for i in range(30):
        events += run.system(slow_rank=2 if i >= 15 else 99)
    app = live_app(run, events)
    async with app.run_test(size=(200, 60)) as pilot:
        await settle(pilot)
        text = app.export_text()
    rows = {int(m.group(1)): line for line in text.splitlines() if (m := re.search(r"\s(\d) gpu-[ab] ", line))}
    assert "step history" in text and "cpu history" in text and "gpu history" in text
    # THEN rank 2's step sparkline rises half way along, the others stay level
    step_bars = {rank: re.search(r"ms (?:◀ slowest )?\s*([▁-█]+)", line).group(1) for rank, line in rows.items()}
    assert len(set(step_bars[2])) == 2 and step_bars[2][-1] == "█"
    assert all(len(set(step_bars[r])) == 1 for r in (0, 1, 3))


def test_no_room_no_sparklines():
    ranks = [RankUsage(0, cpu=50.0, step_time=0.1)]
    table = rank_table(ranks, None, wide=False)
    assert [c.header for c in table.columns][-1] == ""


async def test_the_palette_offers_the_chart_views():
    app = live_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert {"Charts: log / linear / automatic scale", "Charts: smoothing", "Charts: zoom in"} <= set(titles)
        # WHEN the user picks "Charts: smoothing" from the palette
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"charts: smoothing")
        await pilot.pause(0.3)
        await pilot.press("enter")
        grid = app.screen.query_one(ChartGrid)
        await until(pilot, lambda: grid.view.smoothing == 0.6)
        # THEN every chart is smoothed, as with e
        assert grid.view.smoothing == 0.6 and "ema 0.6" in axis_row(app)
