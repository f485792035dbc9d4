"""Where the dashboard's data comes from: a live run or a saved run.

The app receives a `Source` and never builds one (memray's `TUIApp(reader)`):
the command line picks live or replay, tests hand in a scripted one
(tests/helpers/tui.py). A
source has one small surface:

- `read(timeout)` -> a batch of items (events, connection changes, command
  acknowledgements, run.json facts); called only by the `SourceReader` thread,
  so a source may block and may use sockets that are not thread-safe;
- `send(command, after_epoch)` -> queue a command from the UI thread; its
  acknowledgement comes back later through `read`;
- `commands_off` -> "" when commands can be sent, otherwise the reason they
  cannot (shown on screen).

A lost connection is an item (`ConnectionChanged`), never an exception: the
screen shows it and the source keeps trying.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from scorch import events_log
from scorch.errors import MessageError
from scorch.telemetry.protocol import Event, Heartbeat, Log, RunEnded, RunStarted

if TYPE_CHECKING:
    from scorch.telemetry.client import RunClient

# Connection states, as shown on screen.
# DEAD: the run cannot be running any more (its process is gone here, or no heartbeat for DEAD_AFTER from afar).
# TUNNEL_LOST: the SSH tunnel to the run's host went (not the run); it is being reopened.
CONNECTING, LIVE, RECONNECTING, ENDED, REPLAY, FOLLOWING, DEAD, ERROR, TUNNEL_LOST = (
    "connecting", "live", "reconnecting", "ended", "replay", "following", "dead", "error", "tunnel_lost")

CLIENT_TIMEOUT = 2.0  # seconds a request may take: the reader thread must stay quick to stop
PROBE_AFTER = 1.5  # a heartbeat this late (they come every second): ask whether the run's process is still there
PROBE_EVERY = 1.0  # and at most this often while it stays late
# From another machine only the heartbeat can tell: none for this long and the run is called dead. Long enough
# for a busy network or a long GIL hold, short enough that a person watching is not misled for a minute.
DEAD_AFTER = 15.0
MAX_BATCH = 5000  # items per read: a huge replay arrives in slices and the screen stays responsive
FIRST_BATCH = 500  # a replay's first slice is small, so the run is on screen within a moment of opening it


@dataclass(frozen=True)
class ConnectionChanged:
    """The link to the run changed: state is one of the connection states above."""

    state: str
    detail: str = ""


@dataclass(frozen=True)
class CommandAck:
    """The run's answer to a command we sent: accepted, refused, or failed (never reached it)."""

    command: str
    status: str
    reason: str = ""
    id: str = ""
    after_epoch: bool = False
    value: str | None = None  # a steering command's (lr x0.5)


@dataclass(frozen=True)
class HeartbeatSeen:
    """A heartbeat from the run: seconds since rank 0's last step at the time it was sent, what rank 0 was doing,
    and when it arrived here (`at`, on the dashboard's clock: the sender's clock may be skewed)."""

    progress_age: float | None
    phase: str
    at: float


@dataclass(frozen=True)
class Loading:
    """A replay is reading its event log: `done` bytes of `total` (the log's size when it was opened).
    The last one has done == total: the history is all there (a followed log goes on growing after that)."""

    done: int
    total: int


@dataclass(frozen=True)
class RunInfo:
    """Facts about the run from run.json or a snapshot (name, state, hosts, started, ended...)."""

    info: dict = field(default_factory=dict)


Item = Event | ConnectionChanged | CommandAck | RunInfo | HeartbeatSeen | Loading


class SourceError(MessageError):
    """The source cannot be opened at all (not a run folder, bad endpoint); `message` is for the user."""


class Source:
    """The surface the app uses. Subclasses implement `_read` and `_command`."""

    label = ""  # where the data comes from (a run folder, an endpoint), shown on screen
    via = ""  # how the run is reached when not directly ("ssh me@node"), shown in the header
    commands_off = ""  # why commands cannot be sent; "" when they can

    def __init__(self) -> None:
        self._commands: queue.SimpleQueue[tuple[str, bool, str | None]] = queue.SimpleQueue()

    def send(self, command: str, after_epoch: bool = False, value: str | None = None) -> None:
        """Queue `command` (checkpoint|stop, or steering with its `value`: scorch/steering.py); any thread. The ack
        arrives through `read`."""
        self._commands.put((command, after_epoch, value))

    def read(self, timeout: float) -> list[Item]:
        """Pending acks first, then whatever arrived within `timeout` seconds."""
        items: list[Item] = []
        while True:
            try:
                command, after_epoch, value = self._commands.get_nowait()
            except queue.Empty:
                break
            if self.commands_off:
                items.append(CommandAck(command, "refused", self.commands_off, after_epoch=after_epoch, value=value))
            else:
                items.append(self._command(command, after_epoch, value))
        items.extend(self._read(0.0 if items else timeout))
        return items

    def _read(self, timeout: float) -> list[Item]:
        raise NotImplementedError

    def _command(self, command: str, after_epoch: bool, value: str | None = None) -> CommandAck:
        return CommandAck(command, "refused", "this source takes no commands", after_epoch=after_epoch, value=value)

    def close(self) -> None:
        """Release sockets and files; called once, by the reader thread, when it stops."""


# -- a saved run -------------------------------------------------------------------------------


class ReplaySource(Source):
    """A run folder read from disk: run.json, then every event in its event log.

    With `follow`, keeps reading lines as they are appended (a run started
    without telemetry can still be watched, read-only) until `run_ended`.
    Lines the log's reader skips or refuses (scorch/events_log.py) are told
    as a warning in the event log, never an error: the good events all show.
    """

    def __init__(self, run_dir: str, follow: bool = False, dead: str = "") -> None:
        super().__init__()
        self.run_dir = os.path.abspath(run_dir)
        self.info_path = os.path.join(self.run_dir, "run.json")
        self.events_path = events_log.path(self.run_dir)
        if not os.path.isdir(self.run_dir):
            raise SourceError(f"{run_dir}: no such folder; give a run folder (it holds run.json and its event log)")
        if not os.path.exists(self.info_path) and not os.path.exists(self.events_path):
            raise SourceError(f"{run_dir} is not a scorch run folder (no run.json or {os.path.basename(self.events_path)} in it)")
        self.follow = follow
        self.dead = dead  # why a run still marked running is replayed: it is dead
        self.label = self.run_dir
        self.commands_off = ("read-only: the run has no telemetry (following its event log)" if follow
                             else f"read-only: the run is dead ({dead})" if dead
                             else "replay: commands go to live runs only")
        self._started = False
        self._reader = events_log.Reader(self.events_path)
        self._size = 0  # the log's size when opened: what "loading" reads through
        self._loaded = False
        self._told = 0  # lines skipped or refused that a warning has told of
        self._done = False
        self._ended = False

    def _read(self, timeout: float) -> list[Item]:
        items: list[Item] = []
        if not self._started:
            self._started = True
            info = read_json(self.info_path)
            if info:
                items.append(RunInfo(info))
            if self.dead:
                items.append(ConnectionChanged(DEAD, self.dead))
            else:
                items.append(ConnectionChanged(FOLLOWING if self.follow else REPLAY, self.events_path))
            try:
                self._size = os.path.getsize(self.events_path)
            except OSError:
                self._size = 0
        if self._done:
            time.sleep(timeout)
            return items
        events = self._reader.events(MAX_BATCH if self._reader.offset else FIRST_BATCH)
        items.extend(events)
        if not self._loaded:  # how far through the history: the header says LOADING n % until it is all read
            self._loaded = self._reader.offset >= self._size or not events
            items.append(Loading(self._size if self._loaded else self._reader.offset, self._size))
        for event in events:  # the last word counts: a run may have ended and been resumed since
            if isinstance(event, (RunEnded, RunStarted)):
                self._ended = isinstance(event, RunEnded)
        if self._reader.skipped + self._reader.refused > self._told:
            self._told = self._reader.skipped + self._reader.refused
            items.append(Log(level="warning", message=self._reader.warning()))  # unnumbered: not the run's own
        waiting = self._reader.torn and self.follow  # a line being written: the rest comes later
        if self.follow and self._ended and not waiting and len(events) < MAX_BATCH:
            self._done = True
            items.append(ConnectionChanged(ENDED, "the run ended"))
        if not events and not self.follow:
            self._done = True  # a finished log: a torn last line is dropped
        if not items:
            time.sleep(timeout)
        return items


# -- a live run --------------------------------------------------------------------------------


class LiveSource(Source):
    """A running job over ZeroMQ: snapshot first, then the stream, reconnecting on its own.

    `connect` builds a fresh `RunClient` (for a run folder it re-reads run.json,
    so a resumed run on new ports is found again). The publisher sends a
    heartbeat every second; when neither events nor heartbeats come for
    `quiet_after` seconds the source asks for a snapshot: an answer means all
    is well (and fills anything missed), no answer means reconnecting.

    Dead or not: `dead` (a run folder on this host) says why the run cannot be
    running ("" if it may be); it is asked when a heartbeat is PROBE_AFTER late,
    so a killed job reads DEAD within a few seconds. From afar (`dead_after`),
    no heartbeat for that long is DEAD. Either way the source keeps looking: a
    resumed run (a new process, new ports in run.json) is followed again.
    Through SSH, `link` says why the tunnel is gone ("" while it is up): then the
    state is TUNNEL_LOST, not the run's fault, and `connect` reopens it.
    """

    def __init__(self, connect: Callable[[], RunClient], label: str, commands_off: str = "",
                 quiet_after: float = 3.0, retry_after: float = 1.0, dead: Callable[[], str] | None = None,
                 dead_after: float | None = None, link: Callable[[], str] | None = None) -> None:
        super().__init__()
        self._connect = connect
        self.label = label
        self.commands_off = commands_off
        self.quiet_after = quiet_after
        self.retry_after = retry_after
        self._why_dead = dead
        self.dead_after = dead_after
        self._link = link
        self._client: RunClient | None = None
        self._state = ""
        self._detail = ""
        self._ever_live = False
        self._ended = False
        self._dead = ""  # why the run is dead, while it is
        self._next_try = 0.0
        self._next_probe = 0.0
        self._heard = 0.0
        self._beat = 0.0  # client.last_heartbeat of the last heartbeat handed out
        self._seen: int | None = None  # the last client's record of what it handed out, for the next one

    @classmethod
    def from_run_dir(cls, run_dir: str, token: str | None = None, client_keys: tuple[bytes, bytes] | None = None,
                     **kwargs: Any) -> LiveSource:
        """Watch the run in `run_dir` (endpoints from its run.json; token from .token unless given).

        Each connection reads run.json and .token afresh: a resumed run has new ports and a new token.
        """
        from scorch.run_folder import why_dead
        from scorch.telemetry.client import RunClient, read_token

        found = token if token is not None else read_token(run_dir)
        off = "" if found else f"read-only: no token (cannot read {os.path.join(run_dir, '.token')}; pass --token-file)"
        info_path = os.path.join(run_dir, "run.json")
        kwargs.setdefault("dead", lambda: why_dead(read_json(info_path), run_dir))
        return cls(lambda: RunClient.from_run_dir(run_dir, token=token, timeout=CLIENT_TIMEOUT, client_keys=client_keys),
                   os.path.abspath(run_dir), off, **kwargs)

    @classmethod
    def from_endpoints(cls, control: str, publish: str, token: str | None, label: str = "",
                       token_hint: str = "pass --token-file", server_key: bytes | None = None,
                       client_keys: tuple[bytes, bytes] | None = None, **kwargs: Any) -> LiveSource:
        """Watch a run at explicit endpoints (an SSH tunnel, or tcp://HOST:PORT)."""
        from scorch.telemetry.client import RunClient

        off = "" if token else f"read-only: no token ({token_hint})"
        kwargs.setdefault("dead_after", DEAD_AFTER)
        return cls(lambda: RunClient(control, publish, token=token, server_key=server_key, timeout=CLIENT_TIMEOUT,
                                     client_keys=client_keys),
                   label or control, off, **kwargs)

    # -- connection ------------------------------------------------------------------------

    def _set(self, items: list[Item], state: str, detail: str = "") -> None:
        if (state, detail) != (self._state, self._detail):
            self._state, self._detail = state, detail
            items.append(ConnectionChanged(state, detail))

    def _drop_client(self) -> None:
        if self._client is not None:
            self._seen = self._client.last_seq
            self._client.close()
            self._client = None

    def _open(self, items: list[Item]) -> None:
        from scorch.telemetry.client import ClientError

        client = None
        try:
            client = self._connect()
            client.last_seq = self._seen  # a reconnect: the new client goes on from what the last one handed out
            client.subscribe(wait=False)  # events before the subscription takes are filled from the log
            snapshot = client.hello(newer_only=True)
        except ClientError as exc:
            if client is not None:
                client.close()
            self._next_try = time.monotonic() + self.retry_after
            self._lost(items, RECONNECTING if self._ever_live else CONNECTING, exc.message)
            return
        self._client = client
        self._ever_live = True
        self._heard = time.monotonic()
        if self.commands_off and getattr(client, "token", None):  # the token appeared (a run that was starting)
            self.commands_off = ""
        self._set(items, LIVE, client.control)
        self._pass_heartbeat(items, client)
        items.append(RunInfo({"state": snapshot.state}))
        self._take(items, snapshot.history)  # run_started among them: the snapshot keeps every one
        if snapshot.state != "running":
            self._end(items)

    def _take(self, items: list[Item], events: list[Event], stream: bool = False) -> None:
        """Events from the client, which hands each out once, in seq order (RunClient.last_seq).

        A `run_ended` from the stream ends the connection; one in a snapshot's
        history may be followed by a resume, so there the snapshot's state decides.
        """
        for event in events:
            items.append(event)
            if stream and isinstance(event, RunEnded):
                self._end(items)
                return

    def _end(self, items: list[Item]) -> None:
        self._ended = True
        self._set(items, ENDED, "the run ended")
        self._drop_client()

    # -- dead or alive ---------------------------------------------------------------------

    def _probe(self, items: list[Item]) -> bool:
        """While heartbeats are late, ask whether the run's process is gone; True while the run is dead."""
        if self._why_dead is None:
            return False
        now = time.monotonic()
        if (self._dead or now - self._heard > PROBE_AFTER) and now >= self._next_probe:
            self._next_probe = now + PROBE_EVERY
            why = self._why_dead()
            if why:
                self._drop_client()
                self._set(items, DEAD, why)
            elif self._dead:
                self._next_try = 0.0  # a new process holds the run (a resume): connect to it now
            self._dead = why
        return bool(self._dead)

    def _lost(self, items: list[Item], state: str, detail: str) -> None:
        """No answer: the tunnel's fault (TUNNEL_LOST), silence for too long from afar (DEAD), else `state`."""
        lost = self._link() if self._link is not None else ""
        if lost:
            self._set(items, TUNNEL_LOST, lost)
        elif not self._silent_too_long(items):
            self._set(items, state, detail)

    def _silent_too_long(self, items: list[Item]) -> bool:
        """From afar: no heartbeat for `dead_after` seconds is DEAD (and the source keeps trying)."""
        if self.dead_after is None or not self._ever_live or time.monotonic() - self._heard <= self.dead_after:
            return False
        self._set(items, DEAD, f"no heartbeat for more than {self.dead_after:.0f} s")
        return True

    def _pass_heartbeat(self, items: list[Item], client: RunClient) -> None:
        """Hand on each new heartbeat's figures (age of the last step, phase), stamped with when it came."""
        seen = getattr(client, "last_heartbeat", None)
        if not seen or seen == self._beat:
            return
        self._beat = seen
        beat = getattr(client, "heartbeat", None)
        age, phase = (beat.progress_age, beat.phase) if isinstance(beat, Heartbeat) else (None, "")
        items.append(HeartbeatSeen(None if age is None else float(age), phase, time.time() - (time.monotonic() - seen)))

    # -- reading ---------------------------------------------------------------------------

    def _read(self, timeout: float) -> list[Item]:
        from scorch.telemetry.client import ClientError

        items: list[Item] = []
        if self._ended:
            time.sleep(timeout)
            return items
        if self._probe(items):
            time.sleep(timeout)
            return items
        if self._client is not None and self._link is not None and time.monotonic() - self._heard > PROBE_AFTER:
            lost = self._link()
            if lost:  # the tunnel died under a live connection: say so, and reopen it at once
                self._drop_client()
                self._set(items, TUNNEL_LOST, lost)
                self._next_try = 0.0
        if self._client is None:
            wait = self._next_try - time.monotonic()
            if wait > 0:
                time.sleep(min(wait, timeout))
                return items
            self._open(items)
            return items
        client = self._client
        deadline = time.monotonic() + timeout
        try:
            while len(items) < MAX_BATCH and not self._ended:
                event = client.recv(max(0.0, deadline - time.monotonic()))
                if event is None:
                    break
                self._heard = time.monotonic()
                self._take(items, [event], stream=True)
            self._heard = max(self._heard, getattr(client, "last_heartbeat", None) or 0.0)
            self._pass_heartbeat(items, client)
            if not self._ended and time.monotonic() - self._heard > self.quiet_after and not self._probe(items):
                snapshot = client.hello(newer_only=True)  # quiet: is the run still there? (and catch up on anything missed)
                self._heard = time.monotonic()
                self._take(items, snapshot.history)
                if snapshot.state != "running" and not self._ended:
                    items.append(RunInfo({"state": snapshot.state}))
                    self._end(items)
        except ClientError as exc:
            self._drop_client()
            self._next_try = time.monotonic() + self.retry_after
            self._lost(items, RECONNECTING, exc.message)
        return items

    def _command(self, command: str, after_epoch: bool, value: str | None = None) -> CommandAck:
        from scorch.telemetry.client import ClientError

        if self._client is None:
            why = "the run has ended" if self._ended else "not connected to the run right now"
            return CommandAck(command, "failed", why, after_epoch=after_epoch, value=value)
        try:
            ack = self._client.command(command, after_epoch=after_epoch, value=value, tool="scorch-tui")
        except ClientError as exc:
            return CommandAck(command, "failed", exc.message, after_epoch=after_epoch, value=value)
        return CommandAck(command, ack.status, ack.reason, ack.id, after_epoch, value)

    def close(self) -> None:
        self._drop_client()


# -- a run that has not started yet -------------------------------------------------------------


class WaitingSource(Source):
    """`scorch-tui --wait RUN_DIR`: says the run has not started, then becomes the run's own source.

    The run counts as started once its run.json holds the run's config (the
    trainer writes it before the endpoints, and the live source waits for
    those; the event log may exist earlier still, so it proves nothing), or says
    the run ended. `open_source` builds the real source then (live, followed or
    replayed).
    """

    def __init__(self, run_dir: str, open_source: Callable[[], Source], poll: float = 0.5) -> None:
        super().__init__()
        self.run_dir = os.path.abspath(run_dir)
        self.label = self.run_dir
        self._open_source = open_source
        self._poll = poll
        self._inner: Source | None = None
        self._said = False

    @property
    def commands_off(self) -> str:  # type: ignore[override]
        return self._inner.commands_off if self._inner is not None else "waiting for the run to start"

    def send(self, command: str, after_epoch: bool = False, value: str | None = None) -> None:
        if self._inner is not None:
            self._inner.send(command, after_epoch, value)
        else:
            super().send(command, after_epoch, value)

    def started(self) -> bool:
        info = read_json(os.path.join(self.run_dir, "run.json"))
        return bool(info.get("config") or info.get("telemetry") or info.get("state", "running") != "running")

    def read(self, timeout: float) -> list[Item]:
        """Commands sent while waiting are refused with the reason (by `Source.read`); then the run's own items."""
        return self._inner.read(timeout) if self._inner is not None else super().read(timeout)

    def _read(self, timeout: float) -> list[Item]:
        items: list[Item] = []
        if not self.started():
            if not self._said:
                self._said = True
                items.append(ConnectionChanged(CONNECTING, f"waiting for {self.run_dir}: the run has not started yet"))
            time.sleep(min(timeout, self._poll))
            return items
        try:
            self._inner = self._open_source()
        except SourceError as exc:
            self._said = False
            time.sleep(min(timeout, self._poll))
            return [ConnectionChanged(ERROR, exc.message)]
        return self._inner.read(timeout)

    def close(self) -> None:
        if self._inner is not None:
            self._inner.close()


# -- the thread between a source and the app ---------------------------------------------------


class SourceReader:
    """Reads a source on its own thread and hands each batch to `deliver` (the app posts it as a message).

    The thread owns the source: it is the only caller of `read` and it closes the
    source when stopped. A source that raises is reported as an error state.

    With `paced`, a batch is handed over only once the consumer has `taken()` the one
    before: a replay of a long log then waits for the screen instead of piling up
    batches in front of the keys (the next batch is read meanwhile).
    """

    def __init__(self, source: Source, deliver: Callable[[list[Item]], None], poll: float = 0.05,
                 paced: bool = False) -> None:
        self.source = source
        self.deliver = deliver
        self.poll = poll
        self.paced = paced
        self._room = threading.Event()  # set: the consumer has taken the last batch handed over
        self._room.set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scorch-tui-reader", daemon=True)

    def start(self) -> None:
        if not self._stop.is_set() and not self._thread.is_alive():  # a screen gone before its first frame: no thread
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the thread to finish and wait for it (it closes the source)."""
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def taken(self) -> None:
        """The consumer has applied the last batch (any thread): the next may come."""
        self._room.set()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    items = self.source.read(self.poll)
                except Exception as exc:  # noqa: BLE001 - shown on screen; the dashboard stays up
                    self.deliver([ConnectionChanged(ERROR, f"{type(exc).__name__}: {exc}")])
                    break
                if items and self._wait_for_room():
                    self.deliver(items)
        finally:
            self.source.close()

    def _wait_for_room(self) -> bool:
        """Paced: wait until the last batch was taken; False when asked to stop meanwhile."""
        if self.paced:
            while not self._room.wait(0.1):
                if self._stop.is_set():
                    return False
            self._room.clear()
        return True


def read_json(path: str) -> dict:
    """A JSON object from `path`, {} if it is missing or unreadable (run.json mid-rewrite is atomic)."""
    try:
        with open(path) as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
