"""RunHeader: connection and run state (coloured, always visible), name, ranks and hosts, elapsed, ETA."""

from __future__ import annotations

from rich.text import Text
from scorch_tui.formatting import duration, state_label
from scorch_tui.model import RunModel
from textual.widgets import Static


class RunHeader(Static):
    """The top line. States come first and the times sit on the right; the middle gives way when narrow.

    The clock comes from the model, so tests and snapshots can fix it.
    """

    def show(self, model: RunModel) -> None:
        width = self.content_size.width or 78
        right = Text(no_wrap=True)
        right.append("  elapsed ", style="dim")
        right.append(duration(model.elapsed()))
        if model.state == "running":
            right.append("  ETA ", style="dim")
            right.append(duration(model.eta()))
        room = max(10, width - right.cell_len)
        hosts = ", ".join(dict.fromkeys(model.hosts))
        ranks = f"{model.world_size} rank{'s' if model.world_size != 1 else ''}"
        for where in (f"  {ranks} on {hosts}" if hosts else f"  {ranks}", f"  {ranks}", ""):
            left = Text(no_wrap=True)
            left.append_text(state_label(model.connection))
            left.append(" ")
            left.append_text(state_label(model.state))
            left.append("  ")
            left.append(model.name or "(unnamed run)", style="bold")
            left.append(where, style="dim")
            if left.cell_len <= room:
                break
        left.truncate(room, overflow="ellipsis", pad=True)
        self.update(left + right)

    def on_resize(self) -> None:
        model = getattr(self.screen, "model", None)
        if model is not None:
            self.show(model)
