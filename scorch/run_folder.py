"""RunFolder: everything about one run in one folder.

    run.json        what the run is and its state (rewritten atomically)
    .token          the control secret (mode 0600), never in run.json
    events.jsonl    every event, one JSON object a line
    tensorboard/    tensorboardX files
    checkpoints/    last.pt, best.pt, epoch-K.pt
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from scorch.checkpoint import atomic_write
from scorch.errors import ScorchError
from scorch.telemetry.protocol import ProtocolError, loads


def default_name(model_path: str) -> str:
    stem = os.path.splitext(os.path.basename(model_path))[0] or "run"
    return time.strftime("%Y%m%d-%H%M%S") + "-" + stem


def atomic_write_text(path: str, text: str, mode: int = 0o644) -> None:
    atomic_write(path, lambda fh: fh.write(text.encode()), mode)


class RunFolder:
    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self.info_path = os.path.join(self.path, "run.json")
        self.events_path = os.path.join(self.path, "events.jsonl")
        self.token_path = os.path.join(self.path, ".token")
        self.tensorboard = os.path.join(self.path, "tensorboard")
        self.checkpoints = os.path.join(self.path, "checkpoints")
        self.info: dict[str, Any] = {}

    def create(self, reuse: bool) -> None:
        """Make the folder; an existing run is refused unless we are resuming it."""
        if os.path.exists(self.events_path) and not reuse:
            raise ScorchError(
                f"--run-dir {self.path} already holds a run; continue it with --resume {self.path} "
                "or choose another --run-dir"
            )
        try:
            for folder in (self.path, self.tensorboard, self.checkpoints):
                os.makedirs(folder, exist_ok=True)
        except OSError as exc:
            raise ScorchError(f"--run-dir {self.path}: cannot create it ({exc.strerror}); choose a writable folder") from None
        for name in os.listdir(self.checkpoints):  # a checkpoint write cut short by kill -9 leaves its temporary file
            if name.startswith(".") and name.endswith(".tmp"):
                os.unlink(os.path.join(self.checkpoints, name))
        if reuse and os.path.exists(self.info_path):
            with open(self.info_path) as fh:
                self.info = json.load(fh)

    def last_seq(self) -> int:
        """The highest event seq already in events.jsonl (0 if none), for appending on resume."""
        if not os.path.exists(self.events_path):
            return 0
        last = 0
        with open(self.events_path, "rb") as fh:
            for line in fh:
                try:
                    data = loads(line)
                except ProtocolError:
                    continue  # a torn last line from a crash
                if isinstance(data, dict) and isinstance(data.get("seq"), int):
                    last = max(last, data["seq"])
        return last

    def write_info(self, **fields: Any) -> None:
        self.info.update(fields)
        atomic_write_text(self.info_path, json.dumps(self.info, indent=2, default=str) + "\n")
