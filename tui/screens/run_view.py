"""RunScreen: one run, live or replayed. Items from the source are applied as they come;
the panels redraw from the model at most ten times a second (no flicker at any event rate)."""

from __future__ import annotations

import time
from collections.abc import Callable

from scorch_tui.messages import SourceBatch
from scorch_tui.model import RunModel
from scorch_tui.screens.confirm_stop import AFTER_EPOCH, NOW, ConfirmStop
from scorch_tui.screens.help import HelpScreen
from scorch_tui.screens.run_info import RunInfoScreen
from scorch_tui.screens.steer import SteerScreen
from scorch_tui.sources import LIVE, CommandAck, Item, Source, SourceReader
from scorch_tui.widgets.chart_grid import ChartGrid
from scorch_tui.widgets.control_bar import ControlBar
from scorch_tui.widgets.event_log import EventLog
from scorch_tui.widgets.metrics_table import MetricsTable
from scorch_tui.widgets.progress_panel import ProgressPanel
from scorch_tui.widgets.ranks_panel import RanksPanel
from scorch_tui.widgets.run_header import RunHeader
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Footer

REDRAW_SECONDS = 0.1  # at most ten redraws a second, however fast events come
CLOCK_SECONDS = 1.0  # elapsed time and ETA tick once a second without events
SCALE_NOTES = {"auto": "y: auto (log where a linear axis would flatten the curve)", "log": "y: log scale",
               "linear": "y: linear scale"}
# While a replay reads its history the panels redraw only this often (the header with its percentage each
# time): a long log's history changes every frame, and the CPU is better spent reading it.
LOADING_SECONDS = 0.5


class RunScreen(Screen):
    BINDINGS = [
        Binding("c", "checkpoint", "checkpoint"),
        Binding("s", "stop", "stop"),
        Binding("p", "pause", "pause/resume", show=False),  # shown in the control bar, with c and s
        Binding("t", "steer", "steer", show=False),
        Binding("question_mark", "help", "help", key_display="?"),
        Binding("i", "info", "run info", show=False),
        Binding("w", "event_times", "clock times", show=False),
        Binding("escape", "back", "runs"),
        # The charts (see the help): letters the run's commands do not use.
        Binding("l", "chart_scale", "log/linear", show=False),
        Binding("e", "chart_smoothing", "smoothing", show=False),
        Binding("x", "chart_axis", "steps/time", show=False),
        Binding("z", "chart_zoom(True)", "zoom in", show=False),
        Binding("Z", "chart_zoom(False)", "zoom out", show=False),
    ]

    def __init__(self, source: Source, clock: Callable[[], float] = time.time, can_go_back: bool = False) -> None:
        super().__init__()
        self.source = source
        self.model = RunModel(clock)
        self.model.via = source.via
        self.can_go_back = can_go_back
        self.reader = SourceReader(source, self._deliver, paced=True)  # batches wait for the screen, not the keys
        self._drawn: tuple[int, str] | None = None
        self._clock_drawn = 0.0
        self._panels_drawn = 0.0
        self._commands_ok: bool | None = None

    def compose(self) -> ComposeResult:
        yield RunHeader(id="header")
        yield ProgressPanel(id="progress")
        yield ChartGrid(id="charts")
        with Horizontal(id="middle"):
            yield MetricsTable(id="metrics")
            yield RanksPanel(id="ranks")
        yield EventLog(id="events")
        yield ControlBar(id="control")
        yield Footer()

    def on_mount(self) -> None:
        self.redraw(force=True)
        self.call_after_refresh(self.reader.start)  # the first frame is painted before a long replay is read
        self.redraw_timer = self.set_interval(REDRAW_SECONDS, self.redraw)  # the only redraws after this one

    def on_unmount(self) -> None:
        self.reader.stop()

    # -- data in -------------------------------------------------------------------------------

    def _deliver(self, items: list[Item]) -> None:
        """Called on the reader thread: hand the batch to the UI thread."""
        try:
            self.post_message(SourceBatch(items))
        except RuntimeError:  # the app's loop has closed: nobody is watching any more
            pass

    def on_source_batch(self, message: SourceBatch) -> None:
        self.model.apply(message.items)
        self.reader.taken()
        if any(isinstance(item, CommandAck) for item in message.items):
            self.query_one(ControlBar).sending = ""

    # -- drawing -------------------------------------------------------------------------------

    def redraw(self, force: bool = False) -> None:
        """Bring every panel up to the model; cheap when nothing moved."""
        model = self.model
        now = time.monotonic()
        tick = model.watching_live and now - self._clock_drawn >= CLOCK_SECONDS
        drawn = (model.version, model.liveness())  # time alone turns LIVE into STALLED: every panel follows
        loading_wait = model.loading is not None and now - self._panels_drawn < LOADING_SECONDS
        if force or (drawn != self._drawn and not loading_wait):
            self._drawn = drawn
            self._panels_drawn = now
            self.query_one(ProgressPanel).show(model)
            self.query_one(ChartGrid).show(model)
            self.query_one(MetricsTable).show(model)
            self.query_one(RanksPanel).show(model)
            self.query_one(EventLog).show(model)
            tick = True
        if tick or (model.loading is not None and drawn != self._drawn):
            self._clock_drawn = now
            self.query_one(RunHeader).show(model)
        self.query_one(ControlBar).show(model, self.source.commands_off)
        ok = self.commands_possible
        if ok != self._commands_ok:
            self._commands_ok = ok
            self.refresh_bindings()

    # -- commands ------------------------------------------------------------------------------

    @property
    def commands_possible(self) -> bool:
        return not self.source.commands_off and self.model.state == "running" and self.model.connection == LIVE

    @property
    def commands_reason(self) -> str:
        if self.source.commands_off:
            return self.source.commands_off
        if self.model.state != "running":
            return "the run has ended"
        return f"not connected ({self.model.connection})"

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("checkpoint", "stop", "pause", "steer"):
            return True if self.commands_possible else None  # None: shown greyed out in the footer
        if action == "back":
            return self.can_go_back
        return True

    def send(self, command: str, after_epoch: bool = False, value: str | None = None) -> None:
        """Send a command if it can go; otherwise say why not."""
        if not self.commands_possible:
            self.notify(f"{command}: {self.commands_reason}", severity="warning")
            return
        self.source.send(command, after_epoch, value)
        bar = self.query_one(ControlBar)
        bar.sending = command + (" after epoch" if after_epoch else "") + (f" {value}" if value else "")
        bar.show(self.model, self.source.commands_off)

    def action_checkpoint(self) -> None:
        self.send("checkpoint")

    def action_stop(self) -> None:
        if not self.commands_possible:
            self.send("stop")
            return

        def answered(answer: str | None) -> None:
            if answer == NOW:
                self.send("stop")
            elif answer == AFTER_EPOCH:
                self.send("stop", after_epoch=True)

        self.app.push_screen(ConfirmStop(), answered)

    def action_chart_scale(self) -> None:
        view = self.query_one(ChartGrid).cycle_scale()
        self.notify(SCALE_NOTES[view.scale], timeout=3)

    def action_chart_smoothing(self) -> None:
        view = self.query_one(ChartGrid).cycle_smoothing()
        self.notify(f"smoothing: EMA {view.smoothing:g}" if view.smoothing else "smoothing off", timeout=3)

    def action_chart_axis(self) -> None:
        view = self.query_one(ChartGrid).toggle_axis()
        self.notify("x: time since the run started" if view.axis == "time" else "x: steps (epochs)", timeout=3)

    def action_chart_zoom(self, closer: bool) -> None:
        view = self.query_one(ChartGrid).zoom(closer)
        self.notify(f"charts: the last {view.window:,} steps" if view.window else "charts: the whole run", timeout=3)

    def action_pause(self) -> None:
        """Pause, or resume a paused run: no question asked (either is undone by the same key)."""
        self.send("resume" if self.model.paused else "pause")

    def action_steer(self, initial: str = "") -> None:
        """The steering dialog (lr, patience, timed checkpoints, pause), which shows what a command would do first."""
        if not self.commands_possible:
            self.send("steer")
            return

        def answered(answer: tuple[str, str | None] | None) -> None:
            if answer is not None:
                self.send(answer[0], value=answer[1])

        self.app.push_screen(SteerScreen(self.model.steering, self.model.lr, initial), answered)

    def action_help(self) -> None:
        self.app.push_screen(HelpScreen())

    def action_info(self) -> None:
        self.app.push_screen(RunInfoScreen(self.model))

    def action_event_times(self) -> None:
        """Event times since the run's start, or as the clock on the wall (to match other logs)."""
        self.model.clock_times = not self.model.clock_times
        self.redraw(force=True)

    def action_back(self) -> None:
        if self.can_go_back:
            self.dismiss()
