"""RanksPanel: CPU, RAM and GPU of every rank, one line each, the slowest rank marked."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from scorch_tui.formatting import size, value
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
        self._body.update(rank_table(model.ranks, model.slowest, wide=width >= 60))
        title = f"ranks ({len(model.ranks)})"
        if model.slowest is not None:
            title += f"  [yellow]slowest: rank {model.slowest}[/]"
        self.border_title = title


    def on_resize(self) -> None:  # a finished replay gets no more events: a resize alone must redraw it
        model = getattr(self.screen, "model", None)
        if model is not None:
            self.show(model)


def rank_table(ranks: list[RankUsage], slowest: int | None, wide: bool) -> Table:
    """One row a rank. Narrow (80 columns, half the screen): rank, cpu, ram, gpu, gpu memory, step time."""
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
    table.add_column("", no_wrap=True)
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
        if r.state == "silent":  # the per-rank channel has heard nothing from it: stopped, stuck or gone
            row.append(Text("silent", style="bold red"))
            table.add_row(*row, style="red")
            continue
        row.append(Text("◀ slowest" if wide else "◀", style="bold yellow") if is_slowest else "")
        table.add_row(*row, style="yellow" if is_slowest else None)
    return table


def _percent(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f}%"


def _seconds(x: float | None) -> str:
    """71ms, 1.24s: step and data times in five characters."""
    if x is None:
        return "-"
    return f"{x * 1000:.0f}ms" if x < 1 else f"{value(x, 3)}s"
