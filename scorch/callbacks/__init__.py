"""Handlers that hang off the trainer's events: they never appear inside the loop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from scorch.errors import ScorchError
from scorch.telemetry.protocol import Event


class Callback:
    """A handler. `event` receives every protocol event the run emits (already
    numbered); `processed` receives what Socket.process returned for a test batch."""

    def event(self, event: Event) -> None:
        pass

    def processed(self, epoch: int, batch: int, result: Any) -> None:
        pass

    def close(self) -> None:
        pass


class Guarded(Callback):
    """An optional sink (TensorBoard): when it fails, the run goes on without it.

    The failure is told once, through `report` (an error `log` event, so it reaches events.jsonl, the
    console and the dashboard); the sink gets nothing more but is still closed at the end, so what it
    wrote before is kept. A ScorchError is a broken contract (Socket.process returned a list) and still
    ends the run. events.jsonl itself is not guarded: it is the record, and a full disk under it stops.
    """

    def __init__(self, sink: Callback, name: str, report: Callable[[str], None] = print) -> None:
        self.sink, self.name, self.report = sink, name, report
        self.failed = False

    def event(self, event: Event) -> None:
        self._call(self.sink.event, event)

    def processed(self, epoch: int, batch: int, result: Any) -> None:
        self._call(self.sink.processed, epoch, batch, result)

    def close(self) -> None:
        failed, self.failed = self.failed, False
        self._call(self.sink.close, quiet=failed)

    def _call(self, fn: Callable[..., None], *args: Any, quiet: bool = False) -> None:
        if self.failed:
            return
        try:
            fn(*args)
        except ScorchError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure of an optional sink: told once, then it is off
            self.failed = True
            if not quiet:
                self.report(f"{self.name} failed ({type(exc).__name__}: {exc}); it gets nothing more from this run, "
                            "training goes on")
