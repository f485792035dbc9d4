"""SteerScreen: steer the run by typing what scorch-ctl takes (lr x0.5, patience off, checkpoint-every 10m, ...).

The dialog is the confirmation: it shows what the command would do (the learning rate before and after)
before enter sends it; a value the run would refuse is named here and nothing is sent. Esc cancels.
"""

from __future__ import annotations

from rich.markup import escape
from scorch_tui.formatting import value as shown
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static

from scorch.steering import SteerError, Steering, parse_line, resolve
from scorch.telemetry.control import Request

FORMS = """\
[b]lr x0.5[/b]  [b]lr x2[/b]  [b]lr 1e-4[/b]  [b]lr reset[/b]   learning rate (on top of a scheduler)
[b]patience 5[/b]  [b]patience off[/b]            early stopping
[b]checkpoint-every 10m[/b]  [b]... off[/b]        timed checkpoints from now on
[b]pause[/b]  [b]resume[/b]                      (or the [b]p[/b] key)

[b]enter[/b] sends   [b]esc[/b] cancels"""


class SteerScreen(ModalScreen[tuple[str, str | None] | None]):
    """Dismisses with (command, value) to send, or None."""

    BINDINGS = [Binding("escape", "cancel", "cancel")]

    def __init__(self, steering: Steering, lr: float | None, initial: str = "") -> None:
        super().__init__()
        self.steering, self.lr, self.initial = steering, lr, initial

    def compose(self) -> ComposeResult:
        with Vertical(id="steer-box", classes="dialog"):
            yield Static(self.now(), id="steer-now")
            yield Input(value=self.initial, placeholder="lr x0.5", id="steer-input")
            yield Static("", id="steer-preview")
            yield Static(FORMS, id="steer-forms")

    def on_mount(self) -> None:
        self.query_one("#steer-box").border_title = "steer"
        self.query_one(Input).focus()
        self.preview(self.initial)

    def now(self) -> str:
        words = self.steering.words()
        rate = f"lr {shown(self.lr)}" if self.lr is not None else "lr unknown yet"
        return f"now: {rate}" + (f" ({', '.join(words)})" if words else " (not steered)")

    def preview(self, text: str) -> str:
        """What `text` would do, or what is wrong with it; returned for tests."""
        said = ""
        if text.strip():
            try:
                command, value = parse_line(text)
                new, [(_, said)] = resolve(self.steering, [Request(command, value=value)], self.lr or 1.0)
                if command == "lr" and self.lr is None:
                    said = f"lr x{new.lr_scale:.4g} of the schedule"
                said = f"[green]{escape(said)}[/green]"
            except SteerError as exc:
                said = f"[yellow]{escape(exc.message)}[/yellow]"
        self.query_one("#steer-preview", Static).update(said)
        return said

    def on_input_changed(self, event: Input.Changed) -> None:
        self.preview(event.value)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        try:
            self.dismiss(parse_line(event.value))
        except SteerError as exc:
            self.query_one("#steer-preview", Static).update(f"[yellow]{escape(exc.message)}[/yellow]")

    def action_cancel(self) -> None:
        self.dismiss(None)
