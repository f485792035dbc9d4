"""Control requests (checkpoint, stop) from the dashboard, scorch-ctl and signals.

Any thread (the publisher's, a signal handler) calls `request`; the training
thread checks the plain attribute `pending` at each step boundary, which costs
nothing, and takes the queued requests only when there are some.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class Request:
    command: str  # "checkpoint" | "stop"
    id: str = ""
    after_epoch: bool = False
    source: str = "request"  # "request" (dashboard, scorch-ctl) | "signal" (preemption) | "interrupt" (Ctrl-C)


class Control:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: deque[Request] = deque()
        self.pending = False

    def request(self, command: str, id: str = "", after_epoch: bool = False, source: str = "request") -> None:
        with self._lock:
            self._queue.append(Request(command, id, after_epoch, source))
            self.pending = True

    def take(self) -> list[Request]:
        """Every queued request, oldest first; clears `pending`."""
        with self._lock:
            requests = list(self._queue)
            self._queue.clear()
            self.pending = False
        return requests
