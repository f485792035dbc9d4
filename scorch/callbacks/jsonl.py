"""events.jsonl: every event, one JSON object a line, the same objects as on the wire."""

from __future__ import annotations

import errno
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
        if self._fd < 0:
            return  # a write failed: the log ended there (the error says so)
        line = (event.to_json() + "\n").encode()
        try:
            written = os.write(self._fd, line)
        except OSError as exc:
            self._give_up(exc.errno, 0)
        if written < len(line):  # a disk that filled up mid-line
            self._give_up(errno.ENOSPC, written)

    def _give_up(self, code: int, written: int) -> None:
        """Take back a partial line (the log stays whole lines), stop logging, raise an OSError naming the file."""
        try:
            if written:
                os.ftruncate(self._fd, os.fstat(self._fd).st_size - written)
        finally:
            os.close(self._fd)
            self._fd = -1
        raise OSError(code, os.strerror(code), self.path)

    def close(self) -> None:
        if self._fd >= 0:
            try:
                os.fsync(self._fd)
            except OSError:
                pass  # every line was written; a failing flush to disk is reported by the OS, not fixable here
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
