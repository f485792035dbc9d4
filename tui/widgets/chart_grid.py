"""ChartGrid: the loss chart, then one chart per metric, laid out to fill the panel; scrolls when there are more.

The grid picks its number of columns from its own size and the number of
charts (`grid_for`): every chart shown if they fit at a readable size, shaped
close to a usual chart's proportions, and the last chart of a short row
stretched over the empty cells, so no part of a wide terminal is left blank.
It also holds the `ChartView` the keys change, the same for every chart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from scorch_tui.model import RunModel
from scorch_tui.widgets.line_chart import AXES, SCALES, SMOOTHING, ChartView, Line, LineChart
from textual.containers import ScrollableContainer

TRAIN_COLOR = "#5fafff"
VALID_COLOR = "#ffaf5f"
MIN_WIDTH = 36  # a chart narrower than this (with its 8-cell gutter) leaves too few columns for a curve
MIN_HEIGHT = 8  # the title row, 6 rows of plot and the x axis
ASPECT = 1.8  # width:height on screen a chart is drawn closest to (a terminal cell is about twice as tall as wide)
GUTTER = 1  # between two charts in a row
SMALLEST_WINDOW = 10  # steps: zooming in stops here
NICE = (1, 2, 5)  # windows run 10, 20, 50, 100, ... steps


@dataclass(frozen=True)
class Grid:
    """How the charts are laid out: columns, the height of a row (0: rows share the height), the last one's span."""

    columns: int
    row_height: int
    last_span: int


def grid_for(charts: int, width: int, height: int) -> Grid:
    """The layout that shows the most charts, then the one whose charts are closest to ASPECT."""
    if charts <= 0 or width <= 0:
        return Grid(1, MIN_HEIGHT, 1)
    best: tuple[tuple[int, float], Grid] | None = None
    for columns in range(1, min(charts, max(1, (width + GUTTER) // (MIN_WIDTH + GUTTER))) + 1):
        rows = math.ceil(charts / columns)
        fits = rows * MIN_HEIGHT <= height
        row_height = height // rows if fits else MIN_HEIGHT
        visible = charts if fits else columns * max(1, height // MIN_HEIGHT)
        chart_width = (width - GUTTER * (columns - 1)) / columns
        shape = abs(math.log(chart_width / (2 * max(1, row_height)) / ASPECT))
        grid = Grid(columns, 0 if fits else MIN_HEIGHT, columns * rows - charts + 1)
        score = (visible, -shape)
        if best is None or score > best[0]:
            best = (score, grid)
    assert best is not None
    return best[1]


def nice_window(steps: float, smaller: bool) -> int:
    """The next window in the 10, 20, 50, 100 ... series below (or above) `steps`."""
    exponent = int(math.floor(math.log10(max(1.0, steps))))
    candidates = sorted(m * 10 ** e for e in range(exponent - 1, exponent + 2) for m in NICE)
    if smaller:
        below = [c for c in candidates if c < steps]
        return max(below) if below else SMALLEST_WINDOW
    return min(c for c in candidates if c > steps)


class ChartGrid(ScrollableContainer, can_focus=True):
    """Charts appear as metrics first arrive; arrow keys scroll to the ones below."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._charts: dict[str, LineChart] = {}
        self.border_title = "charts"
        self.view = ChartView()
        self._grid: Grid | None = None
        self._steps = 0  # the run's step count when last shown (zoom windows are cut from it)
        self._steps_per_epoch = 0
        self._t0: float | None = None

    def show(self, model: RunModel) -> None:
        """Make sure every chart exists, then redraw those whose data moved."""
        wanted: list[tuple[str, str, str, list[Line]]] = [
            ("loss", "loss", "step", [Line("train", model.train_loss, TRAIN_COLOR),
                                     Line("valid", model.valid_loss, VALID_COLOR)])]
        for track in model.chart_metrics():
            lines = [Line("valid", track.valid, VALID_COLOR)]
            if track.train.count:
                lines.insert(0, Line("train", track.train, TRAIN_COLOR))
            wanted.append((f"metric-{track.name}", model.metric_label(track.name), "epoch", lines))
        self._steps, self._steps_per_epoch, self._t0 = model.step, model.steps_in_epoch, model.started
        for key, title, x_label, lines in wanted:
            chart = self._charts.get(key)
            if chart is None:
                chart = self._charts[key] = LineChart(title, x_label, classes="chart")
                self.mount(chart)
                self._set_view(chart)
                chart.plot(lines)
            else:
                chart.rename(title)
                self._set_view(chart)
                if [(line.label, id(line.series)) for line in chart.lines] != [(line.label, id(line.series)) for line in lines]:
                    chart.plot(lines)
                else:
                    chart.update_chart()
        self._lay_out()

    @property
    def charts(self) -> dict[str, LineChart]:
        return dict(self._charts)

    # -- layout --------------------------------------------------------------------------------

    def on_resize(self) -> None:
        self._lay_out()

    def _lay_out(self) -> None:
        width, height = self.content_size.width, self.content_size.height
        grid = grid_for(len(self._charts), width, height)
        if grid == self._grid or not self._charts:
            return
        self._grid = grid
        self.styles.grid_size_columns = grid.columns
        self.styles.grid_rows = f"{grid.row_height}" if grid.row_height else "1fr"
        charts = list(self._charts.values())
        for i, chart in enumerate(charts):
            chart.styles.column_span = grid.last_span if i == len(charts) - 1 else 1
            chart.styles.height = grid.row_height or "1fr"

    # -- the view (keys) -----------------------------------------------------------------------

    def _set_view(self, chart: LineChart) -> None:
        window: float | None = self.view.window
        if window is not None and chart.x_label == "epoch":
            window = window / self._steps_per_epoch if self._steps_per_epoch else None
        chart.set_view(self.view, window, self._t0)

    def change_view(self, **changes: object) -> ChartView:
        self.view = replace(self.view, **changes)
        for chart in self._charts.values():
            self._set_view(chart)
        return self.view

    def cycle_scale(self) -> ChartView:
        return self.change_view(scale=SCALES[(SCALES.index(self.view.scale) + 1) % len(SCALES)])

    def cycle_smoothing(self) -> ChartView:
        return self.change_view(smoothing=SMOOTHING[(SMOOTHING.index(self.view.smoothing) + 1) % len(SMOOTHING)])

    def toggle_axis(self) -> ChartView:
        return self.change_view(axis=AXES[(AXES.index(self.view.axis) + 1) % len(AXES)])

    def zoom(self, closer: bool) -> ChartView:
        """Halve (about) the window over the last steps, or widen it; wider than the run is the whole run."""
        current = self.view.window
        if closer:
            if self._steps <= SMALLEST_WINDOW:
                return self.view
            window = nice_window(current if current is not None else self._steps, smaller=True)
            return self.change_view(window=max(SMALLEST_WINDOW, window))
        if current is None:
            return self.view
        window = nice_window(current, smaller=False)
        return self.change_view(window=None if window >= self._steps else window)
