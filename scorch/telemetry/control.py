"""Control requests (checkpoint, stop, and the steering of scorch/steering.py) from the dashboard, scorch-ctl,
signals and the timed checkpoints.

Any thread (the publisher's, a signal handler) calls `request`; the training
thread checks the plain attribute `pending` at each step boundary, which costs
nothing, and takes the queued requests only when there are some.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

from scorch.steering import COMMANDS as STEERING


@dataclass(frozen=True)
class Request:
    command: str  # "checkpoint" | "stop" | a steering command (scorch/steering.py: pause, lr, ...)
    id: str = ""
    after_epoch: bool = False
    source: str = "request"  # "request" (dashboard, scorch-ctl) | "signal" (preemption) | "interrupt" (Ctrl-C) | "interval"
    value: Any = None  # a steering command's value as typed ("x0.5", "off", "10m"), checked by the publisher
    by: str = ""  # who asked (user@host and the tool), for the `command` events


class Control:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: deque[Request] = deque()
        self.pending = False
        self._arrived = threading.Event()  # set with `pending`: a paused loop sleeps on it (no CPU while paused)

    def request(self, command: str, id: str = "", after_epoch: bool = False, source: str = "request",
                value: Any = None, by: str = "") -> None:
        with self._lock:
            self._queue.append(Request(command, id, after_epoch, source, value, by))
            self.pending = True
            self._arrived.set()

    def wait(self, timeout: float) -> bool:
        """Sleep until a request is queued or `timeout` seconds pass; whether one is pending."""
        self._arrived.wait(timeout)
        return self.pending

    def take(self) -> list[Request]:
        """Every queued request, oldest first; clears `pending`."""
        with self._lock:
            requests = list(self._queue)
            self._queue.clear()
            self.pending = False
            self._arrived.clear()
        return requests


# -- the fixed-size form the ranks agree on ------------------------------------------------------
# Requests reach rank 0 (the control socket) or any rank (its own signals). At an agreement each rank
# sets one 0/1 slot per kind it holds and the ranks reduce the slots with max, so N ranks move N small
# fixed-size tensors, not N x N pickled lists. Every rank then applies the same kinds in this order;
# rank 0 attaches its own requests (with their ids, for the `command` events) to the kinds they are.
KINDS = ("checkpoint", "stop_after_epoch", "stop", "interrupt", "signal")


def is_steering(request: Request) -> bool:
    """Pause, lr, patience, ...: their values travel in the agreement's steering slots, not as a kind's flag."""
    return request.command in STEERING


def kind_of(request: Request) -> str:
    if request.command == "checkpoint":
        return "checkpoint"
    if request.source in ("interrupt", "signal"):
        return request.source
    return "stop_after_epoch" if request.after_epoch else "stop"


def request_flags(requests: list[Request]) -> list[int]:
    """One 0/1 per KINDS entry: which kinds `requests` hold."""
    held = {kind_of(request) for request in requests}
    return [int(kind in held) for kind in KINDS]


def agreed_requests(flags: list[int], own: list[Request]) -> list[Request]:
    """The requests every rank applies for the reduced `flags`: this rank's own requests of each kind,
    or one standing for the rank(s) that held it, kind by kind in KINDS order (so every rank ends in
    the same state)."""
    stand_in = {"checkpoint": Request("checkpoint", id="rank", source="request"),
                "stop_after_epoch": Request("stop", id="rank", after_epoch=True, source="request"),
                "stop": Request("stop", id="rank", source="request"),
                "interrupt": Request("stop", id="SIGINT", source="interrupt"),
                "signal": Request("stop", id="signal on another rank", source="signal")}
    agreed = []
    for kind, flag in zip(KINDS, flags):
        if flag:
            agreed += [r for r in own if kind_of(r) == kind] or [stand_in[kind]]
    return agreed
