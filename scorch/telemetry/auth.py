"""Signed commands: what a command must carry so that it can be neither forged nor replayed. No torch.

A command is signed by its sender with an HMAC-SHA256, keyed by the run's token
(RUN_DIR/.token), over the whole `CommandRequest`: every field but ``mac`` (and
the legacy ``token``, which a signed command never carries), as canonical JSON
(sorted keys, no spaces). The token never crosses the wire. Each command
carries a fresh random ``id`` and the ``time`` (Unix seconds) when it was
signed. The run accepts it only if the MAC matches, ``time`` is within
WINDOW_SECONDS of its own clock, and it has not seen that ``id`` in the window;
anything else is refused, and the refusal says which.

    {"op": "command", "command": "stop", "id": "3f9c...", "time": 1700000000.5,
     "after_epoch": false, "token": null, "mac": "<64 hex digits>"}

A steering command (scorch/steering.py) also carries ``value`` (``"x0.5"``) and ``by`` (who sends it), both
covered by the MAC.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable

from scorch.telemetry.protocol import CommandRequest

WINDOW_SECONDS = 30.0  # a command signed longer ago (or ahead, a clock off) than this is refused
SEEN_MAX = 10_000  # ids remembered within the window; beyond it new commands are refused (only token holders get here)
ID_BYTES = 16
UNSIGNED = ("mac", "token")  # the fields the MAC does not cover
OPTIONAL = ("value", "by")  # covered when given; left out when None, so checkpoint/stop sign as they always did


def canonical(request: CommandRequest) -> bytes:
    """The bytes the MAC covers: the request as the run decodes it (so a field left out by the sender counts
    as its default on both sides), without `mac` and `token`, as canonical JSON."""
    fields = {k: v for k, v in request.to_dict().items() if k not in UNSIGNED and not (k in OPTIONAL and v is None)}
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def mac(request: CommandRequest, token: str) -> str:
    return hmac.new(token.encode(), canonical(request), hashlib.sha256).hexdigest()


def sign(request: CommandRequest, token: str, now: float | None = None, command_id: str | None = None) -> CommandRequest:
    """`request` with a fresh id (or `command_id`), the time and its MAC; the token itself is not in it."""
    unsigned = dataclasses.replace(request, token=None, mac=None, id=command_id or secrets.token_hex(ID_BYTES),
                                   time=time.time() if now is None else now)
    return dataclasses.replace(unsigned, mac=mac(unsigned, token))


class Verifier:
    """The run's side: `check(request)` is "" for a command to accept, else why it is refused. Holds the ids
    seen in the last 2 x WINDOW_SECONDS (older ones would be refused as stale anyway), at most SEEN_MAX."""

    def __init__(self, token: str, window: float = WINDOW_SECONDS, clock: Callable[[], float] = time.time,
                 seen_max: int = SEEN_MAX) -> None:
        self._key = token.encode()
        self.window = window
        self._clock = clock
        self._seen_max = seen_max
        self._seen: OrderedDict[str, float] = OrderedDict()  # id -> when accepted, oldest first

    def check(self, request: CommandRequest) -> str:
        if request.token is not None:
            return "a token in clear is not accepted: commands are signed (use scorch-ctl or scorch-tui of this version)"
        given = request.mac
        if not isinstance(given, str) or not given:
            return "unsigned command (no mac); sign it with the run's token"
        try:
            expected = hmac.new(self._key, canonical(request), hashlib.sha256).hexdigest()
        except (TypeError, ValueError):
            return "command is not canonical JSON"
        if not hmac.compare_digest(given.encode("ascii", "replace"), expected.encode()):
            return "bad signature (wrong token, or the message was changed)"
        sent, command_id = request.time, request.id
        if not isinstance(sent, (int, float)) or isinstance(sent, bool) or not isinstance(command_id, str) or not command_id:
            return "a signed command needs an id and a time"
        now = self._clock()
        self._forget(now)
        age = now - sent
        if abs(age) > self.window:
            return (f"stale: signed {age:.0f} s {'ago' if age > 0 else 'ahead'}, outside the {self.window:.0f} s window "
                    "(a replay, or a clock that is off)")
        if command_id in self._seen:
            return f"replayed: id {command_id[:16]} was already used"
        if len(self._seen) >= self._seen_max:
            return f"too many commands: more than {self._seen_max} in {self.window:.0f} s"
        self._seen[command_id] = now
        return ""

    def _forget(self, now: float) -> None:
        # An id is kept twice the window: a message signed `window` ahead is still in it a window later.
        while self._seen and next(iter(self._seen.values())) < now - 2 * self.window:
            self._seen.popitem(last=False)
