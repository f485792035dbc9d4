"""Real scorch-train processes for the fault drill: start, watch events.jsonl, signal, kill, inspect.

Waiting is by polling the run's files with generous deadlines, never by fixed
sleeps: the box these tests run on is small and shared.
"""

from __future__ import annotations

import glob
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from helpers.runs import EXAMPLES, read_events, scorch_env, wait_until  # noqa: F401 (wait_until: the fault tests take it from here)
from scorch import checkpoint as ckpt
from scorch import events_log

START_TIMEOUT = 180.0  # seconds for a process to import torch and log its first events on a loaded box


def child_env(**extra: str) -> dict:
    """scorch's environment for a child, with one intra-op thread: on a shared 2-core box torch's
    spinning thread pool makes a tiny model 50x slower, and timings would mean nothing."""
    env = scorch_env()
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)
    return env


def fault_seed() -> int:
    """The seed of this session's random instants: SCORCH_FAULT_SEED to replay a failure."""
    return int(os.environ.get("SCORCH_FAULT_SEED") or random.SystemRandom().randrange(10**6))


# A model for checkpoints that are slow or big on demand: two_inputs' Network, plus
# - `ballast_mb`: a buffer of that many MiB in every checkpoint (a bigger write), and
# - extra state whose pickling sleeps while the file named by $SCORCH_TEST_SLOW_SAVE exists,
#   so a test can hold a checkpoint write open (its temporary file exists) as long as it likes.
SLOW_MODEL = textwrap.dedent('''
    import os
    import sys
    import time

    import torch

    sys.path.insert(0, {examples!r})
    from two_inputs.model import Network as TwoInputs, Socket  # noqa: F401


    class HeldOpen:
        def __reduce__(self):
            flag = os.environ.get("SCORCH_TEST_SLOW_SAVE", "")
            deadline = time.monotonic() + 60
            while flag and os.path.exists(flag) and time.monotonic() < deadline:
                time.sleep(0.05)
            return (int, (0,))


    class Network(TwoInputs):
        def __init__(self, width=32, ballast_mb=0):
            super().__init__(width)
            self.register_buffer("ballast", torch.zeros(int(ballast_mb * 2**18)))

        def get_extra_state(self):
            return HeldOpen()

        def set_extra_state(self, state):
            pass
''')


def slow_model(folder: Path) -> Path:
    path = folder / "slow_model.py"
    path.write_text(SLOW_MODEL.format(examples=str(EXAMPLES)))
    return path


def run_args(run_dir: Path, *extra: str, size: int = 20000, model: Path | None = None) -> list[str]:
    """scorch-train arguments for the two-input example (seeded, no TensorBoard, no telemetry unless asked)."""
    folder = EXAMPLES / "two_inputs"
    args = ["--model", str(model or folder / "model.py"), "--dataset", str(folder / "dataset.py"),
            "--dataset-path", str(folder), "--dataset-args", json.dumps({"size": size}), "--run-dir", str(run_dir),
            "--headless", "--seed", "7", "--no-tensorboard"]
    if "--telemetry" not in extra:
        args.append("--no-telemetry")
    return args + [a for a in extra if a != "--telemetry"]


# Runs scorch-train with torch.save failing after $SCORCH_TEST_SAVE_OK saves: the first bytes
# are written, then OSError($SCORCH_TEST_SAVE_ERRNO), as a disk that fills up mid-file does.
FAILING_SAVE = textwrap.dedent('''
    import os
    import torch
    from scorch.cli import main

    real_save, saves = torch.save, [0]
    fail_errno, ok = int(os.environ["SCORCH_TEST_SAVE_ERRNO"]), int(os.environ.get("SCORCH_TEST_SAVE_OK", "1"))

    def save(obj, f, *args, **kwargs):
        saves[0] += 1
        if saves[0] > ok:
            f.write(b"PK\\x03\\x04 half a checkpoint")
            raise OSError(fail_errno, os.strerror(fail_errno))
        return real_save(obj, f, *args, **kwargs)

    torch.save = save
    main()
''')


class Job:
    """One scorch-train process (or `mpirun` of it) and its run folder; stops it on exit."""

    def __init__(self, run_dir: Path, args: list[str], env: dict | None = None, prefix: list[str] | None = None,
                 python_code: str | None = None, logs: Path | None = None) -> None:
        self.run_dir = run_dir
        if python_code is not None:
            cmd = [sys.executable, "-c", python_code, *args]
        else:
            cmd = [sys.executable, "-m", "scorch.cli", *args]
        self.cmd = [*(prefix or []), *cmd]
        self.env = env or child_env()
        self.proc: subprocess.Popen | None = None
        self.err_path = (logs or run_dir.parent) / f"{run_dir.name}.{time.monotonic_ns()}.stderr"
        self._err = None

    def start(self) -> Job:
        self._err = open(self.err_path, "wb")
        # Its own process group: a hung mpirun and its ranks go down together in `kill()`.
        self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=subprocess.DEVNULL, stderr=self._err,
                                     start_new_session=True)
        return self

    def __enter__(self) -> Job:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: Any) -> None:
        self.kill()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = START_TIMEOUT) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"scorch-train did not end within {timeout:.0f} s (a hang); stderr:\n{self.stderr()}") from None

    def kill(self) -> None:
        """SIGKILL the whole process group (if still there) and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        if self.proc is not None:
            try:  # ranks of an mpirun whose launcher died first
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self._err is not None:
            self._err.close()
            self._err = None

    def stderr(self) -> str:
        try:
            return self.err_path.read_text(errors="replace")
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- what the run has written ----------------------------------------------------------

    def events(self) -> list[dict]:
        return events_of(self.run_dir)

    def wait_for(self, check: Callable[[list[dict]], Any], what: str, timeout: float = START_TIMEOUT) -> Any:
        """Poll events.jsonl until `check(events)` is truthy; fails early if the process ends first."""
        deadline = time.monotonic() + timeout
        while True:
            value = check(self.events())
            if value:
                return value
            if not self.alive():
                value = check(self.events())
                if value:
                    return value
                raise AssertionError(f"scorch-train ended (exit {self.proc.returncode}) before {what}; stderr:\n{self.stderr()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; stderr:\n{self.stderr()}")
            time.sleep(0.02)

    def wait_step(self, step: int, timeout: float = START_TIMEOUT) -> dict:
        """The first `step` event at or past optimizer step `step`."""
        return self.wait_for(lambda evs: next((e for e in evs if e["type"] == "step" and e["step"] >= step), None),
                             f"step {step}", timeout)


def events_of(run_dir: Path) -> list[dict]:
    """Every whole line of the run's event log as a dict (a line being written is not one yet)."""
    return read_events(run_dir)


def of_type(events: list[dict], kind: str, **fields: Any) -> list[dict]:
    return [e for e in events if e["type"] == kind and all(e.get(k) == v for k, v in fields.items())]


def temp_files(run_dir: Path) -> list[str]:
    """Checkpoint writes in progress (or abandoned by a kill): atomic_save's temporary files."""
    return glob.glob(str(run_dir / "checkpoints" / ".*.tmp"))


def assert_run_folder_whole(run_dir: Path) -> dict[str, dict]:
    """Every checkpoint in the folder loads with torch.load and every line of the event log reads, but for
    a torn last line (events_log's reader counts any other); returns the loaded checkpoints by file name."""
    loaded = {}
    for path in sorted((run_dir / "checkpoints").glob("*.pt")):
        loaded[path.name] = ckpt.load(str(path))  # raises ScorchError on a torn or foreign file
    reader = events_log.Reader(events_log.path(str(run_dir)))
    reader.events()
    assert reader.skipped == reader.refused == 0, reader.warning()
    return loaded


def same_weights(a: dict, b: dict) -> bool:
    import torch

    sa, sb = a["model_state"], b["model_state"]
    return sa.keys() == sb.keys() and all(
        not isinstance(sa[k], torch.Tensor) and sa[k] == sb[k] or isinstance(sa[k], torch.Tensor) and torch.equal(sa[k], sb[k])
        for k in sa)
