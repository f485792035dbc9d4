"""Checkpoints: saving (through scorch/fileio.py's atomic writes), loading, resume lookup, policy (last/best/keep-N).

A checkpoint is a plain dict loadable with `torch.load(path, weights_only=False)`:
the 2018 keys `epoch`, `model_state`, `optimizer_state`, `metrics`, plus what an
exact resume needs (see `Trainer.state_dict`).
"""

from __future__ import annotations

import os
from typing import Any

from scorch.errors import ScorchError
from scorch.fileio import Pending, _digest_fd, atomic_link, atomic_write, digest_path, read_digests, write_error  # noqa: F401 (Pending, atomic_link, atomic_write: their old home)

LAST = "last.pt"
PREV = "prev.pt"  # the last.pt before the newest: its own file, so one damaged inode never takes every copy
BEST = "best.pt"
MODE = 0o644  # like run.json and the event log (a temporary file would be 0600): the run's secret is .token


def atomic_save(obj: Any, path: str) -> None:
    """`torch.save` through `atomic_write`: a crash never leaves a torn checkpoint."""
    start_save(obj, path).commit()


def start_save(obj: Any, path: str) -> Pending:
    """`torch.save(obj)` into a Pending checkpoint for `path`; `commit()` it to finish `atomic_save`."""
    import torch

    try:
        return Pending(path, lambda fh: torch.save(obj, fh), MODE, digest=True)
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
    verify(path)
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


def remove(path: str) -> None:
    """Delete a checkpoint and its digest."""
    for name in (path, digest_path(path)):
        try:
            os.unlink(name)
        except FileNotFoundError:
            pass


def verify(path: str) -> None:
    """Refuse (ScorchError, naming the file) a checkpoint whose bytes are not the ones written."""
    digests = read_digests(path)
    if digests:
        with open(path, "rb") as fh:
            actual = _digest_fd(fh.fileno())
        if actual not in digests:
            raise ScorchError(f"checkpoint {path} is damaged: its sha256 is not the one recorded in "
                              f"{os.path.basename(digest_path(path))} when it was written (a disk, copy or memory "
                              "fault changed it); it is refused")
        return
    import zipfile

    if not zipfile.is_zipfile(path):
        return  # a legacy (pre-zip) torch file: torch.load is all the check there is
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        bad = f"its zip structure ({exc})"
    if bad is not None:
        raise ScorchError(f"checkpoint {path} is damaged: the CRC of {bad} does not match (it has no "
                          f"{os.path.basename(digest_path(path))} to check against); it is refused")


def resume_candidates(folder: str) -> list[str]:
    """A run folder's checkpoints, newest first: the order --resume tries them in."""
    names = [LAST, PREV]
    kept = []
    for name in os.listdir(folder) if os.path.isdir(folder) else []:
        if name.startswith("epoch-") and name.endswith(".pt") and name[6:-3].isdigit():
            kept.append((int(name[6:-3]), name))
    names += [name for _, name in sorted(kept, reverse=True)] + [BEST]
    paths = [os.path.join(folder, name) for name in names if os.path.isfile(os.path.join(folder, name))]
    order = {path: i for i, path in enumerate(paths)}
    return sorted(paths, key=lambda p: (-os.stat(p).st_mtime_ns, order[p]))  # a mid-epoch last.pt is newest


def folder_state(folder: str) -> list[tuple[str, int, int, int]]:
    """What --resume chose among in `folder`: each candidate's name, inode, size and mtime, to tell later
    (once the run folder is ours) whether another process wrote a checkpoint there in between."""
    out = []
    for path in resume_candidates(folder):
        try:
            st = os.stat(path)
        except FileNotFoundError:
            continue
        out.append((os.path.basename(path), st.st_ino, st.st_size, st.st_mtime_ns))
    return out


def load_for_resume(target: str) -> tuple[str, dict, list[tuple[str, str]]]:
    """What --resume names: (path, checkpoint, skipped). A run folder's newest intact checkpoint, with the
    (path, why) of each newer one that was damaged or unreadable; a file named outright, or nothing."""
    if not os.path.isdir(target):
        if not os.path.isfile(target):
            raise ScorchError(f"--resume {target}: no such run folder or checkpoint file")
        return target, load(target), []
    candidates = resume_candidates(os.path.join(target, "checkpoints"))
    if not candidates:
        raise ScorchError(f"--resume {target}: {_never_saved(target)}", everywhere=True)
    skipped: list[tuple[str, str]] = []
    for path in candidates:
        try:
            return path, load(path), skipped
        except ScorchError as exc:
            skipped.append((path, exc.message))
    raise ScorchError(f"--resume {target}: no intact checkpoint to resume from: "
                      + "; ".join(why for _, why in skipped))


def describe_write_error(exc: OSError, path: str) -> str:
    return f"could not write checkpoint {path}: {write_error(exc)}; the previous checkpoint is intact"


class CheckpointPolicy:
    """Which checkpoints to write when: last.pt every `dump_period` epochs, best.pt on
    improvement of the monitored metric, epoch-K.pt for the `keep` most recent epochs."""

    def __init__(self, folder: str, dump_period: int, keep: int) -> None:
        self.folder = folder
        self.dump_period = max(1, dump_period)
        self.keep = keep

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
                    remove(os.path.join(self.folder, name))
