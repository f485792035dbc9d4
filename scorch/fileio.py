"""Writing files so that a crash at any instant leaves the old file or the new one, and why a write failed.

No torch here: run.json, .token and checkpoints are all written through `atomic_write`.
"""

from __future__ import annotations

import errno
import hashlib
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


def write_failure(exc: OSError) -> str:
    """'could not write FILE: why', for a write that failed (the event log or run.json on a full disk)."""
    return f"could not write {exc.filename or 'to the run folder'}: {write_error(exc)}"


class Pending:
    """A checkpoint for `path` written through `write(file)` into a temporary file beside it, flushed but
    not yet durable nor in place: the first half of `atomic_write`. `commit()` is the second half (fsync,
    rename over `path`, fsync the folder), so it can run off the training thread; a crash before it, or a
    failure anywhere, leaves the old `path` as it was and no temporary file behind a live process."""

    def __init__(self, path: str, write: Callable[[BinaryIO], Any], mode: int | None = None, digest: bool = False) -> None:
        self.path = path
        self.digest = digest  # a checkpoint: NAME.sha256 beside it
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

    def commit(self, previous: str | None = None) -> None:
        """Make the checkpoint durable and put it in place, with its digest; `previous`: first keep
        the file `path` names now under that name (last.pt -> prev.pt)."""
        assert self.file is not None  # set by __init__, which raises otherwise
        try:
            with self.file:
                self.file.flush()
                # Read back off the loop (commit runs on the background thread), from the page cache.
                digests = [_digest_fd(self.file.fileno())] if self.digest else []
                os.fsync(self.file.fileno())
            if previous is not None and os.path.exists(self.path):
                atomic_link(self.path, previous)
            _install(self.tmp, self.path, digests)
        except BaseException:
            self.discard()
            raise

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
    """Make `path` a second name of the checkpoint `source` just written, as atomically as `atomic_write`,
    with its digest.

    A hard link costs no time and no disk space; where the file system has none, a copy. Both names
    stay the same checkpoint: `atomic_write` never changes a file in place, it replaces the name.
    """
    folder = os.path.dirname(os.path.abspath(path))
    digests = read_digests(source)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.urandom(6).hex()}.tmp")
    try:
        os.link(source, tmp)
    except OSError:
        with open(source, "rb") as src:
            pending = Pending(path, lambda fh: shutil.copyfileobj(src, fh), 0o644, digest=bool(digests))
        pending.commit()
        return
    try:
        _install(tmp, path, digests)
    finally:
        if os.path.lexists(tmp):  # rename does nothing when both names are already the one file
            os.unlink(tmp)


def _install(tmp: str, path: str, digests: list[str]) -> None:
    """Rename `tmp` over `path` so that its digest file matches at every instant: before the rename it
    lists the new digests and the old, after it the new ones alone."""
    if digests:
        _write_digests(path, digests + [d for d in read_digests(path) if d not in digests])
    os.replace(tmp, path)
    fsync_folder(os.path.dirname(os.path.abspath(path)))
    if digests:
        _write_digests(path, digests)


DIGEST = ".sha256"  # beside each checkpoint NAME: NAME.sha256, in the format of sha256sum


def digest_path(path: str) -> str:
    return path + DIGEST


def read_digests(path: str) -> list[str]:
    """The sha256 digests recorded for checkpoint `path` (one, or two while it is being replaced)."""
    try:
        with open(digest_path(path), "rb") as fh:
            text = fh.read(4096).decode("ascii", "replace")
    except OSError:
        return []
    found = [line.split()[0].lower() for line in text.splitlines() if line.split()]
    return [d for d in found if len(d) == 64 and all(c in "0123456789abcdef" for c in d)]


def _write_digests(path: str, digests: list[str]) -> None:
    name = os.path.basename(path)
    text = "".join(f"{d}  {name}\n" for d in digests)
    atomic_write(digest_path(path), lambda fh: fh.write(text.encode()), 0o644)


def _digest_fd(fd: int) -> str:
    sha = hashlib.sha256()
    offset = 0
    while chunk := os.pread(fd, 1 << 20, offset):
        sha.update(chunk)  # releases the GIL: the training thread runs meanwhile
        offset += len(chunk)
    return sha.hexdigest()


def atomic_write_text(path: str, text: str, mode: int = 0o644) -> None:
    atomic_write(path, lambda fh: fh.write(text.encode()), mode)
