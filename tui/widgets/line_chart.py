"""LineChart: one or more series drawn with braille dots (2x4 per cell), y labels on the left.

Each pixel column draws the full min..max range of the points that fall in
it (from `MinMaxSeries.columns`), joined to the previous column, so a loss
spike stays visible however many steps the chart spans. Sparse series (one
point per epoch) are joined by straight lines.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from scorch_tui.formatting import value
from scorch_tui.series import Column, MinMaxSeries
from textual.widget import Widget

BRAILLE = 0x2800
# Dot bits of a braille cell by [row][column] (Unicode order).
DOTS = ((0x01, 0x08), (0x02, 0x10), (0x04, 0x20), (0x40, 0x80))
GUTTER = 8  # y label width


@dataclass(frozen=True)
class Line:
    """One series on a chart: its legend label, the data, its colour."""

    label: str
    series: MinMaxSeries
    color: str


class LineChart(Widget):
    """A braille line chart of `Line`s sharing one x axis (steps or epochs)."""

    DEFAULT_CSS = """
    LineChart { height: 8; }
    """

    def __init__(self, name: str, x_label: str = "step", **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.chart_name = name
        self.x_label = x_label
        self.lines: list[Line] = []
        self._drawn_for: tuple | None = None

    def plot(self, lines: list[Line]) -> None:
        """Set the series to draw (the same objects keep growing: call `update_chart` to redraw)."""
        self.lines = lines
        self.update_chart()

    def rename(self, name: str) -> None:
        if name != self.chart_name:
            self.chart_name = name
            self._drawn_for = None
            self.update_chart()

    def update_chart(self) -> None:
        """Redraw if any series gained points since the last draw."""
        key = tuple((line.label, line.series.count, line.series.last) for line in self.lines)
        if key != self._drawn_for:
            self._drawn_for = key
            self.border_title = self._title()
            self.refresh()

    def _title(self) -> str:
        parts = [f"[b]{self.chart_name}[/b]"]
        for line in self.lines:
            if line.series.count:
                parts.append(f"[{line.color}]━ {line.label} {value(line.series.last, 3)}[/]")
        return " ".join(parts)

    def render(self) -> Text:
        width, height = self.content_size.width, self.content_size.height
        return render_chart(self.lines, width, height, self.x_label)


def render_chart(lines: list[Line], width: int, height: int, x_label: str) -> Text:
    """The chart as text: `height` rows of `width` cells (the last row is the x axis)."""
    plot_w, plot_h = width - GUTTER, height - 1
    drawn = [line for line in lines if line.series.count]
    if plot_w < 4 or plot_h < 1:
        return Text("")
    if not drawn:
        return Text("\n" * (height // 2) + "waiting for data…".center(width), style="dim")
    x_min = min(line.series.x_range[0] for line in drawn)
    x_max = max(line.series.x_range[1] for line in drawn)
    y_lo = min(line.series.y_range[0] for line in drawn)
    y_hi = max(line.series.y_range[1] for line in drawn)
    if y_hi - y_lo < 1e-12 * max(1.0, abs(y_hi)):
        pad = abs(y_hi) * 0.05 or 1.0
        y_lo, y_hi = y_lo - pad, y_hi + pad
    px_w, px_h = plot_w * 2, plot_h * 4
    cells = [[0] * plot_w for _ in range(plot_h)]
    colors: list[list[str | None]] = [[None] * plot_w for _ in range(plot_h)]

    def row_of(y: float) -> int:
        r = int(round((y_hi - y) / (y_hi - y_lo) * (px_h - 1)))
        return min(px_h - 1, max(0, r))

    for line in drawn:
        columns = _fill_gaps(line.series.columns(px_w, x_min, x_max))
        previous: Column | None = None
        for px, column in enumerate(columns):
            if column is None:
                previous = None
                continue
            top, bottom = row_of(column.hi), row_of(column.lo)
            if previous is not None:
                joint = row_of(previous.last)
                top, bottom = min(top, joint), max(bottom, joint)
            for py in range(top, bottom + 1):
                cy, cx = py // 4, px // 2
                cells[cy][cx] |= DOTS[py % 4][px % 2]
                colors[cy][cx] = line.color
            previous = column

    text = Text(no_wrap=True, overflow="crop")
    for cy in range(plot_h):
        label = value(y_hi) if cy == 0 else value(y_lo) if cy == plot_h - 1 else ""
        text.append(label.rjust(GUTTER - 1)[: GUTTER - 1] + "┤" if label else " " * (GUTTER - 1) + "│", style="dim")
        for cx in range(plot_w):
            bits = cells[cy][cx]
            text.append(chr(BRAILLE + bits) if bits else " ", style=colors[cy][cx] or "")
        text.append("\n")
    left, right = _x_text(x_min), f"{_x_text(x_max)} {x_label}"
    axis = " " * (GUTTER - 1) + "└" + left + right.rjust(max(0, plot_w - len(left)))
    text.append(axis[:width], style="dim")
    return text


def _x_text(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else value(x)


def _fill_gaps(columns: list[Column | None]) -> list[Column | None]:
    """Join points that lie several columns apart (few epochs on a wide chart) with straight lines."""
    out = list(columns)
    known = [i for i, c in enumerate(columns) if c is not None]
    for a, b in zip(known, known[1:]):
        if b - a < 2:
            continue
        start, end = columns[a].last, columns[b].first  # type: ignore[union-attr]
        for i in range(a + 1, b):
            y = start + (end - start) * (i - a) / (b - a)
            out[i] = Column(y, y, y, y)
    return out
