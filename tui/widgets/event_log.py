"""EventLog: recent checkpoints, commands, warnings and connection changes, newest at the bottom."""

from __future__ import annotations

from rich.text import Text
from scorch_tui.formatting import LEVEL_STYLES, duration
from scorch_tui.model import Note, RunModel
from textual.widgets import RichLog

# Single-width symbols only (no emoji): they must line up in any terminal over SSH.
ICONS = {"checkpoint": "✓", "command": "»", "ack": "»", "log": "·", "connection": "!", "ended": "■"}


class EventLog(RichLog):
    """Appends only the notes it has not written yet; old lines scroll away (bounded)."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(max_lines=500, wrap=False, markup=False, auto_scroll=True, **kwargs)  # type: ignore[arg-type]
        self.border_title = "events"
        self._written = 0

    def show(self, model: RunModel) -> None:
        new = model.notes_total - self._written
        if new <= 0:
            return
        notes = list(model.notes)[-min(new, len(model.notes)):]
        self._written = model.notes_total
        for note in notes:
            self.write(note_line(note))


def note_line(note: Note) -> Text:
    text = Text(duration(note.at) + " ", style="dim")
    text.append(ICONS.get(note.kind, "·") + " ", style=LEVEL_STYLES.get(note.level, ""))
    text.append(note.text, style=LEVEL_STYLES.get(note.level, ""))
    return text
