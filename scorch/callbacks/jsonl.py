"""events.jsonl: every event, one JSON object a line, the same objects as on the wire."""

from __future__ import annotations

import os

from scorch.callbacks import Callback
from scorch.telemetry.protocol import Event


class JsonlLog(Callback):
    def __init__(self, path: str) -> None:
        self.path = path
        # Unbuffered append: each event is one write() of one whole line, so a
        # crash can tear at most the last line, which readers skip.
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        _drop_torn_tail(self._fd)

    def event(self, event: Event) -> None:
        os.write(self._fd, (event.to_json() + "\n").encode())

    def close(self) -> None:
        if self._fd >= 0:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1


def _drop_torn_tail(fd: int) -> None:
    """A run killed mid-write may have left a partial last line: cut it before appending."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    keep = size
    while keep > 0:
        chunk = os.pread(fd, min(65536, keep), max(0, keep - 65536))
        cut = chunk.rfind(b"\n")
        if cut >= 0:
            keep = keep - len(chunk) + cut + 1
            break
        keep -= len(chunk)
    os.ftruncate(fd, keep)
