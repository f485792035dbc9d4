"""LineChart: one or more series drawn with braille dots (2x4 per cell), y labels at round ticks on the left.

Each pixel column draws the full min..max range of the points that fall in
it (from `MinMaxSeries.view` and `columns_of`), joined to the previous column,
so a loss spike stays visible however many steps the chart spans. Sparse
series (one point per epoch) are joined by straight lines.

How a chart is read is a `ChartView`, the same for every chart on the screen:
the y scale (log automatically where a linear axis would squash the curve onto
its bottom rows), EMA smoothing, steps or time on x, and a window over the
last N steps. Every one of them works on the few thousand buckets a series
keeps, never on its points, so a redraw costs the same at a million steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rich.text import Text
from scorch_tui.formatting import value
from scorch_tui.series import COUNT, HI, LAST, LO, X0, X1, Column, MinMaxSeries, columns_of
from textual.widget import Widget

BRAILLE = 0x2800
# Dot bits of a braille cell by [row][column] (Unicode order).
DOTS = ((0x01, 0x08), (0x02, 0x10), (0x04, 0x20), (0x40, 0x80))
GUTTER = 8  # y label width
# Auto log scale: every value positive, the highest at least AUTO_LOG_RATIO x the lowest, and at least half the
# points in the lowest AUTO_LOG_BAND of the linear range (where a linear axis draws them as a flat bottom line).
AUTO_LOG_RATIO = 10.0
AUTO_LOG_BAND = 0.1
ROWS_PER_TICK = 3  # about one y label every 3 rows, never two on adjacent rows

SCALES = ("auto", "log", "linear")
SMOOTHING = (0.0, 0.6, 0.9)  # EMA weights the key steps through (TensorBoard's default is 0.6)
AXES = ("step", "time")


@dataclass(frozen=True)
class ChartView:
    """How every chart is drawn: y scale, smoothing, x axis and window. Changed by keys, shared by all charts."""

    scale: str = "auto"  # auto | log | linear
    smoothing: float = 0.0  # EMA weight over the chart's columns; 0 is off
    axis: str = "step"  # step | time (since the run started)
    window: int | None = None  # the last N steps; None is the whole run


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
        self.view = ChartView()
        self.window: float | None = None  # the view's window in this chart's x units (epochs on an epoch chart)
        self.t0: float | None = None  # the run's start: time on x reads as time since then
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

    def set_view(self, view: ChartView, window: float | None, t0: float | None) -> None:
        self.view, self.window, self.t0 = view, window, t0
        self.update_chart()

    def update_chart(self) -> None:
        """Redraw if any series gained points, or the view changed, since the last draw."""
        key = (tuple((line.label, line.series.count, line.series.last) for line in self.lines), self.view, self.window,
               self.t0)
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
        return render_chart(self.lines, width, height, self.x_label, self.view, self.window, self.t0)


@dataclass(frozen=True)
class _Frame:
    """What one drawing covers: the x span, the y span (in drawn units: log10 on a log axis), the tags to show."""

    x_lo: float
    x_hi: float
    y_lo: float
    y_hi: float
    log: bool
    tags: list[str]


def render_chart(lines: list[Line], width: int, height: int, x_label: str, view: ChartView = ChartView(),
                 window: float | None = None, t0: float | None = None) -> Text:
    """The chart as text: `height` rows of `width` cells (the last row is the x axis).

    `window` is the view's window in this chart's x units; `t0` the time x starts from on a time axis.
    """
    plot_w, plot_h = width - GUTTER, height - 1
    drawn = [line for line in lines if line.series.count]
    if plot_w < 4 or plot_h < 1:
        return Text("")
    if not drawn:
        return Text("\n" * (height // 2) + "waiting for data…".center(width), style="dim")
    by_time = view.axis == "time" and all(line.series.timed for line in drawn)
    views, x_min = _views(drawn, window, by_time)
    frame = _frame(views, view, x_min)
    if frame is None:
        return Text("\n" * (height // 2) + "no points in this window".center(width), style="dim")
    px_w, px_h = plot_w * 2, plot_h * 4
    cells = [[0] * plot_w for _ in range(plot_h)]
    colors: list[list[str | None]] = [[None] * plot_w for _ in range(plot_h)]
    scale = (px_h - 1) / (frame.y_hi - frame.y_lo)

    def row_of(y: float) -> int:
        r = int(round((frame.y_hi - _f(y, frame.log)) * scale))
        return min(px_h - 1, max(0, r))

    def draw(columns: list[Column | None], color: str) -> None:
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
                colors[cy][cx] = color
            previous = column

    for line, (inside, before) in zip(drawn, views):
        raw = columns_of(inside, px_w, frame.x_lo, frame.x_hi)
        start = before[LAST] if before is not None and x_min is not None else None  # where the line enters
        if view.smoothing:
            draw(_fill_gaps(raw, start), f"{line.color} dim")  # the raw envelope stays, faint, behind the EMA
            draw(_fill_gaps(ema(raw, view.smoothing), start), line.color)
        else:
            draw(_fill_gaps(raw, start), line.color)

    text = _plot_text(cells, colors, y_labels(frame, plot_h))
    text.append(_axis(frame, plot_w, x_label if not by_time else "elapsed", by_time, t0)[:width], style="dim")
    return text


def _plot_text(cells: list[list[int]], colors: list[list[str | None]], labels: dict[int, str]) -> Text:
    """The plot rows: the y label (or the bare axis) then the braille cells, one append per run of one colour."""
    text = Text(no_wrap=True, overflow="crop")
    for cy, (row, row_colors) in enumerate(zip(cells, colors)):
        label = labels.get(cy, "")
        text.append(label.rjust(GUTTER - 1)[: GUTTER - 1] + "┤" if label else " " * (GUTTER - 1) + "│", style="dim")
        run_start = 0
        for cx in range(1, len(row) + 1):
            if cx == len(row) or row_colors[cx] != row_colors[run_start]:
                text.append("".join(chr(BRAILLE + bits) if bits else " " for bits in row[run_start:cx]),
                            style=row_colors[run_start] or "")
                run_start = cx
        text.append("\n")
    return text


Views = list[tuple[list[list[float]], "list[float] | None"]]


def _views(drawn: list[Line], window: float | None, by_time: bool) -> tuple[Views, float | None]:
    """Each line's buckets inside the window (and the one before it), and where the window starts (None: no window)."""
    x_min: float | None = None
    if window is not None:
        x_min = max(line.series.x_range[1] for line in drawn) - window
        if by_time:  # the last N steps, as a time: when the first point of the window came
            times = [t for t in (line.series.time_at(x_min) for line in drawn) if t is not None]
            x_min = min(times) if times else None
    return [line.series.view(x_min, by_time) for line in drawn], x_min


def _frame(views: Views, view: ChartView, x_min: float | None) -> _Frame | None:
    buckets = [b for inside, _ in views for b in inside]
    if not buckets:
        return None
    x_lo, x_hi = min(b[X0] for b in buckets), max(b[X1] for b in buckets)
    if x_min is not None and any(before is not None for _, before in views):
        x_lo = x_min  # the window's left edge (the line enters from the point before it), not its first point
    y_lo, y_hi = min(b[LO] for b in buckets), max(b[HI] for b in buckets)
    tags: list[str] = []
    log = use_log(buckets, y_lo, y_hi, view.scale)
    if log:
        tags.append("log")
    elif view.scale == "log":
        tags.append("linear: values ≤ 0")
    if view.smoothing:
        tags.append(f"ema {view.smoothing:g}")
    if view.window is not None:
        tags.append(f"last {count_text(view.window)} steps")
    f_lo, f_hi = _f(y_lo, log), _f(y_hi, log)
    if f_hi - f_lo < 1e-12 * max(1.0, abs(f_hi)):
        pad = abs(f_hi) * 0.05 or 1.0
        f_lo, f_hi = f_lo - pad, f_hi + pad
    return _Frame(x_lo, x_hi, f_lo, f_hi, log, tags)


def use_log(buckets: list[list[float]], y_lo: float, y_hi: float, scale: str) -> bool:
    """Whether to draw on a log axis: asked for (and possible), or `auto` and a linear one would squash the curve."""
    if y_lo <= 0 or scale == "linear":
        return False
    if scale == "log":
        return True
    if y_hi < AUTO_LOG_RATIO * y_lo:
        return False
    band = y_lo + AUTO_LOG_BAND * (y_hi - y_lo)
    low = sum(b[COUNT] for b in buckets if b[HI] <= band)
    return low * 2 >= sum(b[COUNT] for b in buckets)


def _f(y: float, log: bool) -> float:
    return math.log10(y) if log else y


def ema(columns: list[Column | None], weight: float) -> list[Column | None]:
    """The debiased exponential moving average of the columns' means (as TensorBoard smooths what it draws).

    One pass over the chart's columns, however many points they summarise.
    """
    out: list[Column | None] = []
    acc = norm = 0.0
    for column in columns:
        if column is None:
            out.append(None)
            continue
        acc = weight * acc + (1 - weight) * column.mean
        norm = weight * norm + (1 - weight)
        s = acc / norm
        out.append(Column(s, s, s, s, s))
    return out


def nice_step(span: float, count: int) -> float:
    """A round step (1, 2 or 5 times a power of ten) giving about `count` ticks over `span`."""
    raw = span / max(1, count)
    if raw <= 0 or not math.isfinite(raw):
        return 1.0
    magnitude = 10 ** math.floor(math.log10(raw))
    # the round step whose tick count is closest to `count` (more ticks on a tie)
    return min((m * magnitude for m in (1, 2, 5, 10)), key=lambda step: (abs(span / step - count), -span / step))


def ticks(lo: float, hi: float, count: int, log: bool = False) -> list[float]:
    """Round values inside [lo, hi] (in data units) for about `count` labels.

    Linear: multiples of a 1/2/5 step. Log (`lo`, `hi` given as log10): the
    powers of ten inside, with 2x and 5x between when there are too few, or
    round values of a linear step when the range is under a decade.
    """
    if hi <= lo:
        return [10 ** lo if log else lo]
    if not log:
        step = nice_step(hi - lo, count)
        first = math.ceil(lo / step - 1e-9)
        out = []
        k = first
        while k * step <= hi + step * 1e-9:
            out.append(round(k * step, 12))
            k += 1
        return out
    powers = range(math.ceil(lo - 1e-9), math.floor(hi + 1e-9) + 1)
    every = max(1, math.ceil(len(powers) / max(1, count)))  # many decades: every other one, every fourth ...
    choices = [[10.0 ** k for k in powers if k % every == 0]]
    for multiples in ((1, 3), (1, 2, 5)):  # fewer decades than labels: 1-3 or 1-2-5 between them
        choices.append(sorted(m * 10.0 ** k for k in range(math.floor(lo) - 1, math.ceil(hi) + 1) for m in multiples
                              if lo - 1e-9 <= math.log10(m) + k <= hi + 1e-9))
    fitting = [c for c in choices if 2 <= len(c) <= max(2, count * 1.5)]
    if fitting:
        return min(fitting, key=lambda c: abs(len(c) - count))
    return [t for t in ticks(10 ** lo, 10 ** hi, count) if t > 0]  # under a decade: round values of a linear step


def tick_text(v: float, step: float | None = None) -> str:
    """A tick value in at most 7 characters: 0.25, 1500, 1e-05, 2e+06."""
    if v == 0:
        return "0"
    if 1e-3 <= abs(v) < 1e6:
        text = f"{v:.{max(0, -math.floor(math.log10(step) + 1e-9))}f}" if step else f"{v:.4g}"
        if len(text) <= 7 and "e" not in text:
            return text
    mantissa, exponent = f"{v:.1e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def y_labels(frame: _Frame, plot_h: int) -> dict[int, str]:
    """The y labels by text row: round ticks, at least one blank row between two."""
    count = max(2, plot_h // ROWS_PER_TICK)
    lo, hi = frame.y_lo, frame.y_hi
    values = ticks(lo, hi, count, frame.log)
    step = None if frame.log else nice_step(hi - lo, count)
    px_h = plot_h * 4
    out: dict[int, str] = {}
    for v in values:
        row = min(px_h - 1, max(0, int(round((hi - _f(v, frame.log)) / (hi - lo) * (px_h - 1))))) // 4
        if any(abs(row - taken) < 2 for taken in out):
            continue
        out[row] = tick_text(v, step)
    if len(out) < 2 and plot_h >= 2:  # no two round values fit: label the ends with the data's own
        out = {0: value(10 ** hi if frame.log else hi), plot_h - 1: value(10 ** lo if frame.log else lo)}
    return out


def _axis(frame: _Frame, plot_w: int, unit: str, by_time: bool, t0: float | None) -> str:
    """The x axis row: the first and last x, the view's tags between them."""
    def text(x: float) -> str:
        if by_time:
            return clock_text(x - (t0 if t0 is not None else frame.x_lo))
        return str(int(x)) if float(x).is_integer() else value(x)

    left, right = text(frame.x_lo), f"{text(frame.x_hi)} {unit}"
    room = plot_w - len(left) - len(right)
    tags = list(frame.tags)
    while tags and len("  ".join(tags)) + 2 > room:
        tags.pop()
    middle = "  ".join(tags).center(max(0, room)) if tags else " " * max(0, room)
    return " " * (GUTTER - 1) + "└" + left + middle + right


def count_text(n: float) -> str:
    """500, 20k, 1.5M: a step count in a few characters."""
    for div, unit in ((1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.0f}"


def clock_text(seconds: float) -> str:
    """Time since the start on a time axis: 45s, 12:30, 3:05:00."""
    s = int(round(max(0.0, seconds)))
    if s < 60:
        return f"{s}s"
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def _fill_gaps(columns: list[Column | None], start: float | None = None) -> list[Column | None]:
    """Join points that lie several columns apart (few epochs on a wide chart) with straight lines.

    `start` is where the line enters from the left edge (the last point before a window), if any.
    """
    out = list(columns)
    known = [i for i, c in enumerate(columns) if c is not None]
    ends: list[tuple[int, float, float]] = []  # (column, value leaving it, value entering it)
    if start is not None and known:
        ends.append((-1, start, start))
    ends += [(i, columns[i].last, columns[i].first) for i in known]  # type: ignore[union-attr]
    for (a, leave, _), (b, _, enter) in zip(ends, ends[1:]):
        if b - a < 2:
            continue
        for i in range(max(0, a + 1), b):
            y = leave + (enter - leave) * (i - a) / (b - a)
            out[i] = Column(y, y, y, y, y)
    return out
