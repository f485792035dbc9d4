"""ConfirmStop: asks before a stop; `y` stops after this step, `e` after this epoch, anything else cancels."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

NOW, AFTER_EPOCH = "now", "after_epoch"

QUESTION = """\
Stop the run?

It saves checkpoints/last.pt, then ends cleanly.

  [b]y[/b]  stop after the current step
  [b]e[/b]  stop after this epoch
  [b]n[/b]  or [b]esc[/b]  keep training"""


class ConfirmStop(ModalScreen[str | None]):
    """Dismisses with NOW, AFTER_EPOCH or None."""

    BINDINGS = [
        Binding("y", "answer('now')", "stop now"),
        Binding("e", "answer('after_epoch')", "after epoch"),
        Binding("n,escape,q", "answer('')", "cancel"),
    ]

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-box", classes="dialog"):
            yield Static(QUESTION, id="confirm-text")

    def on_mount(self) -> None:
        self.query_one("#confirm-box").border_title = "stop"

    def action_answer(self, answer: str) -> None:
        self.dismiss(answer or None)
