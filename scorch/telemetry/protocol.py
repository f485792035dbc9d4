"""Every event a run emits, and how it travels. No torch here: the dashboard imports this.

One event type, one frozen dataclass. The trainer builds them, the JSONL log
writes them, the publisher sends them and the dashboard reads them back, all
through `to_json`/`decode` below, so sender and receiver cannot drift apart.

Encoding
    An event is one JSON object: ``{"type": ..., "v": SCHEMA_VERSION, "seq": ...,
    "time": ..., <fields>}``. ``seq`` grows by one per event of a run, starting
    at 1; ``time`` is Unix seconds. In the run's event log (scorch/events_log.py) each object is one line.

Wire (ZeroMQ): every message is a class below with `encode`/`decode`, used by both ends
    PUB socket: multipart ``[type, json]`` (`event_frames`), one message per event.
    Besides events it sends a `Heartbeat` (``["heartbeat", {"type": "heartbeat",
    "v", "time", "last_seq", "state", "progress_age", "phase"}]``) every second and
    at once to each new subscriber: not an event (no ``seq``, not in the event log;
    `decode` skips it), it lets a subscriber know its subscription is live and
    notice lost events at the tail of the stream. ``progress_age`` is the seconds
    since rank 0's last training step or evaluation batch, ``phase`` what rank 0 is
    doing: starting, training, validating, testing, checkpointing, or "waiting
    for other ranks" (progress overdue inside a collective). Both are absent
    from a publisher that has no trainer behind it. Readers call a run STALLED
    when ``progress_age`` passes max(10 s, 5x the usual step time).
    ROUTER socket: a client (DEALER/REQ) sends one JSON request frame and gets
    one JSON reply frame (`decode_request` on the run's side, `decode_reply` on
    the client's):

    - `Hello` ``{"op": "hello"}`` -> `Snapshot` ``{"op": "snapshot", "run":
      {...run_started...}, "history": [event, ...], "last_seq": N, "state":
      "running"|..., "dropped": D}``. The client applies the history, then only
      stream events with ``seq > last_seq``.
    - `CommandRequest` ``{"op": "command", "command": "checkpoint"|"stop"|"pause"|"resume"|"lr"|"patience"|
      "checkpoint-every", "id": "...", "time": T, "after_epoch": false, "value": "x0.5", "by": "ann@laptop
      scorch-ctl", "mac": "..."}`` (``value`` for lr/patience/checkpoint-every, as typed: scorch/steering.py;
      ``value`` and ``by`` absent when empty) -> `Ack` ``{"op": "ack",
      "id": ..., "status": "accepted"|"refused", "reason": "..."}``. Accepted and
      refused commands are logged as ``command`` events; when the trainer
      acts on one, a ``command`` event with status ``applied`` follows. ``mac``
      is an HMAC-SHA256 keyed by the run's token (which never crosses the wire);
      ``id`` is fresh and ``time`` recent: see scorch/telemetry/auth.py.
    - `Replay` ``{"op": "replay", "after_seq": N, "limit": K}`` -> `EventsPage`
      ``{"op": "events", "events": [event, ...], "last_seq": M, "more": bool}``:
      the events of the event log with ``N < seq <= M`` (at most K, at most 5000),
      oldest first; ask again from the last one while ``more``. The snapshot keeps
      only the step events charts need (downsampled for long runs) and the
      latest ``system`` event; ``replay`` gives the exact log, and fills any
      hole a subscriber finds in the stream's seq (joined late, dropped at a
      high-water mark).
    - Anything else (not JSON, not an object, unknown op, over
      MAX_REQUEST_BYTES) -> `Error` ``{"op": "error", "status": "refused", "reason": "..."}``.

    Request and reply are the last frame; a DEALER sends ``[json]``, a REQ
    ``["", json]``, and the reply comes back with the same envelope.
    ``--bind HOST:PORT`` puts PUB on PORT and ROUTER on PORT+1 (port 0: two
    free ports); run.json records both as ``{"telemetry": {"publish": ...,
    "control": ..., "curve_server_key": ...}}``, the key only with CURVE.

Readers ignore unknown fields and skip unknown event types (`decode` returns
None); anything malformed raises `ProtocolError` and nothing else.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

SCHEMA_VERSION = 1

# Largest request the control socket accepts; anything bigger is refused unread.
MAX_REQUEST_BYTES = 64 * 1024

COMMANDS = ("checkpoint", "stop", "pause", "resume", "lr", "patience", "checkpoint-every")  # see scorch/steering.py
HEARTBEAT = "heartbeat"  # PUB message type that is not an event (see Wire above)


class ProtocolError(ValueError):
    """Input that is not a valid scorch message (bad JSON, wrong field types)."""


@dataclass(frozen=True)
class Event:
    """Fields every event carries. `seq` and `time` are filled in by the emitter."""

    type: ClassVar[str] = "event"
    seq: int = 0
    time: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        data = {"type": self.type, "v": SCHEMA_VERSION}
        for f in dataclasses.fields(self):
            data[f.name] = getattr(self, f.name)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), allow_nan=True, default=_jsonable)

    def stamped(self, seq: int, when: float | None = None) -> Event:
        """A copy numbered `seq` at `when` (now by default)."""
        return dataclasses.replace(self, seq=seq, time=time.time() if when is None else when)


@dataclass(frozen=True)
class RunStarted(Event):
    """The run began (or resumed): what it is and how big it is."""

    type: ClassVar[str] = "run_started"
    name: str = ""
    run_dir: str = ""
    model: str = ""
    dataset: str = ""
    epochs: int = 0
    start_epoch: int = 0
    steps_per_epoch: int = 0
    batch_size: int = 0
    world_size: int = 1
    hosts: list = field(default_factory=list)
    device: str = "cpu"
    backend: str = "none"
    pid: int = 0
    resumed_from: str | None = None
    config: dict = field(default_factory=dict)
    steering: dict = field(default_factory=dict)  # a resumed run's steering (scorch/steering.py), kept by its checkpoint


@dataclass(frozen=True)
class Step(Event):
    """Training progress, throttled to a few per second (not every step).

    `loss` is the mean training loss over the steps since the previous `step`
    event; `rate` is samples per second over the same window, all ranks together.
    """

    type: ClassVar[str] = "step"
    epoch: int = 0
    step: int = 0  # global optimizer step, counted from the start of the run
    epoch_step: int = 0  # steps done in this epoch
    steps_in_epoch: int = 0
    loss: float = 0.0
    rate: float = 0.0
    lr: float = 0.0
    grad_norm: float | None = None  # total norm of the last step's gradients before clipping (with --clip-grad-norm)
    scalars: dict = field(default_factory=dict)  # the Socket's own per-step values (criterion's dict), window means


@dataclass(frozen=True)
class EpochEnd(Event):
    """An epoch finished: mean train loss, validation metrics (`main` among them)."""

    type: ClassVar[str] = "epoch_end"
    epoch: int = 0
    step: int = 0
    train_loss: float = 0.0
    metrics: dict = field(default_factory=dict)
    train_metrics: dict = field(default_factory=dict)
    best: dict = field(default_factory=dict)  # {"value": float, "epoch": int} for the monitored metric
    lr: float = 0.0
    duration: float = 0.0


@dataclass(frozen=True)
class System(Event):
    """Per-rank resource use. Each entry of `ranks` is a dict:

    ``{"rank", "host", "cpu" (percent of one core, this process), "ram"
    (bytes RSS), "ram_total", "host_cpu" (percent, whole host), "host_ram"
    (bytes used, whole host), "step_time" (s), "data_time" (s), "gpus":
    [{"index", "name", "util" (percent), "mem_used", "mem_total" (bytes),
    "temp" (C), "power" (W)}]}``. Missing figures are absent.

    With several ranks the entries come over the per-rank channel
    (scorch/telemetry/ranks.py) and add ``"state"`` (``live`` | ``silent``: no
    report for a few seconds | ``ended`` | ``unreachable``: on another host with
    a loopback-only channel), ``"seen"`` (seconds since its last report, null if
    never), ``"pid"``, ``"step"``, ``"phase"`` (what it is doing) and
    ``"collective_wait"`` (seconds its last agreement waited for the others).
    """

    type: ClassVar[str] = "system"
    ranks: list = field(default_factory=list)


@dataclass(frozen=True)
class CheckpointSaved(Event):
    """A checkpoint file was written atomically. reason: epoch|best|keep|request|signal.

    `epoch` is the epochs completed (the checkpoint's own `epoch` key), `step` the
    optimizer steps done, so a mid-epoch checkpoint reads "after epoch 9, step 409".
    """

    type: ClassVar[str] = "checkpoint_saved"
    path: str = ""
    reason: str = "epoch"
    epoch: int = 0
    step: int = 0


@dataclass(frozen=True)
class Log(Event):
    """A message the user should see (warnings, errors, dropped-event counts)."""

    type: ClassVar[str] = "log"
    level: str = "info"
    message: str = ""
    rank: int = 0  # whose line it is: 0 for rank 0 and the run itself, N for a line rank N sent (per-rank channel)


@dataclass(frozen=True)
class Command(Event):
    """A control command changed state: accepted, applied or refused (with reason). `value`: a steering
    command's, as typed (lr x0.5); `by`: who sent it, as the sender says (user@host and the tool); `steering`: the
    whole steering once one is applied (scorch/steering.py), so a reader needs no arithmetic to show it."""

    type: ClassVar[str] = "command"
    id: str = ""
    command: str = ""
    status: str = "accepted"
    reason: str = ""
    after_epoch: bool = False
    value: str = ""
    by: str = ""
    steering: dict = field(default_factory=dict)  # an applied steering command: the run's steering after it


@dataclass(frozen=True)
class RunEnded(Event):
    """The run is over. status: completed|stopped|early_stopped|preempted|failed."""

    type: ClassVar[str] = "run_ended"
    status: str = "completed"
    reason: str = ""
    epoch: int = 0
    step: int = 0


EVENT_TYPES: dict[str, type[Event]] = {
    cls.type: cls for cls in (RunStarted, Step, EpochEnd, System, CheckpointSaved, Log, Command, RunEnded)
}


def _jsonable(value: Any) -> Any:
    # numpy scalars and 0-d tensors reach here only if a caller forgot to convert.
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_FIELD_CHECKS: dict[str, Callable[[Any], bool]] = {
    "int": _is_int,
    "float": _is_number,
    "str": lambda value: isinstance(value, str),
    "str | None": lambda value: value is None or isinstance(value, str),
    "float | None": lambda value: value is None or _is_number(value),
    "bool": lambda value: isinstance(value, bool),
    "dict": lambda value: isinstance(value, dict),
    "list": lambda value: isinstance(value, list),
}


@functools.cache
def _field_checks(cls: type) -> tuple[tuple[str, str, Callable[[Any], bool]], ...]:
    """(name, declared type, check) of each field of dataclass `cls`, worked out once per class: a replay of a
    long run decodes hundreds of thousands of lines, and `dataclasses.fields` on each was half the time."""
    return tuple((f.name, str(f.type), _FIELD_CHECKS.get(str(f.type), lambda value: True)) for f in dataclasses.fields(cls))


def from_dict(data: Any) -> Event | None:
    """The event in `data`, None for an unknown type; ProtocolError if malformed."""
    if not isinstance(data, dict):
        raise ProtocolError(f"an event is a JSON object, got {type(data).__name__}")
    kind = data.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("event has no 'type' string")
    cls = EVENT_TYPES.get(kind)
    if cls is None:
        return None
    return cls(**_known_fields(cls, data, kind))


def decode(raw: bytes | str) -> Event | None:
    """Parse one JSON event (a JSONL line or a PUB frame); None for unknown types."""
    return from_dict(loads(raw))


def loads(raw: bytes | str) -> Any:
    """json.loads that raises only ProtocolError."""
    try:
        if isinstance(raw, bytes):
            raw = raw.decode("utf-8")
        return json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ProtocolError(f"not valid JSON: {exc}") from None


def event_frames(event: Event, text: str | None = None) -> list[bytes]:
    """The PUB multipart message for `event`: [type, json] (`text`: its JSON, when already made)."""
    return [event.type.encode(), (event.to_json() if text is None else text).encode()]


# -- the wire: requests and replies on the control socket, the heartbeat on the stream ---------------

M = TypeVar("M", bound="Message")


@dataclass(frozen=True)
class Message:
    """One JSON object on the wire, named by its "op". Both ends use these classes: `encode` on one side,
    `from_dict` on the other, which takes the fields it knows (checking their types), ignores the others,
    and raises ProtocolError and nothing else. A new field is a new dataclass field with a default: older
    readers ignore it, newer readers of older senders get the default."""

    op: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"op": self.op}
        for f in dataclasses.fields(self):
            data[f.name] = getattr(self, f.name)
        return data

    def encode(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":"), default=_jsonable).encode()

    @classmethod
    def from_dict(cls: type[M], data: Any) -> M:
        return cls(**_known_fields(cls, data, cls.op))

    @classmethod
    def decode(cls: type[M], raw: bytes | str) -> M:
        return cls.from_dict(loads(raw))


@dataclass(frozen=True)
class Hello(Message):
    """Request: the run so far. Answered with a Snapshot."""

    op: ClassVar[str] = "hello"
    time: Any = None  # Unix seconds when sent: a run that only gets to it REQUEST_DEADLINE_SECONDS later drops it


@dataclass(frozen=True)
class Replay(Message):
    """Request: the logged events with after_seq < seq, at most `limit`, oldest first. Answered with EventsPage."""

    op: ClassVar[str] = "replay"
    after_seq: int = 0
    limit: int = 5000
    time: Any = None  # as Hello's


@dataclass(frozen=True)
class CommandRequest(Message):
    """Request: `command` (checkpoint|stop), signed with the run's token (scorch/telemetry/auth.py). Answered
    with an Ack.

    Its fields are taken as sent (any JSON): the publisher checks them one by one, in a fixed order,
    so that a refusal names the first thing wrong. `token` is what clients before signing sent in clear:
    a request that carries it is refused."""

    op: ClassVar[str] = "command"
    command: Any = None
    id: Any = None
    token: Any = None
    after_epoch: Any = False
    time: Any = None  # Unix seconds when it was signed
    mac: Any = None  # HMAC-SHA256 (hex) of the other fields but token, keyed by the token
    value: Any = None  # lr/patience/checkpoint-every: the value as typed (scorch/steering.py)
    by: Any = None  # who sends it: user@host and the tool, for the `command` events


@dataclass(frozen=True)
class Snapshot(Message):
    """Reply to Hello: what a late joiner needs to draw the run so far.

    `history` holds every epoch_end/checkpoint_saved/log/command/run_ended event, the latest system
    event and the step events (downsampled for long runs, keeping each window's lowest and highest
    loss); `last_seq` is the newest event it covers; `state` is "running" or the run's end status;
    `dropped` counts events the stream could not carry (the event log has them: replay)."""

    op: ClassVar[str] = "snapshot"
    last_seq: int = 0
    state: str = "running"
    dropped: int = 0
    run: RunStarted | None = None
    history: list = field(default_factory=list)
    info: dict = field(default_factory=dict)  # fields of the reply this version does not know

    @staticmethod
    def encode_parts(last_seq: int, state: str, dropped: int, run: str | None, history: list[str]) -> bytes:
        """The encoding of a Snapshot whose events are JSON text already (the publisher keeps them so)."""
        head = json.dumps({"op": Snapshot.op, "last_seq": last_seq, "state": state, "dropped": dropped})
        return (head[:-1] + ',"run":' + (run or "null") + ',"history":[' + ",".join(history) + "]}").encode()

    def encode(self) -> bytes:
        return Snapshot.encode_parts(self.last_seq, self.state, self.dropped, self.run.to_json() if self.run else None,
                                     [event.to_json() for event in self.history])

    @classmethod
    def from_dict(cls, data: Any) -> Snapshot:
        head = _head(data, cls.op)
        run = data.get("run")
        run = from_dict(run) if isinstance(run, dict) else None
        return cls(last_seq=_int(head, "last_seq"), state=str(head.get("state", "running")), dropped=_int(head, "dropped"),
                   run=run if isinstance(run, RunStarted) else None, history=_events(head.get("history")),
                   info={k: v for k, v in head.items() if k not in ("op", "run", "history", "last_seq", "state", "dropped")})


@dataclass(frozen=True)
class EventsPage(Message):
    """Reply to Replay: logged events, oldest first; `last_seq` the newest the run had when it answered;
    `more`: ask again from the last one."""

    op: ClassVar[str] = "events"
    events: list = field(default_factory=list)
    last_seq: int = 0
    more: bool = False

    @staticmethod
    def encode_parts(texts: list[bytes], last_seq: int, more: bool) -> bytes:
        """The encoding of a page whose events are JSON text already (lines of the event log)."""
        head = json.dumps({"op": EventsPage.op, "last_seq": last_seq, "more": more}).encode()
        return head[:-1] + b',"events":[' + b",".join(texts) + b"]}"

    def encode(self) -> bytes:
        return EventsPage.encode_parts([event.to_json().encode() for event in self.events], self.last_seq, self.more)

    @classmethod
    def from_dict(cls, data: Any) -> EventsPage:
        head = _head(data, cls.op)
        return cls(events=_events(head.get("events")), last_seq=_int(head, "last_seq"), more=bool(head.get("more")))


@dataclass(frozen=True)
class Ack(Message):
    """Reply to CommandRequest: accepted or refused (with the reason); `id` names the command in `command` events."""

    op: ClassVar[str] = "ack"
    id: str = ""
    status: str = "refused"
    reason: str = ""


@dataclass(frozen=True)
class Error(Message):
    """Reply to anything that is not a request (not JSON, unknown op, too large)."""

    op: ClassVar[str] = "error"
    status: str = "refused"
    reason: str = ""


REQUESTS: dict[str, type[Message]] = {cls.op: cls for cls in (Hello, Replay, CommandRequest)}


def decode_request(raw: bytes | str) -> Message:
    """The request in `raw`; ProtocolError saying what is wrong with it, in words for the reply."""
    try:
        data = loads(raw)
    except ProtocolError:
        raise ProtocolError("request is not JSON") from None
    if not isinstance(data, dict):
        raise ProtocolError("request is not a JSON object")
    op = data.get("op")
    cls = REQUESTS.get(op) if isinstance(op, str) else None
    if cls is None:
        text = repr(data.get("op"))
        raise ProtocolError(f"unknown op {text if len(text) <= 32 else text[:29] + '...'}; expected hello, replay or command")
    return cls.from_dict(data)


def decode_reply(raw: bytes | str, expected: type[M]) -> M | Error:
    """The reply in `raw`: an `expected`, or the Error the run answered instead; ProtocolError if neither."""
    data = loads(raw)
    if isinstance(data, dict) and data.get("op") == expected.op:
        return expected.from_dict(data)
    if isinstance(data, dict):
        reason = data.get("reason", data)
        return Error(status=str(data.get("status", "refused")), reason=str(reason))
    raise ProtocolError(f"a reply is a JSON object, got {type(data).__name__}")


@dataclass(frozen=True)
class Heartbeat:
    """On the stream every second and at once to each new subscriber: not an event (no seq, not logged).
    `last_seq` lets a subscriber notice events lost at the tail. A new field: a new dataclass field with
    a default (readers ignore fields they do not know)."""

    time: float = 0.0
    last_seq: int = 0
    state: str = "running"
    progress_age: float | None = None  # seconds since rank 0's last step or evaluation batch (None: no trainer behind)
    phase: str = ""  # what rank 0 is doing: training, validating, ... (see the Wire notes above)

    def frames(self) -> list[bytes]:
        data: dict[str, Any] = {"type": HEARTBEAT, "v": SCHEMA_VERSION}
        data.update((k, v) for k, v in dataclasses.asdict(self).items() if v is not None)  # absent, not null
        return [HEARTBEAT.encode(), json.dumps(data, default=_jsonable).encode()]

    @classmethod
    def decode(cls, raw: bytes | str) -> Heartbeat:
        return cls(**_known_fields(cls, loads(raw), HEARTBEAT))


def _known_fields(cls: type, data: Any, name: str) -> dict[str, Any]:
    """The fields of dataclass `cls` found in `data`, each of its declared type (floats as floats); others are
    ignored. One reading for events and wire messages alike."""
    if not isinstance(data, dict):
        raise ProtocolError(f"a {name} message is a JSON object, got {type(data).__name__}")
    values = {}
    for field_name, kind, check in _field_checks(cls):
        if field_name not in data:
            continue
        value = data[field_name]
        if not check(value):
            raise ProtocolError(f"{name}.{field_name}: expected {kind}, got {type(value).__name__}")
        if kind == "float":
            try:
                value = float(value)
            except OverflowError:  # an integer too large for a float
                raise ProtocolError(f"{name}.{field_name}: number out of range") from None
        values[field_name] = value
    return values


def _head(data: Any, op: str) -> dict:
    if not isinstance(data, dict):
        raise ProtocolError(f"a {op} reply is a JSON object, got {type(data).__name__}")
    return data


def _int(data: dict, name: str) -> int:
    value = data.get(name) or 0
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProtocolError(f"{name}: expected an integer, got {type(value).__name__}")
    return value


def _events(items: Any) -> list[Event]:
    if items is None:
        return []
    if not isinstance(items, list):
        raise ProtocolError(f"expected a list of events, got {type(items).__name__}")
    return [e for e in (from_dict(item) for item in items) if e is not None]
