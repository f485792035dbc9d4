"""Steering a running job beyond stop: pause/resume, a learning-rate scale, early-stopping patience, a checkpoint
every N minutes. No torch here: scorch-ctl and the dashboard parse what a person types with the same functions
the run checks it with.

The words are the same everywhere (scorch-ctl, the dashboard's keys, the `command` events of events.jsonl):

    pause | resume                  the loop waits at a step boundary (heartbeats go on, phase "paused"), or goes on
    lr x0.5 | lr x2 | lr 1e-4 | lr reset
                                    scale every param group's rate by a factor (from the current scale), set the
                                    first group's rate to a value (the others keep their ratio to it), or go back to
                                    the schedule's own rate. The scale multiplies what a scheduler gives: the
                                    scheduler steps on the unscaled rates, so its schedule goes on unchanged.
    patience 5 | patience off       early stopping after 5 epochs without improvement from now on, or never
    checkpoint-every 10m | 30s | 1h | off
                                    save checkpoints/last.pt every N minutes (a bare number is minutes) from now on

`Steering` is what a run holds: the same on every rank (each change is agreed at one step, scorch/agreement.py),
saved in checkpoints (a resume keeps it, a pause too: Trainer.fit holds before the first step), told in
run.json and in the dashboard's header.
"""

from __future__ import annotations

import math
import re
import struct
import threading
from dataclasses import asdict, dataclass, replace
from typing import Any

from scorch.errors import ScorchError

COMMANDS = ("pause", "resume", "lr", "patience", "checkpoint-every")  # on the wire as typed
NEEDS_VALUE = ("lr", "patience", "checkpoint-every")
USAGE = {"lr": "lr x0.5, lr x2, lr 1e-4 or lr reset", "patience": "patience 5 or patience off",
         "checkpoint-every": "checkpoint-every 10m (s, m or h; a bare number is minutes) or checkpoint-every off"}
MAX_VALUE_CHARS = 32


class SteerError(ScorchError):
    """A steering value that cannot be understood; `message` says what is expected."""


@dataclass(frozen=True)
class Steering:
    """A run's steering. `patience` None: the run's --early-stop-patience; 0: off. `checkpoint_every`: seconds, 0 off."""

    paused: bool = False
    lr_scale: float = 1.0
    patience: int | None = None
    checkpoint_every: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> Steering:
        """From a checkpoint or an event; unknown or damaged fields keep their defaults."""
        if not isinstance(data, dict):
            return cls()
        fields: dict[str, Any] = {}
        if isinstance(data.get("lr_scale"), (int, float)) and math.isfinite(data["lr_scale"]) and data["lr_scale"] > 0:
            fields["lr_scale"] = float(data["lr_scale"])
        if isinstance(data.get("patience"), int) and data["patience"] >= 0:
            fields["patience"] = int(data["patience"])
        if isinstance(data.get("checkpoint_every"), (int, float)) and data["checkpoint_every"] >= 0:
            fields["checkpoint_every"] = float(data["checkpoint_every"])
        return cls(paused=data.get("paused") is True, **fields)

    def words(self) -> list[str]:
        """What differs from an unsteered run, in the words of the header: paused, lr x0.5, patience 5/off, ckpt every 10 min."""
        words = ["paused"] if self.paused else []
        if self.lr_scale != 1.0:
            words.append(f"lr x{self.lr_scale:.3g}")
        if self.patience is not None:
            words.append(f"patience {self.patience or 'off'}")
        if self.checkpoint_every:
            words.append(f"ckpt every {interval_words(self.checkpoint_every)}")
        return words


def interval_words(seconds: float) -> str:
    if seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    return f"{seconds / 60:g} min" if seconds % 60 == 0 else f"{seconds:g} s"


# -- what a person types ------------------------------------------------------------------------

def check(command: str, value: Any) -> Any:
    """The parsed value of a steering command (None for pause/resume), or SteerError naming the form expected.

    lr: ("x", factor) | ("=", rate) | ("reset", 1.0); patience: an int, 0 for off; checkpoint-every: seconds, 0 off."""
    if command not in NEEDS_VALUE:
        if value not in (None, ""):
            raise SteerError(f"{command} takes no value (got {_shown(value)})")
        return None
    if not isinstance(value, str) or not value.strip():
        raise SteerError(f"{command} needs a value: {USAGE[command]}")
    text = value.strip().lower()
    if len(text) > MAX_VALUE_CHARS:
        raise SteerError(f"{command} {_shown(value)}: too long; {USAGE[command]}")
    parsed = {"lr": _lr, "patience": _patience, "checkpoint-every": _interval}[command](text)
    if parsed is None:
        raise SteerError(f"{command} {_shown(value)}: not understood; {USAGE[command]}")
    return parsed


def parse_line(line: str) -> tuple[str, str | None]:
    """`lr x0.5`, `pause`, ... as typed in the dashboard: (command, value), checked; SteerError says what is wrong."""
    command, _, value = line.strip().partition(" ")
    command = command.lower().replace("_", "-")
    if command not in COMMANDS:
        raise SteerError(f"{command or 'nothing typed'}: not a steering command; one of {', '.join(COMMANDS)}")
    check(command, value.strip() or None)
    return command, value.strip() or None


def _lr(text: str) -> tuple[str, float] | None:
    if text == "reset":
        return ("reset", 1.0)
    times = re.fullmatch(r"(?:x|\*)\s*(\S+)|(\S+?)\s*x", text)
    number = _positive(times.group(1) or times.group(2)) if times else _positive(text)
    if number is None:
        return None
    return ("x", number) if times else ("=", number)


def _patience(text: str) -> int | None:
    if text in ("off", "0", "none"):
        return 0
    return int(text) if text.isdigit() and 0 < int(text) < 10**9 else None


def _interval(text: str) -> float | None:
    if text in ("off", "0"):
        return 0.0
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|sec|m|min|h)?", text)
    if not match:
        return None
    seconds = float(match.group(1)) * {"s": 1, "sec": 1, "h": 3600}.get(match.group(2) or "m", 60)
    return seconds if 1.0 <= seconds <= 365 * 86400 else None


def _positive(text: str) -> float | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) and 0 < number < 1e6 else None


def _shown(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 3] + "..."


# -- rank 0: the requests in, the new state out ---------------------------------------------------

def resolve(now: Steering, requests: list[Any], lr: float) -> tuple[Steering, list[tuple[str, str]]]:
    """The steering after `requests` (control.Request, oldest first) from `now`; `lr` is the first param group's
    rate now. Also (status, what it did, in words) for each one's `command` event. Never raises: a value the
    publisher let through and this cannot read is refused here (the other ranks wait in the agreement)."""
    said = []
    for request in requests:
        try:
            value = check(request.command, request.value)
        except SteerError as exc:
            said.append(("refused", exc.message))
            continue
        if request.command in ("pause", "resume"):
            now = replace(now, paused=request.command == "pause")
            said.append(("applied", "paused" if now.paused else "resumed"))
        elif request.command == "lr":
            scheduled = lr / now.lr_scale  # what the schedule gives; the rate is always scheduled x lr_scale
            kind, number = value
            scale = now.lr_scale * number if kind == "x" else number / scheduled if kind == "=" else 1.0
            now, lr = replace(now, lr_scale=scale), scheduled * scale
            said.append(("applied", f"lr x{scale:.4g} of the schedule: {lr:.4g} now"))
        elif request.command == "patience":
            now = replace(now, patience=value)
            said.append(("applied", f"early stopping after {value} epochs without improvement" if value
                         else "early stopping off"))
        else:
            now = replace(now, checkpoint_every=value)
            said.append(("applied", f"checkpoint every {interval_words(value)} from now on" if value
                         else "timed checkpoints off"))
    return now, said


class Steerer:
    """A run's steering applied to its parts: every param group of the user's optimizer (the lr scale), the
    Schedule (which steps the scheduler on the unscaled rates), the Monitor (patience), and on the writing rank
    a timer that asks for a checkpoint every `checkpoint_every` seconds (as a request: it is agreed like any)."""

    def __init__(self, optimizer: Any, schedule: Any, monitor: Any, control: Any, timed: bool) -> None:
        self.optimizer, self.schedule, self.monitor, self.control, self.timed = optimizer, schedule, monitor, control, timed
        self.now = Steering()
        self.configured_patience = monitor.patience  # --early-stop-patience: what patience None means
        self.said: list[tuple[str, str]] = []  # rank 0: what the last proposal's requests did, for their events
        self._timer: tuple[threading.Thread, threading.Event] | None = None

    def propose(self, requests: list[Any]) -> Steering | None:
        """Rank 0: the steering `requests` ask for (None when it is the same); `said` tells each one."""
        new, self.said = resolve(self.now, requests, float(self.optimizer.param_groups[0]["lr"]))
        return None if new == self.now else new

    def apply(self, new: Steering, loaded: bool = False) -> None:
        """Every rank, the same step: the parts follow `new`. `loaded`: from a checkpoint, whose optimizer state
        already holds the scaled rates."""
        old, self.now = self.now, new
        if new.lr_scale != old.lr_scale:
            if not loaded:  # the rate is always the schedule's x lr_scale, in every group
                for group in self._groups():
                    group["lr"] = group["lr"] / old.lr_scale * new.lr_scale
            self.schedule.lr_scale = new.lr_scale
        self.monitor.patience = self.configured_patience if new.patience is None else new.patience
        if new.checkpoint_every != old.checkpoint_every and self.timed:
            self._start_timer(new.checkpoint_every)

    def _groups(self) -> list:
        """Every param group: of the optimizer, or of each of a manual Socket's optimizers (scorch/manual.py)."""
        several = getattr(self.optimizer, "optimizers", None)
        optimizers = list(several.values()) if isinstance(several, dict) else [self.optimizer]
        return [group for optimizer in optimizers for group in optimizer.param_groups]

    def _start_timer(self, seconds: float) -> None:
        self.close()
        if not seconds:
            return
        stopping = threading.Event()

        def every() -> None:  # from now on: the first one `seconds` after the change was applied
            while not stopping.wait(seconds):
                if not self.now.paused:  # a paused run has nothing new to save
                    self.control.request("checkpoint", id=f"every {interval_words(seconds)}", source="interval")

        thread = threading.Thread(target=every, name="scorch-checkpoint-every", daemon=True)
        self._timer = (thread, stopping)
        thread.start()

    def state_dict(self) -> dict[str, Any]:
        return self.now.to_dict()

    def load_state_dict(self, saved: Any, keep_patience: bool = False) -> None:
        """A checkpoint's steering, a pause included (the run resumes paused: Trainer.fit holds before its first
        step); `keep_patience`: the resume names --early-stop-patience itself, which wins over a steered one."""
        new = Steering.from_dict(saved)
        self.apply(replace(new, patience=None) if keep_patience else new, loaded=True)

    def close(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            timer[1].set()
            timer[0].join(timeout=5)


# -- the ranks' agreement: the whole state in a few int64 slots ------------------------------------
# Only rank 0 takes commands (the control socket), so it alone fills these slots, with its new steering;
# every other rank (and rank 0 with nothing new) fills them with NEUTRAL, the smallest int64, which a max
# reduction never picks over a real value. lr_scale travels as the bit pattern of its float64 (a positive
# float's bits are a positive int64), so every rank gets the very same number.
SLOTS = 4
NEUTRAL = -(2**63)
PATIENCE_CONFIG = -1  # patience None (the run's --early-stop-patience) in its slot


def encode(steering: Steering | None) -> list[int]:
    if steering is None:
        return [NEUTRAL] * SLOTS
    return [int(steering.paused), struct.unpack("<q", struct.pack("<d", steering.lr_scale))[0],
            PATIENCE_CONFIG if steering.patience is None else steering.patience,
            round(steering.checkpoint_every * 1000)]


def decode(slots: list[int]) -> Steering | None:
    """The steering rank 0 sent (None: nothing changed), from the reduced slots."""
    if slots[0] == NEUTRAL:
        return None
    paused, bits, patience, every_ms = slots
    return Steering(paused=bool(paused), lr_scale=struct.unpack("<d", struct.pack("<q", bits))[0],
                    patience=None if patience == PATIENCE_CONFIG else patience, checkpoint_every=every_ms / 1000)
