"""Checkpoint storage (atomic writes, loading, resume lookup) and policy (last/best/keep-N).

A checkpoint is a plain dict loadable with `torch.load(path, weights_only=False)`:
the 2018 keys `epoch`, `model_state`, `optimizer_state`, `metrics`, plus what an
exact resume needs (see `Trainer.state_dict`).
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable
from typing import Any, BinaryIO

from scorch.errors import ScorchError

LAST = "last.pt"
BEST = "best.pt"
MODE = 0o644  # like run.json and the event log (a temporary file would be 0600): the run's secret is .token


class Pending:
    """A checkpoint for `path` written through `write(file)` into a temporary file beside it, flushed but
    not yet durable nor in place: the first half of `atomic_write`. `commit()` is the second half (fsync,
    rename over `path`, fsync the folder), so it can run off the training thread; a crash before it, or a
    failure anywhere, leaves the old `path` as it was and no temporary file behind a live process."""

    def __init__(self, path: str, write: Callable[[BinaryIO], Any], mode: int | None = None) -> None:
        self.path = path
        self.folder = os.path.dirname(os.path.abspath(path))
        fd, self.tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=self.folder)
        self.file: BinaryIO | None = None
        try:
            if mode is not None:
                os.fchmod(fd, mode)
            self.file = os.fdopen(fd, "wb")
            write(self.file)
            self.file.flush()
        except BaseException:
            if self.file is None:
                os.close(fd)
            self.discard()
            raise

    def commit(self) -> None:
        assert self.file is not None  # set by __init__, which raises otherwise
        try:
            with self.file:
                os.fsync(self.file.fileno())
            os.replace(self.tmp, self.path)
        except BaseException:
            self.discard()
            raise
        _fsync_folder(self.folder)

    def discard(self) -> None:
        try:
            if self.file is not None:
                self.file.close()
        except OSError:
            pass  # the flush of a full disk: the file goes anyway
        try:
            os.unlink(self.tmp)
        except OSError:
            pass


def atomic_write(path: str, write: Callable[[BinaryIO], Any], mode: int | None = None) -> None:
    """Write `path` through `write(file)` so that a crash at any instant leaves the old file or the new one.

    Temporary file in the same folder, flush, fsync, os.replace, fsync the folder.
    """
    Pending(path, write, mode).commit()


def _fsync_folder(folder: str) -> None:
    """Make the renames in `folder` durable."""
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_link(source: str, path: str) -> None:
    """Make `path` a second name of the checkpoint `source` just written, as atomically as `atomic_write`.

    A hard link costs no time and no disk space; where the file system has none, a copy. Both names
    stay the same checkpoint: `atomic_write` never changes a file in place, it replaces the name.
    """
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.urandom(6).hex()}.tmp")
    try:
        os.link(source, tmp)
    except OSError:
        with open(source, "rb") as src:
            atomic_write(path, lambda fh: shutil.copyfileobj(src, fh), MODE)
        return
    try:
        os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):  # rename does nothing when both names are already the one file
            os.unlink(tmp)
    _fsync_folder(folder)


def atomic_save(obj: Any, path: str) -> None:
    """`torch.save` through `atomic_write`: a crash never leaves a torn checkpoint."""
    start_save(obj, path).commit()


def start_save(obj: Any, path: str) -> Pending:
    """`torch.save(obj)` into a Pending checkpoint for `path`; `commit()` it to finish `atomic_save`."""
    import torch

    try:
        return Pending(path, lambda fh: torch.save(obj, fh), MODE)
    except RuntimeError as exc:
        cause = _os_error(exc)
        if cause is not None:
            raise cause from None  # torch's zip writer turns a full disk into RuntimeError("unexpected pos ...")
        raise


def _os_error(exc: BaseException | None) -> OSError | None:
    """The OSError that `exc` was raised from or while handling, if any."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def load(path: str, map_location: str = "cpu") -> dict:
    """Load a checkpoint dict, with a clear error for a missing or unreadable file."""
    import torch

    if not os.path.isfile(path):
        raise ScorchError(f"checkpoint {path}: no such file")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:
        raise ScorchError(f"checkpoint {path} could not be read ({type(exc).__name__}: {exc}); is it a scorch/torch checkpoint?") from None
    if not isinstance(state, dict) or "model_state" not in state:
        raise ScorchError(f"checkpoint {path} is not a scorch checkpoint (no 'model_state' key)")
    return state


def resolve_resume(target: str) -> str:
    """The checkpoint file that --resume names: a file, or a run folder's checkpoints/last.pt."""
    if os.path.isdir(target):
        path = os.path.join(target, "checkpoints", LAST)
        if not os.path.isfile(path):
            raise ScorchError(f"--resume {target}: {_never_saved(target)}", everywhere=True)
        return path
    if not os.path.isfile(target):
        raise ScorchError(f"--resume {target}: no such run folder or checkpoint file")
    return target


def _never_saved(folder: str) -> str:
    """Why a run folder without checkpoints/last.pt has nothing to resume, and the command that starts it again."""
    import json

    from scorch.config import TrainConfig

    how = "start it again there with the command that started it plus --restart"
    try:
        with open(os.path.join(folder, "run.json")) as fh:
            saved = json.load(fh)["config"]
        how = "start it again there with: " + TrainConfig.from_dict(saved).command(run_dir=folder, restart=True)
    except (OSError, ValueError, KeyError, TypeError, ScorchError):
        pass  # no run.json, or not one of ours: the general advice
    return f"no checkpoints/{LAST} in that run folder: the run ended before its first checkpoint, so there is nothing to resume; {how}"


def describe_write_error(exc: OSError, path: str) -> str:
    reasons = {errno.ENOSPC: "the disk is full", errno.EACCES: "permission denied", errno.EROFS: "read-only file system"}
    why = reasons.get(exc.errno or 0, exc.strerror or str(exc))
    return f"could not write checkpoint {path}: {why}; the previous checkpoint is intact"


class CheckpointPolicy:
    """Which checkpoints to write when: last.pt every `dump_period` epochs, best.pt on
    improvement of the monitored metric, epoch-K.pt for the `keep` most recent epochs."""

    def __init__(self, folder: str, dump_period: int, keep: int) -> None:
        self.folder = folder
        self.dump_period = max(1, dump_period)
        self.keep = keep

    def path(self, name: str) -> str:
        return os.path.join(self.folder, name)

    def at_epoch_end(self, epoch: int, improved: bool, last_epoch: bool) -> list[tuple[str, str]]:
        """(file name, reason) pairs to write after `epoch` (0-based)."""
        todo = []
        if (epoch + 1) % self.dump_period == 0 or last_epoch:
            todo.append((LAST, "epoch"))
        if improved:
            todo.append((BEST, "best"))
        if self.keep > 0:
            todo.append((f"epoch-{epoch + 1}.pt", "keep"))
        return todo

    def prune(self, epoch: int) -> None:
        """Remove kept epoch checkpoints older than the `keep` most recent."""
        if self.keep <= 0:
            return
        old = epoch + 1 - self.keep
        for name in os.listdir(self.folder):
            if name.startswith("epoch-") and name.endswith(".pt"):
                try:
                    n = int(name[6:-3])
                except ValueError:
                    continue
                if n <= old:
                    os.unlink(os.path.join(self.folder, name))
