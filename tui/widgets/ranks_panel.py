"""RanksPanel: CPU, RAM and GPU of every rank, one line each, the slowest rank marked, with sparklines.

The sparklines show each rank's CPU use, GPU use and step time over the
latest system samples (one character each, newest on the right), as wide as
the panel leaves room for: step time first (the straggler's story), then CPU
and GPU. All ranks share a scale, so a slow or idle rank stands out.
"""

from __future__ import annotations

from collections import deque

from rich.table import Table
from rich.text import Text
from scorch_tui.formatting import duration, size, value
from scorch_tui.model import RankUsage, RunModel
from textual.containers import VerticalScroll
from textual.widgets import Static


class RanksPanel(VerticalScroll, can_focus=True):
    """A scrolling list of ranks; with more than one, the rank with the longest step time gets a cue."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.border_title = "ranks"
        self._body = Static("waiting for system figures…", classes="ranks-body")
        self._version = -1
        self._width = -1

    def compose(self):
        yield self._body

    def show(self, model: RunModel) -> None:
        width = self.content_size.width
        if (model.version, width) == (self._version, self._width):
            return
        self._version, self._width = model.version, width
        if not model.ranks:
            return
        spark = spark_width(model.ranks, model.slowest, width)
        self._body.update(rank_table(model.ranks, model.slowest, wide=width >= 60,
                                     history=model.rank_history if spark else None, spark=spark))
        title = f"ranks ({len(model.ranks)})"
        if model.slowest is not None:
            title += f"  [yellow]slowest: rank {model.slowest}[/]"
        times = list(model.history_times)[-max(spark[0], 1):] if spark[0] else []
        if len(times) > 1 and times[-1] > times[0]:  # what the sparklines span
            title += f"  history {duration(times[-1] - times[0]).removeprefix('00:')}"
        self.border_title = title


    def on_resize(self) -> None:  # a finished replay gets no more events: a resize alone must redraw it
        model = getattr(self.screen, "model", None)
        if model is not None:
            self.show(model)


SPARKS = ("step", "cpu", "gpu")  # the order sparklines get room in
MIN_SPARK = 6  # characters: narrower says nothing
BARS = "▁▂▃▄▅▆▇█"


def spark_width(ranks: list[RankUsage], slowest: int | None, width: int) -> tuple[int, int]:
    """(characters per sparkline, how many sparklines) that fit beside the table in `width`; (0, 0) for none."""
    base = _table_width(rank_table(ranks, slowest, wide=width >= 60))
    room = width - base
    for count in (3, 2, 1):
        each = room // count - 1
        if each >= MIN_SPARK:
            return min(each, 120), count
    return 0, 0


def _table_width(table: Table) -> int:
    """The width a table of plain cells takes: each column's widest cell plus its padding."""
    total = 0
    for column in table.columns:
        cells = [str(column.header), *(c.plain if isinstance(c, Text) else str(c) for c in column.cells)]
        total += min(max(len(c) for c in cells), column.max_width or 1000) + 1
    return total


def sparkline(values: list[float | None], width: int, top: float) -> Text:
    """The last `width` values as bars from 0 to `top`, newest on the right; a gap where a value is missing."""
    shown = values[-width:]
    text = Text(" " * (width - len(shown)))
    for v in shown:
        if v is None:
            text.append(" ")
        else:
            level = 0 if top <= 0 else min(len(BARS) - 1, int(v / top * (len(BARS) - 1) + 0.5))
            text.append(BARS[max(0, level)])
    return text


def rank_table(ranks: list[RankUsage], slowest: int | None, wide: bool,
               history: dict[int, deque] | None = None, spark: tuple[int, int] = (0, 0)) -> Table:
    """One row a rank. Narrow (80 columns, half the screen): rank, cpu, ram, gpu, gpu memory, step time.

    With `history` and room (`spark`: width, count), sparklines of step time, CPU and GPU use follow."""
    table = Table(box=None, padding=(0, 1, 0, 0), show_header=True, header_style="dim", expand=False, pad_edge=False)
    table.add_column("rank", justify="right", no_wrap=True)
    if wide:
        table.add_column("host", no_wrap=True, overflow="ellipsis", max_width=14)
    for name in ("cpu", "ram", "gpu", "gmem"):
        table.add_column(name, justify="right", no_wrap=True)
    if wide:
        table.add_column("temp", justify="right", no_wrap=True)
        table.add_column("data", justify="right", no_wrap=True)
    table.add_column("step", justify="right", no_wrap=True)
    table.add_column("", no_wrap=True)  # the mark, beside the step time it is about
    width, count = spark
    sparks = SPARKS[:count] if history else ()
    for name in sparks:
        label = next((t for t in (f"{name} history", f"{name} hist") if len(t) <= width), f"{name}~")
        table.add_column(label, no_wrap=True, width=width)
    tops = _tops(history, width) if history else {}
    for r in ranks:
        gpu = r.gpus[0] if r.gpus else {}
        if wide:
            gmem = f"{size(gpu.get('mem_used'))}/{size(gpu.get('mem_total'))}" if gpu.get("mem_total") else size(gpu.get("mem_used"))
        else:
            gmem = size(gpu.get("mem_used"))
        if len(r.gpus) > 1:
            gmem += f" +{len(r.gpus) - 1}"
        row: list[Text | str] = [str(r.rank)]
        if wide:
            row.append(r.host or "-")
        row += [_percent(r.cpu), size(r.ram), _percent(gpu.get("util")), gmem]
        if wide:
            row += [f"{gpu['temp']:.0f}°C" if isinstance(gpu.get("temp"), (int, float)) else "-", _seconds(r.data_time)]
        row.append(_seconds(r.step_time))
        is_slowest = r.rank == slowest
        silent = r.state == "silent"  # the per-rank channel has heard nothing from it: stopped, stuck or gone
        if silent:
            row.append(Text("silent", style="bold red"))
        else:
            row.append(Text("◀ slowest" if wide else "◀", style="bold yellow") if is_slowest else "")
        for name in sparks:
            index = ("cpu", "gpu", "step").index(name)
            values = [sample[index] for sample in (history or {}).get(r.rank, ())]
            row.append(sparkline(values, width, tops[name]))
        table.add_row(*row, style="red" if silent else "yellow" if is_slowest else None)
    return table


def _tops(history: dict[int, deque], width: int) -> dict[str, float]:
    """The scale of each sparkline, shared by all ranks: 100 % for use (more for a process on several cores),
    the longest step time shown for steps."""
    def top(index: int) -> float:
        values = [s[index] for h in history.values() for s in list(h)[-width:] if s[index] is not None]
        return max(values, default=0.0)

    return {"cpu": max(100.0, top(0)), "gpu": max(100.0, top(1)), "step": top(2)}


def _percent(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f}%"


def _seconds(x: float | None) -> str:
    """71ms, 1.24s: step and data times in five characters."""
    if x is None:
        return "-"
    return f"{x * 1000:.0f}ms" if x < 1 else f"{value(x, 3)}s"
