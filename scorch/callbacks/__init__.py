"""Handlers that hang off the trainer's events: they never appear inside the loop."""

from __future__ import annotations

from typing import Any

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
