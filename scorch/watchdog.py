"""The stall watchdog: a rank that makes no progress for --stall-timeout seconds ends the job.

Without it a rank stuck in user code (a hung file system, a dead lock) leaves every
other rank waiting in a collective forever. The training thread only stores a
timestamp per step (`LoopState.beat`); this thread does the checking.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scorch.trainer import LoopState

EXIT_STALLED = 6

STUCK_RANK_GRACE = 3.0  # seconds a rank waiting in a collective stays, after its report, for the stuck rank's report


def where(thread: threading.Thread, depth: int = 8) -> str:
    """The innermost frames of `thread`'s stack, formatted like a traceback."""
    frame = sys._current_frames().get(thread.ident or 0)
    if frame is None:
        return "  (stack unavailable)\n"
    return "".join(traceback.format_stack(frame)[-depth:])


COLLECTIVE_MARKS = ("horovod", "torch/distributed", "mpi")  # in a stack: the rank waits for the others
WAITING_AFTER = 2.0  # seconds without progress before the heartbeat looks at the stack (never on a steady run)


def in_collective(stack: str) -> bool:
    return any(name in stack for name in COLLECTIVE_MARKS)


def activity(state: LoopState, ranks: int, thread: threading.Thread) -> tuple[float, str]:
    """(seconds since the last sign of progress, what the training thread is doing), for the PUB heartbeat.

    Progress is a training step or an evaluation batch (`LoopState.beat`). The
    phase is one word a reader can show: starting, training, validating, testing,
    checkpointing, or "waiting for other ranks" when progress is overdue and the
    stack is in a collective. Runs on the publisher thread once a second; the
    stack is read only when progress is overdue, so a steady loop pays nothing.
    """
    age = max(0.0, time.perf_counter() - state.beat)
    phase = str(state.phase)
    word = ("checkpointing" if phase.startswith("saving") else "validating" if phase.startswith("validating")
            else "testing" if "test" in phase else phase)
    if age > WAITING_AFTER and ranks > 1 and in_collective(where(thread)):
        word = "waiting for other ranks"
    return age, word


class StallWatchdog:
    """Watches `state` (the loop's beat, phase, epoch and step) of rank `rank`; on a stall, reports where
    the training thread is, calls `on_stall(reason)` (end the run, close its sinks) and exits the process."""

    def __init__(self, state: LoopState, rank: int, timeout: float, on_stall: Callable[[str], None]) -> None:
        self.state, self.rank, self.timeout, self.on_stall = state, rank, timeout, on_stall
        self.watched = threading.current_thread()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="scorch-watchdog", daemon=True)

    def start(self) -> None:
        self.state.beat = time.perf_counter()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join()

    def _watch(self) -> None:
        while not self._stop.wait(min(1.0, self.timeout / 4)):
            idle = time.perf_counter() - self.state.beat
            if idle > self.timeout:
                self._stalled(idle)

    def _stalled(self, idle: float) -> None:
        state = self.state
        stack = where(self.watched)
        waiting = in_collective(stack)
        what = "waiting for another rank in a collective" if waiting else f"stuck while {state.phase}"
        reason = (f"rank {self.rank} made no progress for {idle:.0f} s (--stall-timeout {self.timeout:g}) "
                  f"at epoch {state.epoch + 1}, step {state.epoch_step}: {what}")
        sys.stderr.write(f"scorch-train: error: {reason}; it is here:\n{stack}")
        sys.stderr.flush()
        try:
            self.on_stall(reason)
            if waiting:  # the rank really stuck fires at about the same time: let it name itself before mpirun ends the job
                time.sleep(STUCK_RANK_GRACE)
        finally:
            os._exit(EXIT_STALLED)
