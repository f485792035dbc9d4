"""ScorchApp: the dashboard. It receives a source (or a folder of runs and a way to open one); it never builds one.

    ScorchApp(source)                                one run, live or replayed
    ScorchApp(runs_folder="runs", opener=open_run)   pick a run first; `opener` turns a RunEntry into a Source

`clock` is injected so tests and snapshots show fixed elapsed times.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterable

from rich.console import Console
from scorch_tui.runs import RunEntry, list_runs
from scorch_tui.screens.picker import PickerScreen
from scorch_tui.screens.run_view import RunScreen
from scorch_tui.sources import Source, SourceError
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen


class ScorchApp(App):
    CSS_PATH = "app.tcss"
    TITLE = "scorch"
    # ctrl+c quits like any terminal program (Textual makes it "copy"); the job goes on either way.
    BINDINGS = [Binding("q", "quit", "quit"), Binding("ctrl+c", "quit", "quit", show=False, priority=True)]
    # Textual's own palette entries that do not apply here: a keys panel that squeezes the view (? is the help),
    # maximize, and a screenshot into the working folder of whoever runs the dashboard.
    HIDDEN_SYSTEM_COMMANDS = ("Quit", "Keys", "Maximize", "Minimize", "Screenshot")
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (34, "-tall")]

    def __init__(self, source: Source | None = None, *, runs_folder: str | None = None,
                 opener: Callable[[RunEntry], Source] | None = None, clock: Callable[[], float] = time.time,
                 lister: Callable[[str], list[RunEntry]] = list_runs, refresh_list: bool = True) -> None:
        super().__init__()
        if source is None and runs_folder is None:
            raise ValueError("ScorchApp needs a source or a runs folder")
        self.source = source
        self.runs_folder = runs_folder
        self.opener = opener
        self.clock = clock
        self.lister = lister
        self.refresh_list = refresh_list

    def on_mount(self) -> None:
        if self.source is not None:
            self.push_screen(RunScreen(self.source, self.clock))
        else:
            assert self.runs_folder is not None
            self.push_screen(PickerScreen(self.runs_folder, self.open_run, self.lister, self.refresh_list, self.clock))

    def open_run(self, entry: RunEntry) -> None:
        """From the picker: build the run's source with the opener and show it; esc comes back."""
        if self.opener is None:
            self.notify("this dashboard cannot open runs from the list", severity="error")
            return
        try:
            source = self.opener(entry)
        except SourceError as exc:
            self.notify(exc.message, severity="error", timeout=8)
            return
        self.push_screen(RunScreen(source, self.clock, can_go_back=True))

    def export_text(self) -> str:
        """The screen as plain text, as a terminal shows it (for the README capture and tests)."""
        width, height = self.size
        console = Console(width=width, height=height, file=io.StringIO(), force_terminal=True, record=True,
                          legacy_windows=False, safe_box=False)
        console.print(self.screen._compositor.render_update(full=True, screen_stack=self._background_screens))
        return console.export_text()

    @property
    def run_screen(self) -> RunScreen | None:
        screens = [s for s in self.screen_stack if isinstance(s, RunScreen)]
        return screens[-1] if screens else None

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """The palette offers what the keys do; unavailable commands say why instead of acting."""
        run = self.run_screen
        if run is not None:
            ok = run.commands_possible
            why = "" if ok else f" (unavailable: {run.commands_reason})"
            yield SystemCommand("Checkpoint now", "Save checkpoints/last.pt; training goes on" + why, run.action_checkpoint)
            yield SystemCommand("Stop the run", "Checkpoint, then end after the current step (asks first)" + why,
                                run.action_stop)
            yield SystemCommand("Stop after this epoch", "Finish the epoch, checkpoint, then end" + why,
                                lambda: run.send("stop", after_epoch=True))
            yield SystemCommand("Pause / resume", "Hold training at a step boundary, or go on" + why, run.action_pause)
            yield SystemCommand("Steer the run", "Learning rate, early-stopping patience, timed checkpoints" + why,
                                run.action_steer)
            yield SystemCommand("Help", "The keys", run.action_help)
            yield SystemCommand("Run info", "Settings, times, hosts' CPU and RAM", run.action_info)
            if run.can_go_back:
                yield SystemCommand("Back to the runs", "The run list of the folder", run.action_back)
        yield SystemCommand("Quit", "Leave the dashboard; the job goes on", self.action_quit)
        for command in super().get_system_commands(screen):
            if command.title not in self.HIDDEN_SYSTEM_COMMANDS:
                yield command
        if run is not None:  # how the charts are drawn (the keys l, e, x, z and Z)
            yield SystemCommand("Charts: log / linear / automatic scale", "The y axis of every chart (l)",
                                run.action_chart_scale)
            yield SystemCommand("Charts: smoothing", "EMA 0.6, 0.9 or off (e)", run.action_chart_smoothing)
            yield SystemCommand("Charts: steps or time on x", "Time since the run started, or steps (x)",
                                run.action_chart_axis)
            yield SystemCommand("Charts: zoom in", "The last N steps (z)", lambda: run.action_chart_zoom(True))
            yield SystemCommand("Charts: zoom out", "Towards the whole run (Z)", lambda: run.action_chart_zoom(False))
