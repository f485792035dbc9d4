"""The emitter: numbers every event and hands it to the sinks (event log, TensorBoard, console, telemetry).

One per run, on rank 0 (other ranks have no sinks and number nothing). The training thread and the
telemetry thread (`command` events) both emit, so numbering and delivery happen under one lock: every
sink sees the events in `seq` order, each once.
"""

from __future__ import annotations

import threading
from typing import Any

from scorch.callbacks import Callback
from scorch.telemetry.protocol import Event, Log


class Emitter:
    def __init__(self, callbacks: list[Callback] | None = None, seq: int = 0) -> None:
        self.callbacks: list[Callback] = list(callbacks or [])
        self.seq = seq  # the last number given; a resumed run goes on from its log's last
        self._lock = threading.RLock()  # re-entrant: a sink may log while handling an event

    def emit(self, event: Event, wait: float = -1) -> Event | None:
        """Number `event` and hand it to every sink; returns it numbered (None with no sinks or no lock).

        With `wait` >= 0 gives up after that many seconds (the watchdog and the telemetry thread, when the
        training thread may hold the lock)."""
        if not self._lock.acquire(timeout=wait):
            return None
        try:
            if not self.callbacks:
                return None
            self.seq += 1
            event = event.stamped(self.seq)
            for callback in self.callbacks:
                callback.event(event)
            return event
        finally:
            self._lock.release()

    def log(self, message: str, level: str = "warning") -> None:
        self.emit(Log(level=level, message=message))

    def processed(self, epoch: int, batch: int, result: Any) -> None:
        """What Socket.process returned for a test batch, to every sink (TensorBoard images and texts)."""
        for callback in self.callbacks:
            callback.processed(epoch, batch, result)

    def close(self, wait: float = -1) -> bool:
        """Flush and close every sink, once; False if another thread held the lock past `wait` seconds."""
        if not self._lock.acquire(timeout=wait):  # no emit from another thread may still be using them
            return False
        callbacks, self.callbacks = self.callbacks, []
        self._lock.release()
        for callback in callbacks:
            callback.close()
        return True
