"""The client side of a run's telemetry: watch the stream, ask for a snapshot, send commands.

No torch here: the dashboard and `scorch-ctl` use it. Every call has a timeout
and a lost reply never wedges the client: each request goes out on a fresh
DEALER socket that is closed (linger 0) when the answer comes or the time is
up, so a late reply or a request queued for a dead run is simply discarded.

Late join without gaps: call `subscribe()` first (it waits for the
publisher's welcome heartbeat, so the subscription is live), then `hello()`.
`recv()` returns stream events in `seq` order after the snapshot's
`last_seq`, drops duplicates, and fills any hole (events dropped at a
high-water mark, or lost at the tail: heartbeats carry the newest seq) from
the run's event log with `replay` requests. `replay_all()` fetches the exact history up to the
snapshot for a view that needs every event, not the downsampled charts.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import uuid
from collections import deque

import zmq

from scorch.errors import MessageError
from scorch.telemetry.auth import sign
from scorch.telemetry.protocol import (
    HEARTBEAT,
    MAX_REQUEST_BYTES,
    Ack,
    CommandRequest,
    Error,
    Event,
    EventsPage,
    Heartbeat,
    Hello,
    M,
    Message,
    ProtocolError,
    Replay,
    Snapshot,
    decode,
    decode_reply,
)

__all__ = ["ClientError", "RunClient", "Snapshot", "read_run_info", "read_token"]

REPLAY_PAGE = 2000  # events per replay request; the publisher caps it too
FILL_TRIES = 4  # replays asked for one hole before it is counted in `gaps`
FILL_RETRY_SECONDS = 0.05  # the wait before the next, growing: the writer finishes a line in microseconds


class ClientError(MessageError):
    """The run could not be reached or answered nonsense; `message` is for the user."""


def who(tool: str = "") -> str:
    """user@host (and the tool): the `by` of a command, as its `command` events tell it."""
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}" + (f" ({tool})" if tool else "")


class RunClient:
    """A connection to one run's publisher (PUB endpoint) and control socket (ROUTER endpoint)."""

    def __init__(self, control: str, publish: str, token: str | None = None, server_key: bytes | None = None,
                 timeout: float = 3.0, client_keys: tuple[bytes, bytes] | None = None) -> None:
        self.control = control
        self.publish = publish
        self.token = token
        self.timeout = timeout
        self.server_key = server_key
        if server_key is not None and client_keys is None:
            client_keys = zmq.curve_keypair()  # ad hoc: the server accepts any CURVE client unless told otherwise
        self._client_keys = client_keys
        self._context = zmq.Context()
        self._sub: zmq.Socket | None = None
        self._pending: deque[Event] = deque()
        self._early: deque[list[bytes]] = deque()  # stream messages read while subscribing
        self.last_heartbeat: float | None = None  # time.monotonic() of the last heartbeat: is the run alive?
        self.heartbeat: Heartbeat | None = None  # the last heartbeat
        # The newest seq handed to the caller (or covered by a snapshot): the receiving side's one record of
        # what it has seen. A reconnecting caller hands it to its next client (LiveSource does).
        self.last_seq: int | None = None
        self.gaps = 0  # holes recv() could not fill

    @classmethod
    def from_run_dir(cls, run_dir: str, token: str | None = None, timeout: float = 3.0,
                     client_keys: tuple[bytes, bytes] | None = None) -> RunClient:
        """A client for the run in `run_dir`: endpoints from run.json, the token from .token.

        Without a readable .token (and no `token` given) the client can watch but not command.
        `client_keys` (public, secret) matter only for a CURVE run that admits listed clients only.
        """
        info = read_run_info(run_dir)
        telemetry = info.get("telemetry")
        if not isinstance(telemetry, dict) or not telemetry.get("control") or not telemetry.get("publish"):
            raise ClientError(f"{os.path.join(run_dir, 'run.json')} has no telemetry endpoints "
                              "(the run was started with --no-telemetry, or has not started yet)")
        if token is None:
            token = read_token(run_dir)
        key = telemetry.get("curve_server_key")
        return cls(str(telemetry["control"]), str(telemetry["publish"]), token=token,
                   server_key=key.encode() if isinstance(key, str) and key else None, timeout=timeout,
                   client_keys=client_keys)

    # -- sockets ----------------------------------------------------------------------------

    def _secure(self, sock: zmq.Socket) -> None:
        sock.setsockopt(zmq.LINGER, 0)
        if self.server_key is not None and self._client_keys is not None:
            sock.curve_serverkey = self.server_key
            sock.curve_publickey, sock.curve_secretkey = self._client_keys

    def subscribe(self, wait: bool = True) -> bool:
        """Connect to the stream (all event types). Call before `hello` so no event falls in between.

        With `wait`, return once the publisher has seen the subscription (its
        welcome heartbeat arrived), at most `timeout` seconds; True if it did.
        """
        if self._sub is None:
            sub = self._context.socket(zmq.SUB)
            self._secure(sub)
            sub.setsockopt(zmq.RCVHWM, 100_000)
            sub.setsockopt(zmq.SUBSCRIBE, b"")
            sub.connect(self.publish)
            self._sub = sub
        if not wait or self.last_heartbeat is not None or self._early:
            return self.last_heartbeat is not None or bool(self._early)
        deadline = time.monotonic() + self.timeout
        while self._sub.poll(max(0, int((deadline - time.monotonic()) * 1000)), zmq.POLLIN):
            frames = self._sub.recv_multipart()
            if frames[0] == HEARTBEAT.encode():
                self._heartbeat(frames[-1], fill=False)
            else:
                self._early.append(frames)
            return True
        return False

    def request(self, message: Message, expected: type[M]) -> M | Error:
        """One request/reply on the control socket: the `expected` reply, or the Error the run answered;
        ClientError on timeout or a malformed reply."""
        timeout = self.timeout
        if isinstance(message, (Hello, Replay)) and message.time is None:
            # Stamped: a run that only gets to it after its deadline drops it unanswered (we will have given up).
            message = dataclasses.replace(message, time=time.time())
        payload = message.encode()
        if len(payload) > MAX_REQUEST_BYTES:
            raise ClientError(f"request of {len(payload)} bytes is larger than the {MAX_REQUEST_BYTES} allowed")
        sock = self._context.socket(zmq.DEALER)
        try:
            self._secure(sock)
            sock.connect(self.control)
            sock.send(payload, zmq.NOBLOCK)
            if not sock.poll(int(timeout * 1000), zmq.POLLIN):
                raise ClientError(f"no answer from the run at {self.control} within {timeout:g} s "
                                  "(is it still running? is an SSH tunnel needed?)")
            frames = sock.recv_multipart()
        except zmq.ZMQError as exc:
            raise ClientError(f"cannot reach the run at {self.control}: {exc}") from None
        finally:
            sock.close(linger=0)
        try:
            return decode_reply(frames[-1], expected)
        except ProtocolError as exc:
            raise ClientError(f"the run at {self.control} sent a malformed {expected.op} reply: {exc}") from None

    # -- requests ---------------------------------------------------------------------------

    def hello(self, newer_only: bool = False) -> Snapshot:
        """The run so far. After this, `recv` yields only events newer than `last_seq`.

        `newer_only`: only the history newer than what this client has seen (a reconnect, a quiet check)."""
        reply = self.request(Hello(), Snapshot)
        if isinstance(reply, Error):
            raise ClientError(f"the run refused hello: {reply.reason}")
        seen = self.last_seq
        if newer_only and seen is not None:
            reply = dataclasses.replace(reply, history=[e for e in reply.history if e.seq > seen])
        self.last_seq = max(seen or 0, reply.last_seq) if newer_only else reply.last_seq
        self._pending.clear()
        return reply

    def replay(self, after_seq: int = 0, limit: int = REPLAY_PAGE) -> tuple[list[Event], int, bool]:
        """Events with seq > after_seq from the run's event log, one page: (events, last_seq, more)."""
        reply = self.request(Replay(after_seq=after_seq, limit=limit), EventsPage)
        if isinstance(reply, Error):
            raise ClientError(f"the run refused replay: {reply.reason}")
        return reply.events, reply.last_seq, reply.more

    def replay_all(self, after_seq: int = 0, upto_seq: int | None = None) -> list[Event]:
        """Every logged event with after_seq < seq <= upto_seq (default: the newest), in order."""
        events: list[Event] = []
        cursor = after_seq
        while True:
            page, last, more = self.replay(cursor, REPLAY_PAGE)
            for event in page:
                if upto_seq is not None and event.seq > upto_seq:
                    return events
                events.append(event)
                cursor = event.seq
            if not more or not page:
                return events

    def command(self, command: str, after_epoch: bool = False, value: str | None = None, tool: str = "") -> Ack:
        """Ask the run to `checkpoint`, `stop` or steer (scorch/steering.py: `value` as typed); its Ack (status
        accepted or refused, reason, id). The request says who sends it: user@host and `tool`."""
        request = CommandRequest(command=command, after_epoch=bool(after_epoch), value=value, by=who(tool))
        # Signed with the token (which stays here), with a fresh id and the time: see telemetry/auth.py.
        request = sign(request, self.token) if self.token is not None else dataclasses.replace(request, id=uuid.uuid4().hex[:12])
        reply = self.request(request, Ack)
        if isinstance(reply, Error):
            return Ack(id=request.id, status="refused", reason=reply.reason or "malformed request")
        return dataclasses.replace(reply, id=reply.id or request.id)

    # -- the stream -------------------------------------------------------------------------

    def recv(self, timeout: float) -> Event | None:
        """The next stream event in seq order (holes filled, duplicates dropped), None on timeout.

        Unknown event types and malformed messages are skipped; heartbeats are
        taken in (`last_heartbeat`, `heartbeat`) and reveal lost events at the tail.
        """
        if self._sub is None:
            self.subscribe(wait=False)
        assert self._sub is not None
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            if self._pending:
                return self._take()
            if self._early:
                frames = self._early.popleft()
            elif self._sub.poll(max(0, int((deadline - time.monotonic()) * 1000)), zmq.POLLIN):
                frames = self._sub.recv_multipart()
            else:
                return None
            if frames[0] == HEARTBEAT.encode():
                self._heartbeat(frames[-1], fill=True)
                continue
            try:
                event = decode(frames[-1])
            except ProtocolError:
                continue
            if event is None:
                continue
            if self.last_seq is not None:
                if event.seq <= self.last_seq:
                    continue  # already covered by the snapshot or a replay
                if event.seq > self.last_seq + 1:
                    self._fill(self.last_seq, event.seq - 1)
            self._pending.append(event)

    def _heartbeat(self, body: bytes, fill: bool) -> None:
        try:
            beat = Heartbeat.decode(body)
        except ProtocolError:
            return
        self.last_heartbeat = time.monotonic()
        self.heartbeat = beat
        if fill and self.last_seq is not None and beat.last_seq > self.last_seq:
            self._fill(self.last_seq, beat.last_seq)

    def _take(self) -> Event:
        event = self._pending.popleft()
        self.last_seq = event.seq if self.last_seq is None else max(self.last_seq, event.seq)
        return event

    def _fill(self, after_seq: int, upto_seq: int) -> None:
        """Queue the logged events after_seq < seq <= upto_seq. A replay can stop short of upto_seq with no error:
        the run's reader stops at a line the writer has not finished (the stream is ahead of the file by a
        write), so a short answer is asked again from where it stopped, a few times, before the hole is
        counted in `gaps`; events after a hole are still given, in order."""
        cursor = after_seq
        for attempt in range(FILL_TRIES):
            try:
                found = self.replay_all(cursor, upto_seq)
            except ClientError:
                break
            for event in found:
                if cursor < event.seq <= upto_seq:
                    self._pending.append(event)
                    cursor = event.seq
            if cursor >= upto_seq:
                return
            time.sleep(FILL_RETRY_SECONDS * (attempt + 1))
        self.gaps += 1

    def close(self) -> None:
        """Close every socket (linger 0); safe to call twice."""
        if self._sub is not None:
            self._sub.close(linger=0)
            self._sub = None
        if not self._context.closed:
            self._context.term()

    def __enter__(self) -> RunClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_run_info(run_dir: str) -> dict:
    """run.json of `run_dir` as a dict; ClientError naming the file when missing or unreadable."""
    path = os.path.join(run_dir, "run.json")
    try:
        with open(path) as fh:
            info = json.load(fh)
    except FileNotFoundError:
        raise ClientError(f"{path} not found: is {run_dir} a scorch run folder?") from None
    except (OSError, ValueError) as exc:
        raise ClientError(f"{path} cannot be read: {exc}") from None
    if not isinstance(info, dict):
        raise ClientError(f"{path} is not a JSON object")
    return info


def read_token(run_dir: str) -> str | None:
    """The control token in RUN_DIR/.token, None if there is none or it is not ours to read."""
    try:
        with open(os.path.join(run_dir, ".token")) as fh:
            return fh.read().strip() or None
    except OSError:
        return None
