"""RunList: the runs of a folder, one row each; enter opens the highlighted one."""

from __future__ import annotations

from rich.text import Text
from scorch_tui.formatting import STATE_STYLES
from scorch_tui.runs import RunEntry
from textual.widgets import DataTable

LIVENESS = {"live": ("● live", "bold green"), "finished": ("finished", "dim"),
            "dead": ("dead", "bold red"), "elsewhere": ("on another host", "yellow")}


class RunList(DataTable):
    """Rows keyed by run path, updated in place so the cursor stays where the user put it."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)  # type: ignore[arg-type]
        self.entries: dict[str, RunEntry] = {}

    def on_mount(self) -> None:
        for key in ("run", "state", "epoch", "best", "status"):
            self.add_column(key, key=key)

    def show(self, entries: list[RunEntry]) -> None:
        for entry in entries:
            cells = row(entry)
            if entry.path in self.entries:
                for key, cell in zip(("run", "state", "epoch", "best", "status"), cells):
                    self.update_cell(entry.path, key, cell)
            else:
                self.add_row(*cells, key=entry.path)
            self.entries[entry.path] = entry


def row(entry: RunEntry) -> tuple[Text, Text, str, str, Text]:
    label, style = STATE_STYLES.get(entry.state, (entry.state, ""))
    style = style.replace("black on ", "").replace("white on ", "")
    live_label, live_style = LIVENESS.get(entry.liveness, (entry.liveness, ""))
    if entry.liveness == "dead":  # run.json still says running; the list says what the run view will say
        label, style, live_label = "DEAD", "bold red", entry.dead_reason or live_label
    epoch = f"{entry.epochs_done}/{entry.epochs}" if entry.epochs else str(entry.epochs_done)
    return Text(entry.name, style="bold"), Text(label.lower(), style=style), epoch, entry.best or "-", Text(live_label, style=live_style)
