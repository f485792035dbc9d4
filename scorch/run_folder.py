"""RunFolder: everything about one run in one folder, written by one process at a time.

    run.json        what the run is and its state (rewritten atomically)
    .token          the control secret (mode 0600), never in run.json
    .lock           held (flock, exclusive) by the one process that writes the folder; never replaced
    lease.json      who holds it: host, pid, start time, renewed every LEASE_RENEW_SECONDS
    .reserve        disk space held back while the run lives, freed for its last words on a full disk
    the event log   every event, one JSON object a line (scorch/events_log.py owns it)
    tensorboard/    tensorboardX files
    checkpoints/    last.pt, prev.pt, best.pt, epoch-K.pt, each with its NAME.sha256

One writer: the trainer takes the lock before it writes anything and holds it for its whole
life; the kernel drops it at any death, kill -9 included. The lease says who holds it, for the
message that refuses a second writer, and covers a shared file system whose locks another host
may not see: a lease from another host renewed within LEASE_STALE_SECONDS is a live run there.
No torch here: `liveness` serves scorch-ctl and the dashboard.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from scorch import events_log
from scorch.errors import ScorchError
from scorch.fileio import atomic_write_text
from scorch.telemetry.protocol import ProtocolError, loads

LOCK_NAME = ".lock"
LEASE_NAME = "lease.json"
LEASE_RENEW_SECONDS = 10.0  # the holder rewrites lease.json this often
LEASE_STALE_SECONDS = 60.0  # a lease not renewed for this long is a dead holder's (shared file systems, other hosts)
# A reader (scorch-ctl, the dashboard) probes the lock with a shared flock for an instant: a trainer
# starting at that instant tries again for this long before it calls the folder taken.
LOCK_GRACE_SECONDS = 0.5
RESERVE_BYTES = 256 * 1024  # disk space held back (.reserve) so that a run on a full disk can still record its end


def default_name(model_path: str) -> str:
    stem = os.path.splitext(os.path.basename(model_path))[0] or "run"
    return time.strftime("%Y%m%d-%H%M%S") + "-" + stem


def this_host() -> str:
    return socket.gethostname()


def _same_host(host: Any) -> bool:
    here = this_host()
    return isinstance(host, str) and host in (here, here.split(".")[0], os.uname().nodename)


def read_lease(path: str) -> dict:
    """lease.json of the run folder `path` ({} if none or unreadable)."""
    try:
        with open(os.path.join(path, LEASE_NAME), "rb") as fh:
            data = loads(fh.read(4096))
    except (OSError, ProtocolError):
        return {}
    return data if isinstance(data, dict) else {}


def describe_holder(lease: dict) -> str:
    """'scorch-train pid 123 on host h, started 2024-01-01 12:00:00' from a lease."""
    if not lease:
        return "another scorch-train (it has not written lease.json yet)"
    started = lease.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(started, (int, float)) else "?"
    return f"scorch-train pid {lease.get('pid')} on host {lease.get('host')}, started {when}"


def lock_held(path: str) -> bool | None:
    """Is the run folder's lock held by a process right now? None if the folder has no lock file (a run
    from before locks, or not started). A shared lock taken and dropped at once: a reader never writes."""
    try:
        fd = os.open(os.path.join(path, LOCK_NAME), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return True
        return None  # a file system without flock: the lease and the pid must tell
    finally:
        os.close(fd)  # closing drops the shared lock
    return False


@dataclass(frozen=True)
class Liveness:
    """What a run folder's state means right now.

    state: live (a process holds the folder) | dead (run.json says running but no process holds it) |
    ended (run.json's end status, in `status`) | unknown (no run.json). `here`: the holder is on this
    host (its pid could be checked)."""

    state: str
    reason: str = ""
    status: str = ""
    here: bool = True
    lease: dict = field(default_factory=dict)


def liveness(path: str, info: dict | None = None) -> Liveness:
    """The truth about the run in `path`, from its lock, its lease and run.json (read if `info` is None)."""
    if info is None:
        try:
            with open(os.path.join(path, "run.json")) as fh:
                info = json.load(fh)
        except (OSError, ValueError):
            info = None
        if not isinstance(info, dict):
            info = None
    lease = read_lease(path)
    held = lock_held(path)
    if held:  # a writer holds it: live, whatever run.json says yet (a resume not yet past its start)
        return Liveness("live", lease=lease, here=_same_host(lease.get("host", this_host())))
    if info is None:
        return Liveness("unknown", reason=f"{os.path.join(path, 'run.json')} is missing or unreadable", lease=lease)
    state = info.get("state", "running")
    if state != "running":
        return Liveness("ended", status=str(state), reason=str(info.get("reason") or ""), lease=lease)
    holder = lease or {"host": (info.get("hosts") or [this_host()])[0], "pid": info.get("pid"), "started": info.get("started")}
    pid = holder.get("pid")
    if not _same_host(holder.get("host")):
        # Another host's run on a shared file system: its lock may not be visible here; its lease is.
        renewed = holder.get("renewed")
        if not isinstance(renewed, (int, float)):
            return Liveness("live", reason="on another host; no lease to tell whether it is alive", here=False, lease=lease)
        age = time.time() - renewed
        if age > LEASE_STALE_SECONDS:
            return Liveness("dead", reason=f"{describe_holder(holder)} has not renewed its lease for {age:.0f} s "
                            "(it crashed, was killed, or lost the file system)", here=False, lease=lease)
        return Liveness("live", here=False, lease=lease)
    for candidate in (info.get("pid"), pid):  # run.json's first: the words `why_dead(info)` uses without the folder
        if isinstance(candidate, int) and not isinstance(candidate, bool) and candidate > 0 and not pid_alive(candidate):
            return Liveness("dead", reason=f"process {candidate} is gone (killed or crashed)", lease=lease)
    if held is False:
        return Liveness("dead", reason=f"process {pid} no longer holds the run folder's lock (it ended without "
                        "recording it: killed or crashed)", lease=lease)
    return Liveness("live", lease=lease)  # no lock file (a run from before locks): the pid is alive


class RunFolder:
    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self.info_path = os.path.join(self.path, "run.json")
        self.events_path = events_log.path(self.path)
        self.token_path = os.path.join(self.path, ".token")
        self.lock_path = os.path.join(self.path, LOCK_NAME)
        self.lease_path = os.path.join(self.path, LEASE_NAME)
        self.reserve_path = os.path.join(self.path, ".reserve")
        self.tensorboard = os.path.join(self.path, "tensorboard")
        self.checkpoints = os.path.join(self.path, "checkpoints")
        self.info: dict[str, Any] = {}
        self._lock_fd = -1
        self._lease: dict[str, Any] = {}
        self.previous_lease: dict[str, Any] = {}  # the last holder's, as found when this process took the folder
        self._stop_renewing = threading.Event()
        self._renewer: threading.Thread | None = None

    def create(self, reuse: bool, restart: bool = False) -> None:
        """Take the folder (one writer), make it; an existing run is refused unless we are resuming it, or
        restarting one that ended before its first checkpoint (`restart`)."""
        try:
            os.makedirs(self.path, exist_ok=True)
        except OSError as exc:
            raise ScorchError(f"--run-dir {self.path}: cannot create it ({exc.strerror}); choose a writable folder") from None
        self.acquire()
        try:
            if not reuse:
                self.check_new(restart)
            try:
                for folder in (self.tensorboard, self.checkpoints):
                    os.makedirs(folder, exist_ok=True)
            except OSError as exc:
                raise ScorchError(f"--run-dir {self.path}: cannot create it ({exc.strerror}); choose a writable folder") from None
            for name in os.listdir(self.checkpoints):  # a checkpoint write cut short by kill -9 leaves its temporary file
                if name.startswith(".") and name.endswith(".tmp"):
                    os.unlink(os.path.join(self.checkpoints, name))
            if reuse and os.path.exists(self.info_path):
                with open(self.info_path) as fh:
                    self.info = json.load(fh)
        except BaseException:
            self.release()
            raise

    # -- one writer ---------------------------------------------------------------------------

    def acquire(self) -> None:
        """Take the folder's lock and write the lease, or refuse (exit 2) naming the process that holds it."""
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise ScorchError(f"--run-dir {self.path}: cannot create {LOCK_NAME} there ({exc.strerror}); "
                              "choose a writable folder") from None
        deadline = time.monotonic() + LOCK_GRACE_SECONDS
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    break  # no flock on this file system (some network ones): the lease alone guards it
                if time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                os.close(fd)
                raise ScorchError(self._in_use()) from None
        self._lock_fd = fd
        lease = self.previous_lease = read_lease(self.path)
        renewed = lease.get("renewed")
        if (lease and not _same_host(lease.get("host")) and isinstance(renewed, (int, float))
                and time.time() - renewed < LEASE_STALE_SECONDS):
            self.release()
            raise ScorchError(f"--run-dir {self.path} is in use by {describe_holder(lease)} (a shared file system; its "
                              f"lease was renewed {time.time() - renewed:.0f} s ago): a run folder has one writer. Stop "
                              f"it there, or wait {LEASE_STALE_SECONDS:.0f} s after it died, or choose another --run-dir")
        self._reserve()
        now = time.time()
        self._lease = {"host": this_host(), "pid": os.getpid(), "started": now, "renewed": now}
        self._write_lease()
        self._stop_renewing.clear()
        self._renewer = threading.Thread(target=self._renew, name="scorch-lease", daemon=True)
        self._renewer.start()

    def _in_use(self) -> str:
        return (f"--run-dir {self.path} is in use by {describe_holder(read_lease(self.path))}: a run folder has one "
                f"writer. Wait for it to end or stop it (scorch-ctl {self.path} stop), or choose another --run-dir")

    def _reserve(self) -> None:
        """Set disk space aside for the run's last words: on a disk that fills up, `free_reserve` gives it back
        so that run_ended and run.json's end state still fit."""
        try:
            fd = os.open(self.reserve_path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError:
            return
        try:
            os.posix_fallocate(fd, 0, RESERVE_BYTES)
        except OSError:
            pass  # no room even for this, or no fallocate: the end is recorded if the disk allows
        finally:
            os.close(fd)

    def free_reserve(self) -> None:
        try:
            os.unlink(self.reserve_path)
        except OSError:
            pass

    def _write_lease(self) -> None:
        try:
            atomic_write_text(self.lease_path, json.dumps(self._lease) + "\n")
        except OSError:
            pass  # a full disk: the lock still guards this host; the next renewal tries again

    def _renew(self) -> None:
        while not self._stop_renewing.wait(LEASE_RENEW_SECONDS):
            self._lease["renewed"] = time.time()
            self._write_lease()

    def release(self) -> None:
        """Give the folder up (after the last write). The lease stays, naming the last holder; safe to call twice."""
        self._stop_renewing.set()
        renewer, self._renewer = self._renewer, None
        if renewer is not None:
            renewer.join()
        fd, self._lock_fd = self._lock_fd, -1
        if fd >= 0:
            self.free_reserve()
            os.close(fd)  # drops the flock

    # -- contents -----------------------------------------------------------------------------

    def has_checkpoint(self) -> bool:
        return os.path.isdir(self.checkpoints) and any(name.endswith(".pt") for name in os.listdir(self.checkpoints))

    def check_new(self, restart: bool) -> None:
        """A new run may start here: nothing is here yet, or (with `restart`) a run that ended before its first
        checkpoint, whose event log is then continued. A run with checkpoints is never started over."""
        if not os.path.exists(self.events_path):
            return
        if self._lock_fd < 0 and liveness(self.path).state == "live":  # not "--resume it": that would be refused too
            raise ScorchError(self._in_use())
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
    return _same_host(str(hosts[0]))


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


def why_dead(info: dict, path: str = "") -> str:
    """Why the run described by `info` (its run.json) cannot be running any more, or "" if it may be.

    "" also when the holder cannot be checked from here (another host: only the
    heartbeat tells), or when run.json already says the run ended. The one place
    that decides "dead" for every reader, so the picker, a fresh open and the live
    view agree; given the run folder's `path`, its lock and lease decide (`liveness`).
    """
    if path:
        alive = liveness(path, info)
        return alive.reason if alive.state == "dead" else ""
    if info.get("state", "running") != "running" or not on_this_host(info):
        return ""
    pid = info.get("pid")
    if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0 and not pid_alive(pid):
        return f"process {pid} is gone (killed or crashed)"
    return ""
