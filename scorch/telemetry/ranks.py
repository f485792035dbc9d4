"""The per-rank channel: every rank PUSHes its heartbeat, figures and log lines to a PULL on rank 0.

It runs beside the collectives, never through them: a rank that stops (SIGSTOP,
a hung file system, a dead host) stops reporting, and rank 0 names it within
SILENT_SECONDS even while every other rank waits for it in a collective.

Every rank (rank 0 too) runs a `RankReporter`: a thread that, every
BEAT_SECONDS, samples this process and host (CPU, RAM, GPUs), reads the
figures the training thread left in plain attributes (step, phase, step time,
data wait, collective wait) and sends one JSON message; the training thread
does nothing per step for it. Rank 0 runs a `RankWatch`: a thread that
receives, emits a `system` event every SYSTEM_SECONDS with one entry per rank
(its figures plus `state` and `seen`, see below), names a rank that went silent
in a `log` event (and again when it comes back), and passes on each rank's own
warning and error lines as `log` events carrying that `rank`.

Wire: one JSON object a message, ``{"v": 1, "key": KEY, "rank": R, "kind":
"beat"|"bye", "time", "pid", "host", "step", "phase", "figures": {...one
System.ranks entry...}, "lines": [[level, message], ...]}``. `bye` is a rank's
last message (it ended cleanly: not silent, just done).

Security, as for the control socket: the PULL binds to 127.0.0.1 unless the run
binds beyond loopback with CURVE keys (--bind, --curve-keys); then it binds
there, encrypts with the run's server key, and admits only the one client key
rank 0 made for this job. Either way every message carries KEY, a secret rank 0
hands the ranks through the collective at start; anything else is dropped.
Endpoint, KEY and the job's client keys travel in one `broadcast_object`.

Liveness in each `system` entry: ``state`` is ``live`` (reported within
SILENT_SECONDS), ``silent`` (has not: stopped, stuck or gone), ``ended`` (sent
`bye`) or ``unreachable`` (on another host while the channel is loopback-only,
so it cannot report); ``seen`` is the seconds since its last message (null if
never).
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import zmq

from scorch.telemetry.protocol import Event, Log, System
from scorch.telemetry.publisher import Threaded, is_loopback

BEAT_SECONDS = 1.0  # a rank reports this often
SILENT_SECONDS = 6.0  # no message for this long: rank 0 names the rank (well inside the 15 s users expect)
SYSTEM_SECONDS = 2.0  # rank 0 emits a `system` event this often
MAX_MESSAGE_BYTES = 64 * 1024
MAX_LINES = 50  # log lines a rank keeps for its next message; beyond this they are counted and dropped
MAX_LINE_CHARS = 1000  # so that a message of MAX_LINES lines stays under MAX_MESSAGE_BYTES
WIRE_VERSION = 1


def _connectable(host: str) -> str:
    """An address other ranks can dial for a wildcard bind: torch's MASTER_ADDR, else this host's name."""
    if host in ("*", "0.0.0.0", "::", ""):
        return os.environ.get("MASTER_ADDR") or socket.gethostname()
    return host


class RankWatch(Threaded):
    """Rank 0: the PULL end. `emit` takes the events it makes (the trainer's thread-safe emit)."""

    def __init__(self, size: int, hosts: list[str], emit: Callable[[Event], None], host: str = "127.0.0.1",
                 server_keys: tuple[bytes, bytes] | None = None, silent_seconds: float = SILENT_SECONDS,
                 system_seconds: float = SYSTEM_SECONDS) -> None:
        self.size = size
        self.emit = emit
        self.silent_seconds = silent_seconds
        self.system_seconds = system_seconds
        self.key = secrets.token_hex(16)
        self.context = zmq.Context()
        self._auth: Any = None
        self.pull = self.context.socket(zmq.PULL)
        self.pull.setsockopt(zmq.LINGER, 0)
        self.pull.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        self.pull.setsockopt(zmq.RCVHWM, 10 * size + 100)
        if ":" in host:
            self.pull.setsockopt(zmq.IPV6, 1)
        self.client_keys: tuple[str, str] | None = None
        if server_keys is not None:
            public, secret = zmq.curve_keypair()
            self.client_keys = (public.decode(), secret.decode())
            self._admit_only(public)
            self.pull.curve_server = True
            self.pull.curve_publickey, self.pull.curve_secretkey = server_keys
            self.server_public: str | None = server_keys[0].decode()
        else:
            self.server_public = None
        shown = f"[{host}]" if ":" in host else host
        self.pull.bind(f"tcp://{shown}:0")
        port = self.pull.getsockopt_string(zmq.LAST_ENDPOINT).rsplit(":", 1)[1]
        dial = _connectable(host)
        self.endpoint = f"tcp://{f'[{dial}]' if ':' in dial else dial}:{port}"
        loopback_only = is_loopback(host)
        here = hosts[0] if hosts else socket.gethostname()
        self.unreachable = {r for r, h in enumerate(hosts) if loopback_only and h != here}
        self.started = time.monotonic()
        self._last: dict[int, float] = {}  # rank -> monotonic time of its last message
        self._entries: dict[int, dict] = {}  # rank -> its latest figures
        self._state: dict[int, str] = {r: "unreachable" if r in self.unreachable else "live" for r in range(size)}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="scorch-ranks", daemon=True)
        self._thread.start()
        if self.unreachable:
            self._emit(Log(level="warning", message=(
                f"ranks {_ranges(sorted(self.unreachable))} run on other hosts than rank 0 and cannot reach its "
                "loopback-only per-rank channel, so their figures and warnings are not shown; bind beyond loopback "
                "with --bind ADDR:PORT --curve-keys DIR to see them")))

    def _admit_only(self, public: bytes) -> None:
        """A ZAP handler on this context that lets in the job's client key and nothing else."""
        from zmq.auth.thread import ThreadAuthenticator

        class OneKey:
            def callback(self, domain: str, key: bytes) -> bool:  # pyzmq passes the key Z85-encoded
                return hmac.compare_digest(key, public)

        self._auth = ThreadAuthenticator(self.context)
        self._auth.start()
        self._auth.configure_curve_callback(domain="*", credentials_provider=OneKey())

    @property
    def handout(self) -> dict:
        """What every rank needs to report (sent to them in one broadcast)."""
        return {"endpoint": self.endpoint, "key": self.key, "server_key": self.server_public,
                "client_keys": self.client_keys, "unreachable": sorted(self.unreachable)}

    # -- rank 0's view ----------------------------------------------------------------------

    def ranks(self) -> list[dict]:
        """One entry per rank: its latest figures, `state` and `seen` (see the module's docstring)."""
        now = time.monotonic()
        with self._lock:
            out = []
            for rank in range(self.size):
                entry = dict(self._entries.get(rank) or {"rank": rank})
                last = self._last.get(rank)
                entry["state"] = self._state[rank]
                entry["seen"] = None if last is None else round(now - last, 1)
                out.append(entry)
            return out

    def silent(self) -> list[int]:
        with self._lock:
            return [r for r, state in self._state.items() if state == "silent"]

    # -- the thread -----------------------------------------------------------------------

    def _serve(self) -> None:
        next_system = time.monotonic() + self.system_seconds
        try:
            while not self._stopping.is_set():
                try:
                    if self.pull.poll(200):
                        for _ in range(10 * self.size):
                            try:
                                raw = self.pull.recv(zmq.NOBLOCK)
                            except zmq.Again:
                                break
                            self._take(raw)
                    now = time.monotonic()
                    self._check_silence(now)
                    if now >= next_system:
                        self._emit(System(ranks=self.ranks()))
                        next_system = now + self.system_seconds
                except zmq.ContextTerminated:
                    return
                except Exception:  # noqa: BLE001 - the channel must never take the run down
                    time.sleep(0.2)
        finally:
            if self._auth is not None:
                self._auth.stop()
            self.pull.close(linger=0)
            self.context.term()

    def _take(self, raw: bytes) -> None:
        try:
            message = json.loads(raw)
        except ValueError:
            return
        if not isinstance(message, dict) or not isinstance(message.get("key"), str):
            return
        if not hmac.compare_digest(message["key"].encode(), self.key.encode()):
            return
        rank = message.get("rank")
        if not isinstance(rank, int) or isinstance(rank, bool) or not 0 <= rank < self.size:
            return
        now = time.monotonic()
        entry = message.get("figures")
        entry = entry if isinstance(entry, dict) else {}
        entry = {**entry, "rank": rank}
        for name in ("host", "pid", "step", "phase"):
            if name in message:
                entry[name] = message[name]
        with self._lock:
            before = self._state[rank]
            gap = now - self._last.get(rank, self.started)
            self._last[rank] = now
            self._entries[rank] = entry
            self._state[rank] = "ended" if message.get("kind") == "bye" else "live"
        if before == "silent":
            self._emit(Log(level="warning", rank=rank, message=f"rank {rank} reports again after {gap:.0f} s of silence"))
        for line in message.get("lines") or ():
            if isinstance(line, list) and len(line) == 2 and all(isinstance(part, str) for part in line):
                self._emit(Log(level=line[0][:16], rank=rank, message=f"rank {rank}: {line[1][:MAX_LINE_CHARS]}"))

    def _check_silence(self, now: float) -> None:
        named = []
        with self._lock:
            for rank, state in self._state.items():
                if state != "live":
                    continue
                gap = now - self._last.get(rank, self.started)
                if gap > self.silent_seconds:
                    self._state[rank] = "silent"
                    named.append((rank, gap, self._entries.get(rank, {})))
        for rank, gap, entry in named:
            where = ", ".join(f"{k} {entry[k]}" for k in ("host", "pid") if k in entry)
            doing = f"; its last report: {entry['phase']} at step {entry.get('step')}" if entry.get("phase") else ""
            self._emit(Log(level="error", rank=rank, message=(
                f"rank {rank}{f' ({where})' if where else ''} has sent nothing for {gap:.0f} s: stopped, stuck or "
                f"gone{doing}; the other ranks wait for it in their next collective")))

    def _emit(self, event: Event) -> None:
        try:
            self.emit(event)
        except Exception:  # noqa: BLE001 - a failing sink must not stop the channel
            pass


class RankReporter(Threaded):
    """Every rank: the PUSH end (its `close` sends `bye`: this rank ended, it is not silent). `probe()` returns the training thread's current figures (read here,
    on this thread: step, phase, step_time, data_time, collective_wait); `sampler` is a SystemSampler."""

    def __init__(self, handout: dict, rank: int, probe: Callable[[], dict], sampler: Any,
                 beat_seconds: float = BEAT_SECONDS) -> None:
        self.rank = rank
        self.key = handout["key"]
        self.probe = probe
        self.sampler = sampler
        self.beat_seconds = beat_seconds
        self.host = socket.gethostname()
        self._lines: deque[list[str]] = deque()
        self._lost_lines = 0
        self.context = zmq.Context()
        self.push = self.context.socket(zmq.PUSH)
        self.push.setsockopt(zmq.LINGER, 1000)  # the last `bye` may take a moment to leave
        self.push.setsockopt(zmq.SNDHWM, 20)  # a rank 0 that reads nothing costs this rank at most 20 messages
        self.push.setsockopt(zmq.IMMEDIATE, 1)  # nothing queues for a peer not yet connected
        if handout.get("server_key"):
            public, secret = handout["client_keys"]
            self.push.curve_serverkey = handout["server_key"].encode()
            self.push.curve_publickey, self.push.curve_secretkey = public.encode(), secret.encode()
        if ":" in handout["endpoint"].split("//", 1)[1].rsplit(":", 1)[0]:
            self.push.setsockopt(zmq.IPV6, 1)
        self.push.connect(handout["endpoint"])
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="scorch-report", daemon=True)
        self._thread.start()

    def line(self, level: str, message: str) -> None:
        """Send a warning/error line of this rank to rank 0 with the next beat (any thread)."""
        if len(self._lines) >= MAX_LINES:
            self._lost_lines += 1
            return
        self._lines.append([level, message[:MAX_LINE_CHARS]])

    def _beat(self) -> None:
        try:
            self._send("beat")  # at once: a rank stopped in its first second is still known by pid and host
            while not self._stopping.wait(self.beat_seconds):
                self._send("beat")
            self._send("bye")
        finally:
            self.push.close()
            self.context.term()

    def _send(self, kind: str) -> None:
        try:
            figures = self.sampler.sample() if self.sampler is not None else {}
            state = dict(self.probe())
        except Exception:  # noqa: BLE001 - a figure that cannot be read this time is left out
            figures, state = {}, {}
        figures.update({k: v for k, v in state.items() if k not in ("step", "phase")})
        lines: list = []
        while self._lines and len(lines) < MAX_LINES:
            lines.append(self._lines.popleft())
        if self._lost_lines:
            lines.append(["warning", f"{self._lost_lines} more log lines of this rank were dropped"])
            self._lost_lines = 0
        message = {"v": WIRE_VERSION, "key": self.key, "rank": self.rank, "kind": kind, "time": time.time(),
                   "pid": os.getpid(), "host": self.host, "step": state.get("step"), "phase": state.get("phase"),
                   "figures": figures, "lines": lines}
        try:
            self.push.send(json.dumps(message, default=str).encode(), zmq.NOBLOCK)
        except zmq.ZMQError:
            pass  # rank 0 not there or not reading: its silence detection is rank 0's business


def _ranges(ranks: list[int]) -> str:
    """[1, 2, 3, 5] -> '1-3, 5'."""
    parts, start = [], None
    for i, rank in enumerate(ranks):
        if start is None:
            start = rank
        if i + 1 == len(ranks) or ranks[i + 1] != rank + 1:
            parts.append(str(start) if start == rank else f"{start}-{rank}")
            start = None
    return ", ".join(parts)
