"""Writing files so that a crash at any instant leaves the old file or the new one, and why a write failed.

No torch here: run.json, .token and checkpoints are all written through `atomic_write`.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable
from typing import Any, BinaryIO

# Why a write failed, in the words a user acts on; the one table for checkpoints, run.json and the event log.
WRITE_ERRORS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
                errno.EROFS: "read-only file system", errno.EACCES: "permission denied"}


def write_error(exc: OSError) -> str:
    """Why `exc` stopped a write, in words (the OS's own for anything not in WRITE_ERRORS)."""
    return WRITE_ERRORS.get(exc.errno or 0, exc.strerror or str(exc))


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
        fsync_folder(self.folder)

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


def fsync_folder(folder: str) -> None:
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
            atomic_write(path, lambda fh: shutil.copyfileobj(src, fh), os.stat(source).st_mode & 0o777)
        return
    try:
        os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):  # rename does nothing when both names are already the one file
            os.unlink(tmp)
    fsync_folder(folder)


def atomic_write_text(path: str, text: str, mode: int = 0o644) -> None:
    atomic_write(path, lambda fh: fh.write(text.encode()), mode)
