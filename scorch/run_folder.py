"""RunFolder: everything about one run in one folder.

    run.json        what the run is and its state (rewritten atomically)
    .token          the control secret (mode 0600), never in run.json
    the event log   every event, one JSON object a line (scorch/events_log.py owns it)
    tensorboard/    tensorboardX files
    checkpoints/    last.pt, best.pt, epoch-K.pt
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any

from scorch import events_log
from scorch.errors import ScorchError
from scorch.fileio import atomic_write_text


def default_name(model_path: str) -> str:
    stem = os.path.splitext(os.path.basename(model_path))[0] or "run"
    return time.strftime("%Y%m%d-%H%M%S") + "-" + stem


class RunFolder:
    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self.info_path = os.path.join(self.path, "run.json")
        self.events_path = events_log.path(self.path)
        self.token_path = os.path.join(self.path, ".token")
        self.tensorboard = os.path.join(self.path, "tensorboard")
        self.checkpoints = os.path.join(self.path, "checkpoints")
        self.info: dict[str, Any] = {}

    def create(self, reuse: bool, restart: bool = False) -> None:
        """Make the folder; an existing run is refused unless we are resuming it, or restarting one that
        ended before its first checkpoint (`restart`)."""
        if not reuse:
            self.check_new(restart)
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

    def has_checkpoint(self) -> bool:
        return os.path.isdir(self.checkpoints) and any(name.endswith(".pt") for name in os.listdir(self.checkpoints))

    def check_new(self, restart: bool) -> None:
        """A new run may start here: nothing is here yet, or (with `restart`) a run that ended before its first
        checkpoint, whose event log is then continued. A run with checkpoints is never started over."""
        if not os.path.exists(self.events_path):
            return
        if self.has_checkpoint():
            raise ScorchError(f"--run-dir {self.path} already holds a run; continue it with --resume {self.path} "
                              "or choose another --run-dir")
        if not restart:
            raise ScorchError(f"--run-dir {self.path} holds a run that ended before its first checkpoint (nothing to "
                              "resume); start it again there by adding --restart to this command (its event log is "
                              "kept), or choose another --run-dir")

    def write_info(self, **fields: Any) -> None:
        self.info.update(fields)
        atomic_write_text(self.info_path, json.dumps(self.info, indent=2, default=str) + "\n")


# -- is the run's process still there? (no torch: the dashboard, the picker and scorch-ctl ask this) --------------


def on_this_host(info: dict) -> bool:
    """Whether run.json's first host (global rank 0's, the process that holds the folder) is this machine."""
    hosts = info.get("hosts") or []
    if not hosts:
        return True  # written before the hosts were known: the folder is here, so is its writer
    names = {socket.gethostname(), socket.gethostname().split(".")[0], os.uname().nodename}
    return str(hosts[0]) in names


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs here (someone else's counts: kill(0) says EPERM; a zombie does not:
    a killed job whose parent has not reaped it yet is dead all the same)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rpartition(b")")[2].split()[:1] != [b"Z"]
    except OSError:
        return True  # no /proc (macOS): kill(0) is all we know


def why_dead(info: dict) -> str:
    """Why the run described by `info` (its run.json) cannot be running any more, or "" if it may be.

    "" also when the holder cannot be checked from here (another host: only the
    heartbeat tells), or when run.json already says the run ended. The one place
    that decides "dead" for every reader, so the picker, a fresh open and the live
    view agree; the run-folder lock/lease adds its own reasons here.
    """
    if info.get("state", "running") != "running" or not on_this_host(info):
        return ""
    pid = info.get("pid")
    if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0 and not pid_alive(pid):
        return f"process {pid} is gone (killed or crashed)"
    return ""
