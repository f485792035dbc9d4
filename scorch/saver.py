"""The saver: which checkpoints to write when, writing them, and what a failed write does.

An epoch-end checkpoint is written to its temporary file on the training thread (so the state cannot
change under it and a full disk stops the run at once); the durable half (fsync, rename, links and
their announcements) finishes on a background thread while the next epoch starts. The next save and
the end of the run wait for it (`settle`).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from scorch import checkpoint as ckpt
from scorch.errors import ScorchError
from scorch.telemetry.protocol import CheckpointSaved, Event

Names = list[tuple[str, str]]  # (file name, reason) pairs: the first is written, the others become links to it


class Saver:
    """Rank 0's checkpoints of one run folder (`folder` None: a rank that writes none)."""

    def __init__(self, folder: str | None, dump_period: int, keep: int, on_error: str,
                 emit: Callable[[Event], Any], log: Callable[[str, str], None]) -> None:
        self.folder = folder
        self.policy = ckpt.CheckpointPolicy(folder, dump_period, keep) if folder else None
        self.on_error = on_error  # --on-save-error: stop|continue
        self.emit, self.log = emit, log
        self._committer: ThreadPoolExecutor | None = None  # the thread that finishes background saves
        self._committing: Future | None = None  # the background save in progress

    def due(self, epoch: int, improved: bool, last: bool) -> Names:
        """The checkpoints to write after `epoch` (0-based)."""
        return self.policy.at_epoch_end(epoch, improved, last) if self.policy is not None else []

    def save(self, names: Names, state: Callable[[], dict], epoch: int, step: int, background: bool = False) -> None:
        """Write `state()` as the checkpoints `names`, atomically, and announce each."""
        if self.folder is None or not names:
            return
        self.settle()
        (name, reason), links = names[0], names[1:]
        path = os.path.join(self.folder, name)
        try:
            pending = ckpt.start_save(state(), path)
        except OSError as exc:
            self._failed(exc, path)
            self.save(links, state, epoch, step, background)  # each name tries on its own
            return
        finish = functools.partial(self._finish, pending, reason, links, epoch, step)
        if not background:
            finish()
            return
        if self._committer is None:
            self._committer = ThreadPoolExecutor(1, thread_name_prefix="scorch-checkpoint")
        self._committing = self._committer.submit(finish)

    def prune(self, epoch: int) -> None:
        """Remove kept epoch checkpoints older than the --keep most recent."""
        if self.policy is not None:
            self.policy.prune(epoch)

    def _finish(self, pending: ckpt.Pending, reason: str, links: Names, epoch: int, step: int) -> None:
        assert self.folder is not None  # save() returns early without one
        try:
            # last.pt's predecessor stays, as prev.pt: an older checkpoint that is its own file
            pending.commit(previous=os.path.join(self.folder, ckpt.PREV) if os.path.basename(pending.path) == ckpt.LAST else None)
        except OSError as exc:
            for path in [pending.path] + [os.path.join(self.folder, name) for name, _ in links]:
                self._failed(exc, path)
            return
        self.emit(CheckpointSaved(path=pending.path, reason=reason, epoch=epoch, step=step))
        for name, why in links:
            path = os.path.join(self.folder, name)
            try:
                ckpt.atomic_link(pending.path, path)
            except OSError as exc:
                self._failed(exc, path)
                continue
            self.emit(CheckpointSaved(path=path, reason=why, epoch=epoch, step=step))

    def _failed(self, exc: OSError, path: str) -> None:
        message = ckpt.describe_write_error(exc, path)
        if self.on_error == "stop":
            raise ScorchError(message + "; free space or fix the folder, then --resume the run (or pass --on-save-error "
                              "continue to train on without checkpoints)", exit_code=5) from None
        self.log(message + "; training goes on (--on-save-error continue)", "error")

    def settle(self, timeout: float | None = None) -> None:
        """Wait for a checkpoint finishing in the background; its failure is raised here."""
        committing, self._committing = self._committing, None
        if committing is not None:
            committing.result(timeout)

    def close(self) -> None:
        if self._committer is not None:
            self._committer.shutdown(wait=False)
