"""ControlBar: whether commands can be sent (and why not), and what the last one got back."""

from __future__ import annotations

from rich.text import Text
from scorch_tui.model import RunModel
from scorch_tui.sources import CONNECTING, DEAD, ERROR, RECONNECTING, TUNNEL_LOST
from textual.widgets import Static


class ControlBar(Static):
    """One line above the footer; a read-only reason stays visible for as long as it holds."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__("", **kwargs)  # type: ignore[arg-type]
        self.sending = ""  # "checkpoint" while a command waits for its ack
        self._shown: tuple | None = None

    def show(self, model: RunModel, commands_off: str) -> None:
        ack = model.last_ack
        key = (commands_off, self.sending, ack, model.state, model.connection, model.connection_detail, model.paused)
        if key == self._shown:
            return
        self._shown = key
        text = Text(no_wrap=True, overflow="ellipsis")
        if commands_off:
            text.append("⊘ ", style="bold yellow")
            text.append(commands_off, style="yellow")
        elif model.state != "running":
            text.append("⊘ the run has ended: no commands", style="yellow")
        elif model.connection in (DEAD, ERROR):
            text.append("⊘ no commands: the run is not there to take them", style="yellow")
        elif model.connection in (CONNECTING, RECONNECTING, TUNNEL_LOST):
            text.append(f"… {model.connection.replace('_', ' ')}: ", style="bold yellow")
            text.append(model.connection_detail or "waiting for the run", style="yellow")
        else:
            # The answer to the last command first: at 80 columns a long refusal must not be cut for the key list.
            if self.sending:
                text.append(f"{self.sending}: sending…", style="yellow")
            elif ack is not None:
                what = ack.command + (" after epoch" if ack.after_epoch else "") + (f" {ack.value}" if ack.value else "")
                if ack.status == "accepted":
                    text.append(f"{what}: accepted", style="green")
                else:
                    text.append(f"{what}: {ack.status}" + (f" ({ack.reason})" if ack.reason else ""), style="bold red")
            text.append("  │ " if text.cell_len else "commands: ", style="dim")
            for letter, word in (("c", "checkpoint"), ("s", "stop"), ("p", "resume" if model.paused else "pause"),
                                 ("t", "steer")):
                text.append(letter, style="bold")
                text.append(f" {word}  ")
            text.rstrip()
        self.update(text)
