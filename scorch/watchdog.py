"""The stall watchdog: a rank that makes no progress for --stall-timeout seconds ends the job.

Without it a rank stuck in user code (a hung file system, a dead lock) leaves every
other rank waiting in a collective forever. The training thread only stores a
timestamp per step (`Trainer.heartbeat`); this thread does the checking.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
from typing import Any

EXIT_STALLED = 6
STUCK_RANK_GRACE = 3.0  # seconds a rank waiting in a collective stays, after its report, for the stuck rank's report


def where(thread: threading.Thread, depth: int = 8) -> str:
    """The innermost frames of `thread`'s stack, formatted like a traceback."""
    frame = sys._current_frames().get(thread.ident)
    if frame is None:
        return "  (stack unavailable)\n"
    return "".join(traceback.format_stack(frame)[-depth:])


COLLECTIVE_MARKS = ("horovod", "torch/distributed", "mpi")  # in a stack: the rank waits for the others
WAITING_AFTER = 2.0  # seconds without progress before the heartbeat looks at the stack (never on a steady run)


def in_collective(stack: str) -> bool:
    return any(name in stack for name in COLLECTIVE_MARKS)


def activity(trainer: Any, thread: threading.Thread) -> tuple[float, str]:
    """(seconds since the last sign of progress, what the training thread is doing), for the PUB heartbeat.

    Progress is a training step or an evaluation batch (`Trainer.heartbeat`). The
    phase is one word a reader can show: starting, training, validating, testing,
    checkpointing, or "waiting for other ranks" when progress is overdue and the
    stack is in a collective. Runs on the publisher thread once a second; the
    stack is read only when progress is overdue, so a steady loop pays nothing.
    """
    age = max(0.0, time.perf_counter() - trainer.heartbeat)
    phase = str(trainer.phase)
    word = ("checkpointing" if phase.startswith("saving") else "validating" if phase.startswith("validating")
            else "testing" if "test" in phase else phase)
    if age > WAITING_AFTER and getattr(trainer.dist, "size", 1) > 1 and in_collective(where(thread)):
        word = "waiting for other ranks"
    return age, word


class StallWatchdog:
    def __init__(self, trainer: Any, timeout: float) -> None:
        self.trainer = trainer
        self.timeout = timeout
        self.watched = threading.current_thread()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="scorch-watchdog", daemon=True)

    def start(self) -> None:
        self.trainer.heartbeat = time.perf_counter()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join()

    def _watch(self) -> None:
        while not self._stop.wait(min(1.0, self.timeout / 4)):
            idle = time.perf_counter() - self.trainer.heartbeat
            if idle > self.timeout:
                self._stalled(idle)

    def _stalled(self, idle: float) -> None:
        t = self.trainer
        stack = where(self.watched)
        waiting = in_collective(stack)
        what = "waiting for another rank in a collective" if waiting else f"stuck while {t.phase}"
        reason = (f"rank {t.dist.rank} made no progress for {idle:.0f} s (--stall-timeout {self.timeout:g}) "
                  f"at epoch {t.epoch + 1}, step {t.epoch_step}: {what}")
        sys.stderr.write(f"scorch-train: error: {reason}; it is here:\n{stack}")
        sys.stderr.flush()
        try:
            t.end("failed", reason, wait=5.0)
            t.close(wait=5.0)
            if waiting:  # the rank really stuck fires at about the same time: let it name itself before mpirun ends the job
                time.sleep(STUCK_RANK_GRACE)
        finally:
            os._exit(EXIT_STALLED)
