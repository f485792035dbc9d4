"""PickerScreen: choose a run from a folder of runs; the list refreshes itself every few seconds."""

from __future__ import annotations

from collections.abc import Callable

from scorch_tui.runs import RunEntry, list_runs
from scorch_tui.widgets.run_list import RunList
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

REFRESH_SECONDS = 2.0


class PickerScreen(Screen):
    BINDINGS = [
        Binding("enter", "open", "open", priority=False),
        Binding("r", "refresh", "refresh"),
    ]

    def __init__(self, folder: str, open_run: Callable[[RunEntry], None],
                 lister: Callable[[str], list[RunEntry]] = list_runs, refresh_list: bool = True) -> None:
        super().__init__()
        self.folder = folder
        self.open_run = open_run
        self.lister = lister
        self.refresh_list = refresh_list

    def compose(self) -> ComposeResult:
        yield Static(f" scorch · runs in [b]{self.folder}[/b]", id="picker-title")
        yield RunList(id="runs")
        yield Static("enter: open the highlighted run  ·  live runs stream, finished ones replay", id="picker-hint")
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

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        table = self.query_one(RunList)
        entry = table.entries.get(str(event.row_key.value))
        if entry is not None:
            self.open_run(entry)

    def action_open(self) -> None:
        table = self.query_one(RunList)
        if table.row_count:
            key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
            entry = table.entries.get(str(key.value))
            if entry is not None:
                self.open_run(entry)
