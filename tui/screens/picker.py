"""PickerScreen: choose a run from a folder of runs; the list refreshes itself every few seconds."""

from __future__ import annotations

import time
from collections.abc import Callable

from scorch_tui.runs import RunEntry, list_runs
from scorch_tui.screens.help import HelpScreen
from scorch_tui.widgets.run_list import RunList
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

REFRESH_SECONDS = 2.0
HINT = "enter open  ·  ? help  ·  r refresh  ·  q quit"
PICKER_HELP = """\
[b]enter[/b]    open the highlighted run: a live one streams
         (and takes commands), a finished one replays
[b]arrows[/b]   move between runs
[b]r[/b]        refresh now (the list refreshes every 2 s)
[b]esc[/b]      in a run: back to this list
[b]q[/b]        quit (running jobs go on)
[b]?[/b]        this help

[b]started[/b]  how long ago the run started
[b]took[/b]     how long it ran (a live run: so far; a dead
         one: until its event log was last written)
[b]host[/b]     where its ranks run
[b]status[/b]   live, finished, dead (and why), or on another
         host (watch it with scorch-tui --ssh HOST)"""


class PickerScreen(Screen):
    BINDINGS = [
        Binding("enter", "open", "open", priority=False),
        Binding("r", "refresh", "refresh"),
        Binding("question_mark", "help", "help", key_display="?"),
    ]

    def __init__(self, folder: str, open_run: Callable[[RunEntry], None],
                 lister: Callable[[str], list[RunEntry]] = list_runs, refresh_list: bool = True,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.clock = clock
        self.folder = folder
        self.open_run = open_run
        self.lister = lister
        self.refresh_list = refresh_list

    def compose(self) -> ComposeResult:
        yield Static(f" scorch · runs in [b]{self.folder}[/b]", id="picker-title")
        yield RunList(self.clock, id="runs")
        yield Static(HINT, id="picker-hint")
        yield Footer()

    def on_mount(self) -> None:
        self.action_refresh()
        if self.refresh_list:
            self.set_interval(REFRESH_SECONDS, self.action_refresh)
        self.query_one(RunList).focus()

    def action_refresh(self) -> None:
        entries = self.lister(self.folder)
        self.query_one(RunList).show(entries)
        if not entries:
            self.query_one("#picker-hint", Static).update(f"no runs in {self.folder} yet (a run folder holds run.json)")

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        """The hint line tells the highlighted run's folder (and why it is dead): the columns are short."""
        entry = self.query_one(RunList).entries.get(str(event.row_key.value))
        if entry is not None:
            detail = f"dead: {entry.dead_reason}" if entry.dead_reason else entry.path
            self.query_one("#picker-hint", Static).update(f"{detail}  ·  {HINT}")

    def action_help(self) -> None:
        self.app.push_screen(HelpScreen(PICKER_HELP))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        table = self.query_one(RunList)
        entry = table.entries.get(str(event.row_key.value))
        if entry is not None:
            self.open_run(entry)

    def action_open(self) -> None:
        entry = self.query_one(RunList).highlighted()
        if entry is not None:
            self.open_run(entry)
