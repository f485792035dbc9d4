"""RunList: the runs of a folder, one row each; enter opens the highlighted one."""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.text import Text
from scorch_tui.formatting import STATE_STYLES, duration
from scorch_tui.runs import RunEntry
from textual.widgets import DataTable

LIVENESS = {"live": ("● live", "bold green"), "finished": ("finished", "dim"),
            "dead": ("dead", "bold red"), "elsewhere": ("on another host", "yellow")}
COLUMNS = ("run", "state", "epoch", "started", "took", "host", "best", "status")  # what 80 columns show first


class RunList(DataTable):
    """Rows keyed by run path, updated in place so the cursor stays where the user put it."""

    def __init__(self, clock: Callable[[], float] = time.time, **kwargs: object) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)  # type: ignore[arg-type]
        self.entries: dict[str, RunEntry] = {}
        self.clock = clock

    def on_mount(self) -> None:
        for key in COLUMNS:
            self.add_column(key, key=key)

    def show(self, entries: list[RunEntry]) -> None:
        now = self.clock()
        for entry in entries:
            cells = row(entry, now)
            if entry.path in self.entries:
                for key, cell in zip(COLUMNS, cells):
                    self.update_cell(entry.path, key, cell)
            else:
                self.add_row(*cells, key=entry.path)
            self.entries[entry.path] = entry

    def highlighted(self) -> RunEntry | None:
        if not self.row_count:
            return None
        key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        return self.entries.get(str(key.value))


def age(seconds: float) -> str:
    """How long ago, in the largest unit that fits: 40s ago, 12m ago, 5h ago, 3d ago."""
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return f"{int(seconds)}s ago"


def row(entry: RunEntry, now: float) -> tuple[Text, Text, str, str, str, str, str, Text]:
    """The cells of COLUMNS."""
    label, style = STATE_STYLES.get(entry.state, (entry.state, ""))
    style = style.replace("black on ", "").replace("white on ", "")
    live_label, live_style = LIVENESS.get(entry.liveness, (entry.liveness, ""))
    if entry.liveness == "dead":  # run.json still says running; the list says what the run view will say
        label, style, live_label = "DEAD", "bold red", entry.dead_reason or live_label
    epoch = f"{entry.epochs_done}/{entry.epochs}" if entry.epochs else str(entry.epochs_done)
    took = entry.took(now)
    return (Text(entry.name, style="bold"), Text(label.lower(), style=style), epoch,
            age(now - entry.started) if entry.started else "-", "-" if took is None else duration(took),
            ", ".join(entry.hosts) or "-", entry.best or "-", Text(live_label, style=live_style))
