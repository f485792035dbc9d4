"""HelpScreen: the keys, in a box over the run; any of esc, ? or enter closes it."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

HELP = """\
[b]c[/b]        checkpoint now (training goes on)
[b]s[/b]        stop: checkpoint, then end (asks first:
         [b]y[/b] now, [b]e[/b] after this epoch)
[b]p[/b]        pause training at a step boundary; again: resume
[b]t[/b]        steer: lr x0.5/x2/1e-4/reset, patience N/off,
         checkpoint-every 10m/off (shows the effect first)
[b]l[/b]        charts: log scale, linear, automatic (log
         where a linear axis would flatten the curve)
[b]e[/b]        charts: smoothing (EMA 0.6, 0.9, off)
[b]x[/b]        charts: x in steps or time since the start
[b]z[/b] / [b]Z[/b]    charts: zoom in to the last N steps / out
[b]i[/b]        run info: settings, times, hosts' CPU/RAM
[b]w[/b]        event times: since the start / clock time
[b]q[/b]        quit the dashboard; the job goes on
[b]esc[/b]      back to the run list (from a folder)
[b]tab[/b]      move between panels; [b]arrows[/b] scroll
[b]ctrl+p[/b]   command palette (the same commands)
[b]?[/b]        this help

Commands need the run's token (RUN_DIR/.token or
--token-file); without it the dashboard is read-only."""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,question_mark,enter,h", "close", "close")]

    def __init__(self, text: str = HELP) -> None:
        super().__init__()
        self.text = text  # the run view's keys, or the picker's

    def compose(self) -> ComposeResult:
        with Vertical(id="help-box", classes="dialog"):
            yield Static(self.text, id="help-text")

    def on_mount(self) -> None:
        self.query_one("#help-box").border_title = "keys"

    def action_close(self) -> None:
        self.dismiss(None)
