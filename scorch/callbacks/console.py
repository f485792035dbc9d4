"""Console progress: a one-line bar on a TTY, plain lines (no carriage returns) otherwise."""

from __future__ import annotations

import os
import sys
import time
from typing import TextIO

from scorch.callbacks import Callback
from scorch.telemetry.protocol import CheckpointSaved, Command, EpochEnd, Event, Log, RunEnded, RunStarted, Step


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def _metrics(metrics: dict) -> str:
    return " ".join(f"{k}={v:.4g}" for k, v in metrics.items())


class ConsoleProgress(Callback):
    def __init__(self, headless: bool, interval: float = 5.0, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.bar = not headless
        self.interval = interval
        self._next_line = 0.0
        self._bar_shown = False
        self.epochs = 0
        self._batch = 1  # samples per step, all ranks

    def _line(self, text: str) -> None:
        if self._bar_shown:
            self.stream.write("\r\x1b[2K")
            self._bar_shown = False
        self.stream.write(text + "\n")
        self.stream.flush()

    def event(self, event: Event) -> None:
        try:
            self._show(event)
        except OSError:  # stdout is gone (mpirun killed, a closed pipe): the run goes on, logging elsewhere
            self.stream = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the run

    def _show(self, event: Event) -> None:
        if isinstance(event, Step):
            left = event.steps_in_epoch - event.epoch_step
            steps_per_s = event.rate / max(1, self._batch) if event.rate else 0.0
            eta_s = left / steps_per_s if steps_per_s else 0.0
            text = (
                f"epoch {event.epoch + 1}/{self.epochs} step {event.epoch_step}/{event.steps_in_epoch} "
                f"loss {event.loss:.4f} {event.rate:.0f} samples/s eta {_duration(eta_s)}"
            )
            if self.bar:
                width = 20
                filled = int(width * event.epoch_step / max(1, event.steps_in_epoch))
                self.stream.write(f"\r\x1b[2K[{'#' * filled}{'.' * (width - filled)}] {text}")
                self.stream.flush()
                self._bar_shown = True
            elif time.monotonic() >= self._next_line:
                self._next_line = time.monotonic() + self.interval
                self._line(text)
        elif isinstance(event, RunStarted):
            self.epochs = event.epochs
            self._batch = event.batch_size * event.world_size
            where = f"{event.world_size} ranks" if event.world_size > 1 else event.device
            resumed = f", resumed from {event.resumed_from}" if event.resumed_from else ""
            self._line(f"scorch: training {event.name} on {where}, epochs {event.start_epoch + 1}-{event.epochs}{resumed}; run folder {event.run_dir}")
        elif isinstance(event, EpochEnd):
            best = event.best
            best_text = f" (best {best['value']:.4g} at epoch {best['epoch'] + 1})" if best.get("value") is not None else ""
            train = f" train {_metrics(event.train_metrics)}" if event.train_metrics else ""
            self._line(
                f"epoch {event.epoch + 1}/{self.epochs} done in {_duration(event.duration)}: "
                f"train loss {event.train_loss:.4f}{train} valid {_metrics(event.metrics)}{best_text}"
            )
        elif isinstance(event, CheckpointSaved) and event.reason not in ("epoch", "keep", "best"):
            self._line(f"checkpoint saved ({event.reason}): {event.path}")
        elif isinstance(event, Log) and event.level != "debug":
            self._line(f"{event.level}: {event.message}")
        elif isinstance(event, Command):
            self._line(f"command {event.command} {event.status}{': ' + event.reason if event.reason else ''}")
        elif isinstance(event, RunEnded):
            self._line(f"run ended: {event.status}{' (' + event.reason + ')' if event.reason else ''}")

