"""A folder of runs, as the picker lists them: name, state, epoch, best metric, live or finished.

Reads only each run's run.json and the tail of its event log, so a folder
of hundreds of long runs lists at once. No UI here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from scorch_tui.sources import read_json

from scorch import events_log
from scorch.run_folder import on_this_host, why_dead

TAIL_BYTES = 1 << 20  # how far back from the end to look for the last epoch_end, per read
TAIL_LIMIT = 16 << 20  # and at most this far


@dataclass(frozen=True)
class RunEntry:
    path: str
    name: str
    state: str  # run.json's state: running or an end status
    liveness: str  # live | finished | dead (running, but its process is gone) | elsewhere (on another host)
    epochs_done: int
    epochs: int
    best: str  # "main 0.9731 @3" or ""
    started: float
    dead_reason: str = ""  # why a run still marked running is dead
    ended: float | None = None  # run.json's end; for a dead run, when its event log was last written
    hosts: tuple[str, ...] = ()  # where its ranks run, rank 0's first

    def took(self, now: float) -> float | None:
        """How long it ran (a live one: so far)."""
        if not self.started:
            return None
        return max(0.0, (self.ended if self.ended is not None else now) - self.started)


def is_run_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "run.json")) or os.path.isfile(events_log.path(path))


def list_runs(folder: str) -> list[RunEntry]:
    """Every run folder directly inside `folder`, newest first."""
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    entries = [read_entry(os.path.join(folder, name)) for name in names
               if not name.startswith(".") and is_run_dir(os.path.join(folder, name))]
    return sorted(entries, key=lambda e: (e.started, e.name), reverse=True)


def read_entry(path: str) -> RunEntry:
    info = read_json(os.path.join(path, "run.json"))
    config = info.get("config") if isinstance(info.get("config"), dict) else {}
    last = events_log.last_of_type(events_log.path(path), "epoch_end", TAIL_BYTES, TAIL_LIMIT)
    state = str(info.get("state") or ("running" if last is None else "running"))
    epochs = int(config.get("epochs") or 0)
    best = ""
    epochs_done = 0
    if last is not None:
        epochs_done = int(last.get("epoch", -1)) + 1
        b = last.get("best")
        b = b if isinstance(b, dict) else {}
        if isinstance(b.get("value"), (int, float)) and isinstance(b.get("epoch"), int):
            best = f"{config.get('monitor') or 'main'} {b['value']:.4g} @{b['epoch'] + 1}"
    started = info.get("started")
    if not isinstance(started, (int, float)):
        try:
            started = os.path.getmtime(path)
        except OSError:
            started = 0.0
    dead = why_dead(info, path)
    ended = info.get("ended") if isinstance(info.get("ended"), (int, float)) else None
    if ended is None and dead:  # it stopped writing when it died
        try:
            ended = os.path.getmtime(events_log.path(path))
        except OSError:
            ended = None
    hosts = tuple(str(h) for h in dict.fromkeys(info.get("hosts") or [])) if isinstance(info.get("hosts"), list) else ()
    return RunEntry(path=os.path.abspath(path), name=str(info.get("name") or os.path.basename(path.rstrip("/"))),
                    state=state, liveness=liveness(info, path), dead_reason=dead, epochs_done=epochs_done, epochs=epochs,
                    best=best, started=float(started), ended=None if ended is None else float(ended), hosts=hosts)


def liveness(info: dict, path: str = "") -> str:
    """live, finished, dead or elsewhere: what run.json's state means on this host right now.

    The same test as the live view's (`scorch.run_folder.why_dead`), so the list and an opened run agree.
    """
    if info.get("state", "running") != "running":
        return "finished"
    if why_dead(info, path):  # with the folder: its lock and lease decide (scorch.run_folder.liveness)
        return "dead"
    return "live" if on_this_host(info) else "elsewhere"
