"""Live telemetry on global rank 0: a PUB stream of every event and a ROUTER for hello/replay/commands.

The training thread only appends to a bounded deque (`Publisher.event`): no
lock, no socket, no serialisation, never a wait. When the deque is full the
event is dropped from the stream and counted (the event log still has it, and
clients fill such holes with `replay`); the count is reported in a `log` event.

One thread owns the ZeroMQ sockets. It publishes what the deque holds (and a
heartbeat every second and to each new subscriber), keeps the snapshot
history (step events downsampled, keeping each window's lowest and highest
loss, so a million-step run still answers `hello` with a small reply), and
answers requests, in at most REQUEST_DUTY of its time so that a flood of
requests cannot take the GIL from training. Commands that pass the token check go to the
trainer's `Control`; accepted and refused commands are logged as `command`
events through the trainer's `emit`, which takes a lock so that this thread
and the training thread number events one at a time (emits are a few per
second, so the lock costs nothing measurable).

Security: the token lives in RUN_DIR/.token (mode 0600), written before the
endpoints appear in run.json; it keys each command's HMAC and never crosses the
wire (telemetry/auth.py: forged, changed, stale and replayed commands are refused).
A bind beyond loopback needs CURVE keys (`scorch-ctl keygen DIR`, then
`--curve-keys DIR`): both sockets then encrypt and authenticate the server, and
only the clients whose public keys are in DIR/authorized_clients/ may connect
(keygen lists its own client key there); commands always need the token.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import secrets
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

import zmq

from scorch import events_log, steering
from scorch.callbacks import Callback
from scorch.errors import ScorchError
from scorch.fileio import atomic_write_text
from scorch.run_folder import RunFolder
from scorch.telemetry.auth import Verifier
from scorch.telemetry.control import Control
from scorch.telemetry.protocol import (
    COMMANDS,
    MAX_REQUEST_BYTES,
    Ack,
    Command,
    CommandRequest,
    Error,
    Event,
    EventsPage,
    Heartbeat,
    Hello,
    Log,
    ProtocolError,
    Replay,
    RunEnded,
    RunStarted,
    Snapshot,
    Step,
    System,
    decode_request,
    event_frames,
)

QUEUE_SIZE = 10_000  # events waiting for the publisher thread; beyond this they are dropped and counted
# Memory a hostile client can make this process hold is bounded per connection by these. ZeroMQ queues
# per connection, and a connection that is gone keeps what it had queued until it is read, so the
# queues are short: a dashboard sends one request per connection and reads its reply.
SEND_HWM = 10_000  # stream messages ZeroMQ holds per subscriber (64 bytes each: the content is shared); beyond, dropped for it
PEER_REQUESTS = 4  # requests ZeroMQ reads ahead per connection (a client sends one); then it stops reading it
PEER_REPLIES = 16  # replies ZeroMQ holds for a connection that does not read them; beyond, dropped for it
REQUEST_DEADLINE_SECONDS = 10.0  # a request stamped longer ago than this is dropped unanswered: its client gave up
POLL_SECONDS = 0.02  # how often the thread looks at the queue when no request arrives
STEP_BUCKETS = 512  # step history kept for charts: at most ~2 events per bucket
KEPT_MESSAGES = 1000  # most recent log/command events kept in the snapshot
REPLAY_MAX = 5000  # events per replay reply at most
REPLAY_MAX_BYTES = 4 * 1024 * 1024
MAX_FRAME_BYTES = 2 * MAX_REQUEST_BYTES  # larger messages make ZeroMQ drop the peer unread; up to it: an error reply
WELCOME_SECONDS = 0.1  # subscriptions this close together share one welcome heartbeat (a churn of them costs one)
TRIM_AFTER_REQUESTS = 1000  # after a burst of this many requests, and then a quiet second, give freed memory back
TRIM_QUIET_SECONDS = 1.0
DROP_REPORT_SECONDS = 5.0
REFUSAL_EVENTS_PER_MINUTE = 30  # beyond this, refused commands are counted, not logged one by one
HEARTBEAT_SECONDS = 1.0  # a heartbeat on the stream this often, and at once for each new subscriber
FINAL_DRAIN_SECONDS = 0.3
# Share of wall time the thread may spend answering requests: a flood of requests must not take the
# GIL from the training thread. After a busy slice the thread sleeps (GIL released) 9x as long.
REQUEST_DUTY = 0.1
REQUEST_SLICE_SECONDS = 0.005  # at close: how long queued events may take to leave


# -- where to listen ----------------------------------------------------------------------------

def parse_bind(text: str) -> tuple[str, int]:
    """`--bind HOST:PORT` as (host, port); `[::1]:5555` for IPv6."""
    host, sep, port_text = text.rpartition(":")
    host = host.strip("[]")
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not sep or not host or not 0 <= port <= 65534:
        raise ScorchError(f"--bind {text}: expected HOST:PORT, e.g. 127.0.0.1:0 (a free port) or 0.0.0.0:5555")
    return ("127.0.0.1" if host == "localhost" else host), port


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # "*", interface names, host names: assume they reach beyond this machine


def _endpoint(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"tcp://{shown}:{port if port else '*'}"


def load_server_keys(folder: str) -> tuple[bytes, bytes]:
    """(public, secret) from FOLDER/server.key_secret, made by `scorch-ctl keygen FOLDER`."""
    import zmq.auth

    path = os.path.join(folder, "server.key_secret")
    if not os.path.exists(path):
        raise ScorchError(f"--curve-keys {folder}: no server.key_secret there; make keys with `scorch-ctl keygen {folder}`")
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise ScorchError(f"--curve-keys {folder}: cannot read server.key_secret ({exc}); remake it with "
                          f"`scorch-ctl keygen {folder}`") from None
    if not secret:
        raise ScorchError(f"--curve-keys {folder}: server.key_secret holds no secret key; remake it with "
                          f"`scorch-ctl keygen {folder}`")
    return public, secret


def check_bind(bind: str, curve_keys: str = "") -> tuple[str, int, tuple[bytes, bytes] | None]:
    """(host, port, CURVE keys) for `--bind`/`--curve-keys`, or the ScorchError that says how to fix them.

    Cheap and side-effect free: the trainer calls it before it creates the run folder.
    """
    host, port = parse_bind(bind)
    keys = load_server_keys(curve_keys) if curve_keys else None
    if keys is not None:
        allowed = os.path.join(curve_keys, "authorized_clients")
        listed = [n for n in os.listdir(allowed) if n.endswith(".key")] if os.path.isdir(allowed) else []
        if not listed:  # the server's public key is in run.json, readable by all: it must not be enough to watch
            raise ScorchError(f"--curve-keys {curve_keys}: no client keys in {allowed}/, so anyone holding the server's "
                              "public key could watch; copy each client's public *.key there (`scorch-ctl keygen DIR` "
                              "lists its own client key)")
    if keys is None and not is_loopback(host):
        raise ScorchError(
            f"--bind {bind} listens beyond this machine, so it needs CURVE keys: run `scorch-ctl keygen KEYS_DIR` "
            "(or make them with pyzmq's zmq.auth.create_certificates), then add --curve-keys KEYS_DIR. "
            "Or keep the default 127.0.0.1 and reach it through an SSH tunnel")
    return host, port, keys


# -- what a late joiner gets ----------------------------------------------------------------------

class StepHistory:
    """Step events for the charts, at most ~2 per bucket: each bucket keeps its lowest and highest loss.

    Buckets start one event wide and double (merging neighbours) whenever there
    are more than `buckets` of them, so the cost per event is O(1) amortised and
    the kept shape has the spikes and dips a plain stride would miss.
    """

    def __init__(self, buckets: int = STEP_BUCKETS) -> None:
        self.cap = buckets
        self.width = 1
        self.count = 0
        self._buckets: list[list] = []  # [events in bucket, (loss, seq, text) lowest, (loss, seq, text) highest]
        self.latest: tuple[float, int, str] | None = None

    def add(self, seq: int, loss: float, text: str) -> None:
        item = (loss if math.isfinite(loss) else math.inf, seq, text)
        self.latest = item
        self.count += 1
        if self._buckets and self._buckets[-1][0] < self.width:
            bucket = self._buckets[-1]
            bucket[0] += 1
            if item[0] < bucket[1][0]:
                bucket[1] = item
            if item[0] >= bucket[2][0]:
                bucket[2] = item
            return
        self._buckets.append([1, item, item])
        if len(self._buckets) > self.cap:
            merged = []
            for i in range(0, len(self._buckets) - 1, 2):
                a, b = self._buckets[i], self._buckets[i + 1]
                merged.append([a[0] + b[0], min(a[1], b[1], key=_loss), max(a[2], b[2], key=_loss)])
            if len(self._buckets) % 2:
                merged.append(self._buckets[-1])
            self._buckets = merged
            self.width *= 2

    def items(self) -> list[tuple[int, str]]:
        """(seq, json) of the kept step events, plus the latest one."""
        kept = {}
        for _, low, high in self._buckets:
            kept[low[1]] = low[2]
            kept[high[1]] = high[2]
        if self.latest is not None:
            kept[self.latest[1]] = self.latest[2]
        return list(kept.items())


def _loss(item: tuple[float, int, str]) -> float:
    return item[0]


class History:
    """Everything `hello` answers with, kept on the publisher thread as JSON text."""

    def __init__(self) -> None:
        self.run: str | None = None
        self.steps = StepHistory()
        self.lasting: list[tuple[int, str]] = []  # run_started, epoch_end, checkpoint_saved, run_ended, others
        self.messages: deque[tuple[int, str]] = deque(maxlen=KEPT_MESSAGES)  # log and command
        self.system: tuple[int, str] | None = None
        self.last_seq = 0
        self.state = "running"
        self._snapshot: tuple[tuple, bytes] | None = None  # the last reply, reused until an event arrives

    def add(self, event: Event, text: str) -> None:
        if event.seq <= self.last_seq:
            return  # already seen (read from the event log at start, then queued again)
        self.last_seq = event.seq
        if isinstance(event, Step):
            self.steps.add(event.seq, event.loss, text)
        elif isinstance(event, System):
            self.system = (event.seq, text)
        elif event.type in ("log", "command"):
            self.messages.append((event.seq, text))
        else:
            self.lasting.append((event.seq, text))
            if isinstance(event, RunStarted):
                self.run = text
                self.state = "running"
            elif isinstance(event, RunEnded):
                self.state = event.status

    def add_line(self, line: events_log.Line) -> None:
        """A line of the event log read before this process started (a resumed run): late joiners see it all."""
        if line.event is not None:
            self.add(line.event, line.text.decode("utf-8", "replace"))
        self.state = "running"  # an earlier process ended; this one is live

    @property
    def cached_snapshot(self) -> bytes | None:
        return None if self._snapshot is None else self._snapshot[1]

    def snapshot(self, dropped: int) -> bytes:
        key = (self.last_seq, self.state, dropped)
        if self._snapshot is not None and self._snapshot[0] == key:
            return self._snapshot[1]  # a flood of hello costs a lookup each, not a rebuild
        items = self.lasting + list(self.messages) + self.steps.items()
        if self.system is not None:
            items.append(self.system)
        items.sort()
        reply = Snapshot.encode_parts(self.last_seq, self.state, dropped, self.run, [t for _, t in items])
        self._snapshot = (key, reply)
        return reply


# -- the publisher --------------------------------------------------------------------------------

class Threaded:
    """Owns one thread that runs until `close()` sets `_stopping`; close is safe to call twice. The thread's loop
    cleans up after itself (the publisher's publishes what is queued, briefly, and closes its sockets)."""

    _thread: threading.Thread | None
    _stopping: threading.Event

    def close(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stopping.set()
        thread.join(timeout=10)


class Publisher(Threaded, Callback):
    """Publishes every event of the run and answers hello/replay/command requests (global rank 0 only).

    `emit` numbers and logs the `command` events this thread produces (the
    trainer's thread-safe `emit`); `control` receives accepted commands. `history`: what a resumed
    run's event log already holds (`events_log.Writer(visit=history.add_line)` reads it once).
    """

    def __init__(self, run: RunFolder, control: Control | None = None, emit: Callable[[Event], Any] | None = None,
                 bind: str = "127.0.0.1:0", curve_keys: str = "", queue_size: int = QUEUE_SIZE,
                 progress: Callable[[], tuple[float, str]] | None = None, history: History | None = None) -> None:
        self.run = run
        self.progress = progress  # (seconds since the last step, phase) for the heartbeat; called on this thread
        self.control = control
        self._emit = emit
        self._queue: deque[Event] = deque()
        self._queue_size = queue_size
        self.dropped = 0  # counted on the training thread only
        self._reported_dropped = 0
        self._next_drop_report = 0.0
        self._refusals: deque[float] = deque()
        self._unlogged_refusals = 0
        self._stopping = threading.Event()
        self._next_heartbeat = 0.0
        self._last_beat = -math.inf
        self._snapshot_frame: tuple[bytes, zmq.Frame] | None = None  # the snapshot as one ZeroMQ buffer, see _reply
        self._requests = 0  # since the last trim (see _trim)
        self._last_request = 0.0
        self._rest_until = 0.0  # no requests answered before this (time.monotonic()): see REQUEST_DUTY
        self._expired = 0  # requests dropped unanswered since the last report: older than REQUEST_DEADLINE_SECONDS
        self._thread: threading.Thread | None = None
        self._auth: Any = None
        self.history = history or History()
        self.pages = events_log.Pages(run.events_path)

        host, port, keys = check_bind(bind, curve_keys)
        self.context = zmq.Context()
        try:
            self.pub = self.context.socket(zmq.XPUB)  # a PUB that also tells us when someone subscribes
            self.pub.setsockopt(zmq.XPUB_VERBOSE, 1)
            self.router = self.context.socket(zmq.ROUTER)
            for sock, send_hwm, recv_hwm in ((self.pub, SEND_HWM, PEER_REQUESTS), (self.router, PEER_REPLIES,
                                                                                   PEER_REQUESTS)):
                sock.setsockopt(zmq.LINGER, 0)
                sock.setsockopt(zmq.SNDHWM, send_hwm)
                sock.setsockopt(zmq.RCVHWM, recv_hwm)
                sock.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)
                if ":" in host:
                    sock.setsockopt(zmq.IPV6, 1)
                if keys is not None:
                    sock.curve_server = True
                    sock.curve_publickey, sock.curve_secretkey = keys
            if keys is not None:
                self._start_authenticator(curve_keys)
            self.publish_endpoint = self._bind(self.pub, host, port, bind)
            self.control_endpoint = self._bind(self.router, host, port + 1 if port else 0, bind)
            # The secret first, then the endpoints: whoever sees the endpoints can already find the token.
            self.token = secrets.token_urlsafe(32)
            self.verifier = Verifier(self.token)
            atomic_write_text(run.token_path, self.token + "\n", mode=0o600)
            telemetry: dict[str, Any] = {"publish": self.publish_endpoint, "control": self.control_endpoint}
            if keys is not None:
                telemetry["curve_server_key"] = keys[0].decode()
            run.write_info(telemetry=telemetry)
        except BaseException:
            self._close_sockets()
            raise

        self._thread = threading.Thread(target=self._serve, name="scorch-telemetry", daemon=True)
        self._thread.start()

    def _start_authenticator(self, folder: str) -> None:
        allowed = os.path.join(folder, "authorized_clients")  # check_bind made sure it lists clients
        from zmq.auth.thread import ThreadAuthenticator

        self._auth = ThreadAuthenticator(self.context)
        self._auth.start()
        self._auth.configure_curve(domain="*", location=allowed)

    def _bind(self, sock: zmq.Socket, host: str, port: int, flag: str) -> str:
        try:
            sock.bind(_endpoint(host, port))
        except zmq.ZMQError as exc:
            if exc.errno == zmq.EADDRINUSE:
                raise ScorchError(f"--bind {flag}: port {port} is already in use; choose another port "
                                  "(this run needs PORT and PORT+1), or 127.0.0.1:0 for free ones") from None
            raise ScorchError(f"--bind {flag}: cannot listen on {host}:{port} ({exc.strerror}); "
                              "use an address of this machine, e.g. 127.0.0.1:0") from None
        return sock.getsockopt_string(zmq.LAST_ENDPOINT)

    # -- the training thread ----------------------------------------------------------------

    def event(self, event: Event) -> None:
        """Hand `event` to the publisher thread; never blocks: when the queue is full, drop and count."""
        if len(self._queue) >= self._queue_size:
            self.dropped += 1
            return
        self._queue.append(event)

    # -- the publisher thread ---------------------------------------------------------------

    def _serve(self) -> None:
        try:
            poller = zmq.Poller()
            poller.register(self.router, zmq.POLLIN)
            poller.register(self.pub, zmq.POLLIN)
            while not self._stopping.is_set():
                try:
                    self._drain()
                    rest = self._rest_until - time.monotonic()
                    if rest > 0:
                        time.sleep(min(rest, POLL_SECONDS))
                        ready = {}
                    else:
                        ready = dict(poller.poll(int(POLL_SECONDS * 1000)))
                    if self.pub in ready:
                        self._welcome()
                    if self.router in ready:
                        self._answer_all()
                    if time.monotonic() >= self._next_heartbeat:
                        self._heartbeat()
                    self._report()
                    self._trim()
                except zmq.ContextTerminated:
                    return
                except Exception:  # noqa: BLE001 - telemetry must never take the run down; keep serving
                    time.sleep(POLL_SECONDS)
            deadline = time.monotonic() + FINAL_DRAIN_SECONDS
            while self._queue and time.monotonic() < deadline:
                self._drain()
            self._answer_all()
        finally:
            self._close_sockets(pub_linger_ms=int(FINAL_DRAIN_SECONDS * 1000))

    def _close_sockets(self, pub_linger_ms: int = 0) -> None:
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        for name in ("router", "pub"):
            sock = getattr(self, name, None)
            if sock is not None and not sock.closed:
                sock.close(linger=pub_linger_ms if name == "pub" else 0)  # let the last events (run_ended) leave
        self.context.term()

    def _welcome(self) -> None:
        """A new subscription: a heartbeat right away tells that subscriber its stream is live."""
        subscribed = False
        while True:
            try:
                message = self.pub.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            subscribed = subscribed or message[:1] == b"\x01"
            self._requests += 1  # a churn of subscribers is a burst too (see _trim)
            self._last_request = time.monotonic()
        if subscribed:  # at once, or with the next WELCOME_SECONDS beat if one just left: a churn costs one each
            self._next_heartbeat = min(self._next_heartbeat, self._last_beat + WELCOME_SECONDS)

    def _heartbeat(self) -> None:
        """Not an event (no seq, not logged): the newest seq, so subscribers notice a lost last event."""
        beat = Heartbeat(time=time.time(), last_seq=self.history.last_seq, state=self.history.state)
        if self.progress is not None:
            try:
                age, phase = self.progress()
                beat = dataclasses.replace(beat, progress_age=round(age, 3), phase=phase)
            except Exception:  # noqa: BLE001 - a heartbeat without the figures beats no heartbeat
                pass
        try:
            self.pub.send_multipart(beat.frames(), zmq.NOBLOCK)
        except zmq.Again:
            pass
        self._last_beat = time.monotonic()
        self._next_heartbeat = self._last_beat + HEARTBEAT_SECONDS

    def _drain(self) -> None:
        while self._queue:
            event = self._queue.popleft()
            try:
                text = event.to_json()
            except (TypeError, ValueError):
                continue  # not JSON-able: the JSONL log has already complained
            try:
                self.pub.send_multipart(event_frames(event, text), zmq.NOBLOCK)
            except zmq.Again:
                pass  # PUB drops at the high-water mark rather than wait
            self.history.add(event, text)

    def _answer_all(self) -> None:
        start = time.monotonic()
        try:
            for _ in range(100):  # a bounded batch, then back to the queue
                try:
                    frames = self.router.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    return
                self._answer_one(frames)
                if time.monotonic() - start > REQUEST_SLICE_SECONDS:
                    return
        finally:
            busy = time.monotonic() - start
            self._rest_until = time.monotonic() + busy * (1 / REQUEST_DUTY - 1)

    def _answer_one(self, frames: list[bytes]) -> None:
        if len(frames) < 2:
            return
        self._drain()  # the snapshot covers every event handed over so far
        try:
            reply = self._answer(frames[-1])
        except Exception as exc:  # noqa: BLE001 - no request may bring the publisher down
            reply = Error(reason=f"internal error: {type(exc).__name__}").encode()
        self._requests += 1
        self._last_request = time.monotonic()
        if not reply:
            return  # expired: dropped unanswered
        try:
            shared = self._shared(reply)
            # copy=False only for the shared snapshot: pyzmq would hand other large bytes to its gc thread
            self.router.send_multipart(frames[:-1] + [shared], zmq.NOBLOCK, copy=not isinstance(shared, zmq.Frame))
        except zmq.ZMQError:
            pass  # the peer left or is not reading: its loss

    def _shared(self, reply: bytes) -> bytes | zmq.Frame:
        """The current snapshot as one ZeroMQ buffer that every reply holding it shares: a hello storm from
        clients that never read leaves one copy queued, not one per hello. Other replies are small."""
        if reply is not self.history.cached_snapshot:
            return reply
        if self._snapshot_frame is None or self._snapshot_frame[0] is not reply:
            self._snapshot_frame = (reply, zmq.Frame(reply, copy=True))  # owned by ZeroMQ: no pyzmq gc thread
        return self._snapshot_frame[1]

    def _trim(self) -> None:
        """After a burst of requests or subscriptions, once it is over, give the memory that their messages used
        back to the system. glibc keeps freed memory in its arenas, and a flood's many small messages, freed in
        another order than allocated, leave it fragmented: without this the trainer's RSS stays at the flood's
        peak for good. Rare (once a burst) and on this thread, never in the training loop."""
        if self._requests < TRIM_AFTER_REQUESTS or time.monotonic() - self._last_request < TRIM_QUIET_SECONDS:
            return
        self._requests = 0
        if _MALLOC_TRIM is not None:
            _MALLOC_TRIM(0)

    def _answer(self, body: bytes) -> bytes:
        if len(body) > MAX_REQUEST_BYTES:
            return Error(reason=f"request larger than {MAX_REQUEST_BYTES} bytes").encode()
        try:
            request = decode_request(body)
        except ProtocolError as exc:
            return Error(reason=str(exc)).encode()
        sent = getattr(request, "time", None)  # commands have their own window, and their refusals are told (_command)
        if (not isinstance(request, CommandRequest) and isinstance(sent, (int, float)) and not isinstance(sent, bool)
                and time.time() - sent > REQUEST_DEADLINE_SECONDS):
            self._expired += 1
            return b""  # its client has given up waiting: no answer, no work (see _answer_one)
        if isinstance(request, Hello):
            return self.history.snapshot(self.dropped)
        if isinstance(request, Replay):
            return self._replay(request)
        assert isinstance(request, CommandRequest)
        return self._command(request).encode()

    def _replay(self, request: Replay) -> bytes:
        if request.after_seq < 0 or request.limit < 1:
            return Error(reason="replay needs integer after_seq >= 0 and limit >= 1").encode()
        upto = self.history.last_seq
        texts, more = self.pages.page(request.after_seq, min(request.limit, REPLAY_MAX), upto, REPLAY_MAX_BYTES)
        return EventsPage.encode_parts(texts, upto, more)

    def _command(self, request: CommandRequest) -> Ack:
        given_id, command, after_epoch = request.id, request.command, request.after_epoch
        command_id = given_id if isinstance(given_id, str) and 0 < len(given_id) <= 64 else uuid.uuid4().hex[:12]
        name = command if isinstance(command, str) and len(command) <= 32 else _short(command)
        by = request.by[:80] if isinstance(request.by, str) else ""
        value = "" if request.value is None else request.value if isinstance(request.value, str) and len(request.value) <= 32 \
            else _short(request.value)
        refused = self.verifier.check(request)  # signed with the token, fresh, never seen: see telemetry/auth.py
        if refused:
            return self._refuse(command_id, name, refused, after_epoch)
        if command not in COMMANDS:
            return self._refuse(command_id, name, f"unknown command {name}; expected {', '.join(COMMANDS)}", after_epoch)
        if not isinstance(after_epoch, bool):
            return self._refuse(command_id, name, "after_epoch must be true or false", False)
        try:  # a steering value is checked here, so that the training thread never meets a bad one
            steering.check(command, request.value) if command in steering.COMMANDS else None
        except steering.SteerError as exc:
            return self._refuse(command_id, name, exc.message, after_epoch, value=value, by=by)
        if self.history.state != "running":
            return self._refuse(command_id, name, f"the run has ended ({self.history.state})", after_epoch)
        if self.control is None:
            return self._refuse(command_id, name, "this run takes no commands", after_epoch)
        self.control.request(command, id=command_id, after_epoch=after_epoch, source="request", value=value or None, by=by)
        self._log_event(Command(id=command_id, command=command, status="accepted", after_epoch=after_epoch,
                                value=value, by=by))
        return Ack(id=command_id, status="accepted")

    def _refuse(self, command_id: str, command: str, reason: str, after_epoch: Any, value: str = "", by: str = "") -> Ack:
        now = time.monotonic()
        while self._refusals and self._refusals[0] < now - 60:
            self._refusals.popleft()
        if len(self._refusals) < REFUSAL_EVENTS_PER_MINUTE:
            self._refusals.append(now)
            self._log_event(Command(id=command_id, command=command, status="refused", reason=reason,
                                    after_epoch=after_epoch is True, value=value, by=by))
        else:
            self._unlogged_refusals += 1
        return Ack(id=command_id, status="refused", reason=reason)

    def _report(self) -> None:
        """Now and then, say in the log what the stream could not carry."""
        now = time.monotonic()
        if now < self._next_drop_report:
            return
        dropped, refused, expired = self.dropped - self._reported_dropped, self._unlogged_refusals, self._expired
        if expired:
            self._expired = 0
            self._log_event(Log(level="warning", message=f"telemetry: {expired} requests were dropped unanswered: older "
                                f"than {REQUEST_DEADLINE_SECONDS:g} s when their turn came (a flood, or a slow link)"))
        if dropped:
            self._reported_dropped += dropped
            self._log_event(Log(level="warning", message=f"telemetry: {dropped} events were not streamed (publisher "
                                "queue full); the event log has them and clients fetch them with replay"))
        if refused:  # during a flood too, every DROP_REPORT_SECONDS: the count is what tells of an attack
            self._unlogged_refusals = 0
            self._log_event(Log(level="warning", message=f"telemetry: {refused} more commands were refused "
                                "(too many to log one by one)"))
        self._next_drop_report = now + DROP_REPORT_SECONDS

    def _log_event(self, event: Event) -> None:
        if self._emit is None:
            return
        try:
            self._emit(event)
        except Exception:  # noqa: BLE001 - a failing log sink must not stop the publisher
            pass


def _find_malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None elsewhere (musl, macOS: nothing to trim the same way)."""
    try:
        import ctypes

        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _find_malloc_trim()


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 32 else text[:29] + "..."
