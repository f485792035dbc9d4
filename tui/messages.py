"""Messages the reader thread posts to the screen (toolong's messages.py)."""

from __future__ import annotations

from scorch_tui.sources import Item
from textual.message import Message


class SourceBatch(Message):
    """Items the source produced since the last batch, in order."""

    def __init__(self, items: list[Item]) -> None:
        super().__init__()
        self.items = items
