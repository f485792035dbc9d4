"""EventLog: checkpoints, commands, warnings and connection changes, newest at the bottom.

The run's first notes stay at the top (how it started, resumed from where), the
latest error is pinned in the panel's title, lines too long end in "…",
and scrolling up stays put while new events arrive (only a view at the bottom
follows them), like `less +F` or a chat window.
"""

from __future__ import annotations

import time

from rich.text import Text
from scorch_tui.formatting import LEVEL_STYLES, duration
from scorch_tui.model import Note, RunModel
from textual.widgets import RichLog

# Single-width symbols only (no emoji): they must line up in any terminal over SSH.
ICONS = {"checkpoint": "✓", "command": "»", "ack": "»", "log": "·", "connection": "!", "ended": "■"}
MAX_LINES = 2000  # beyond this the panel is redrawn from the model: the run's start and its recent notes


class EventLog(RichLog):
    """Appends the notes it has not written yet; redraws them all when the width changes (ellipses move)."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(max_lines=None, wrap=False, markup=False, auto_scroll=False, **kwargs)  # type: ignore[arg-type]
        self.border_title = "events"
        self._written = 0
        self._width = 0
        self._clock = False  # the times as written: since the start, or clock times (key w)
        self._model: RunModel | None = None
        self._following = True  # whether the view was at the bottom: kept from before a resize changes the sizes

    @property
    def at_end(self) -> bool:
        return self.scroll_y >= self.max_scroll_y

    def watch_scroll_y(self, old: float, new: float) -> None:
        super().watch_scroll_y(old, new)
        self._following = new >= self.max_scroll_y  # the user scrolled (or a write followed the end)

    def show(self, model: RunModel) -> None:
        self._model = model
        self._pin(model)
        width = self.scrollable_content_region.width
        new = model.notes_total - self._written
        # Redrawn whole when the width or the times changed, when the panel grew too long, and when more notes came
        # than the model keeps (written one by one, the run's first notes and the count of those left out would be lost).
        if (width != self._width or model.clock_times != self._clock or len(self.lines) + new > MAX_LINES
                or new > len(model.notes)):
            self._redraw(model, width)
            return
        if new <= 0:
            return
        follow = self._following
        self._written = model.notes_total
        for note in list(model.notes)[-min(new, len(model.notes)):]:
            self.write(note_line(note, width, model.time_origin()), scroll_end=follow)

    def _redraw(self, model: RunModel, width: int) -> None:
        follow, y = self._following, self.scroll_y
        self._width, self._written, self._clock = width, model.notes_total, model.clock_times
        self.clear()
        recent = list(model.notes)
        start = [note for note in model.start_notes if not any(note is kept for kept in recent)]
        for note in start:
            self.write(note_line(note, width, model.time_origin()), scroll_end=False)
        skipped = model.notes_total - len(start) - len(recent)
        if skipped > 0:
            self.write(Text(f"… {skipped} more events (all of them in events.jsonl)", style="dim"), scroll_end=False)
        for note in recent:
            self.write(note_line(note, width, model.time_origin()), scroll_end=follow)  # following: to the end once laid out
        if not follow:
            self.call_after_refresh(self.scroll_to, y=y, animate=False)

    def _pin(self, model: RunModel) -> None:
        """The latest error rides in the panel's title, so it stays in sight however many lines follow it."""
        error = model.last_error
        title = Text("events" + (" (clock)" if model.clock_times else ""))
        if error is not None:
            title.append(f"  {when(error.at, model.time_origin())} {ICONS.get(error.kind, '!')} {error.text}", style="bold red")
        self.border_title = title

    def on_resize(self) -> None:  # type: ignore[override]  # the event itself is not needed
        if self._model is not None:
            self.show(self._model)


def when(at: float | None, origin: float | None) -> str:
    """A note's time: since the run's start, or (`origin` given: the start's own time) as this machine's clock."""
    if origin is None or at is None:
        return duration(at)
    return time.strftime("%H:%M:%S", time.localtime(origin + at))


def note_line(note: Note, width: int = 0, origin: float | None = None) -> Text:
    text = Text(when(note.at, origin) + " ", style="dim", no_wrap=True)
    text.append(ICONS.get(note.kind, "·") + " ", style=LEVEL_STYLES.get(note.level, ""))
    text.append(note.text, style=LEVEL_STYLES.get(note.level, ""))
    if width > 0 and text.cell_len > width:  # cut where the panel ends, and say so
        text.truncate(width, overflow="ellipsis")
    return text
