"""A publisher driven directly: synthetic events numbered and logged the way the trainer does it."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from helpers.runs import read_events
from scorch import events_log
from scorch.emitter import Emitter
from scorch.run_folder import RunFolder
from scorch.telemetry.client import RunClient
from scorch.telemetry.control import Control
from scorch.telemetry.protocol import Event, RunStarted, Step
from scorch.telemetry.publisher import History, Publisher


class FakeRun:
    """The parts of a trainer the telemetry needs, with no training behind them: a run folder, its event log
    and a real Publisher, numbered by the trainer's own Emitter (thread-safe). A folder that already holds
    a run is a resumed one: its log is read once by the writer, for the numbering and the late joiner's
    history, as the trainer does. `publisher_args` go to Publisher (bind, curve_keys, queue_size, progress)."""

    def __init__(self, path: Path, resume: bool = True, **publisher_args: Any) -> None:
        self.folder = RunFolder(str(path))
        self.folder.create(reuse=resume)
        self.folder.write_info(name=path.name, state="running", pid=os.getpid(), hosts=[os.uname().nodename])
        self.control = Control()
        history = History()
        log = events_log.Writer(self.folder.events_path, visit=history.add_line)
        self.emitter = Emitter([log], seq=log.last_seq)  # a resumed run numbers on
        try:
            self.publisher = Publisher(self.folder, self.control, self.emit, history=history, **publisher_args)
        except BaseException:
            self.emitter.close()
            self.folder.release()  # a refused start frees the folder, as the trainer's does
            raise
        self.emitter.callbacks.append(self.publisher)

    @property
    def seq(self) -> int:
        return self.emitter.seq

    def emit(self, event: Event) -> Event:
        return self.emitter.emit(event)

    def start(self, epochs: int = 3, steps: int = 100) -> None:
        self.emit(RunStarted(name=self.folder.path, epochs=epochs, steps_per_epoch=steps))

    def steps(self, count: int, start: int = 0) -> None:
        for i in range(start, start + count):
            self.emit(Step(step=i + 1, epoch_step=i + 1, steps_in_epoch=count, loss=1.0 / (i + 1), rate=100.0))

    def client(self, **kwargs: Any) -> RunClient:
        return RunClient.from_run_dir(self.folder.path, **kwargs)

    def logged(self) -> list[dict]:
        return read_events(Path(self.folder.path))

    def wait_published(self, seq: int, timeout: float = 5.0) -> None:
        """Until the publisher thread has handled event `seq` (its snapshot covers it)."""
        deadline = time.monotonic() + timeout
        while self.publisher.history.last_seq < seq:
            assert time.monotonic() < deadline, f"publisher stuck at seq {self.publisher.history.last_seq} < {seq}"
            time.sleep(0.01)

    def close(self) -> None:
        self.emitter.close()
        self.folder.release()  # the run folder's lock and lease


def as_dicts(events: list[Event]) -> list[dict]:
    """Events as JSON-roundtripped dicts, comparable with events.jsonl lines."""
    return [json.loads(e.to_json()) for e in events]
