"""What the dashboard knows about one run, built from source items. No UI here.

The screen applies every item to a `RunModel` as it arrives (cheap) and
redraws from it at most a few times a second; tests can check the model
directly. Like nvitop's `api/`, this layer never imports the widgets.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from scorch_tui.series import MinMaxSeries
from scorch_tui.sources import (
    CONNECTING,
    DEAD,
    ERROR,
    FOLLOWING,
    LIVE,
    RECONNECTING,
    TUNNEL_LOST,
    CommandAck,
    ConnectionChanged,
    HeartbeatSeen,
    Item,
    Loading,
    RunInfo,
)

from scorch.monitor import better_mode  # for metric names the run does not rank itself
from scorch.steering import Steering
from scorch.telemetry.protocol import (
    CheckpointSaved,
    Command,
    EpochEnd,
    Event,
    Log,
    RunEnded,
    RunStarted,
    Step,
    System,
)

RECENT = 1000  # recent notes kept for the event log
START_NOTES = 20  # and the run's first ones, kept for good: how it started (resumed from where, on which hosts)
# STALLED: no step for max(STALL_FLOOR, STALL_STEPS x the usual step time). The floor keeps a slow first step,
# a data loader refilling, a garbage collection from crying wolf; 5 steps' time catches a slow run stuck.
STALL_FLOOR = 10.0
STALL_STEPS = 5
# The one state the header leads with (design: "Readers derive one state").
STALLED = "stalled"
LOADING = "loading"  # a replay still reading its event log: nothing it shows is the run's last word yet
RATE_SECONDS = 20.0  # speed (samples/s, it/s) is measured over the step events of this many seconds
# A rank is "slowest" only when its step time is this much above the others' median, in this many system samples
# running: 2-6 % differences between ranks are noise, not a straggler.
SLOWEST_MARGIN = 1.2
SLOWEST_SAMPLES = 3
HISTORY = 300  # system samples kept per rank for the ranks panel's sparklines (10 minutes at one every 2 s)


@dataclass
class MetricTrack:
    """One metric over the epochs: valid and train values, and the best so far."""

    name: str
    mode: str  # "max" or "min": which way is better
    valid: MinMaxSeries = field(default_factory=MinMaxSeries)  # x: epoch (1-based)
    train: MinMaxSeries = field(default_factory=MinMaxSeries)
    last: float | None = None
    last_train: float | None = None
    best: float | None = None
    best_epoch: int | None = None  # 1-based
    best_train: float | None = None
    best_train_epoch: int | None = None
    values: list[float] = field(default_factory=list)  # valid values, kept only while few (alias detection)

    def add(self, epoch: int, value: float | None, train: float | None, t: float | None = None) -> None:
        if value is not None:
            self.valid.append(epoch, value, t)
            self.last = value
            if len(self.values) < 64:
                self.values.append(value)
            if math.isfinite(value) and (self.best is None or (value > self.best if self.mode == "max" else value < self.best)):
                self.best, self.best_epoch = value, epoch
        if train is not None:
            self.train.append(epoch, train, t)
            self.last_train = train
            if math.isfinite(train) and (self.best_train is None or (
                    train > self.best_train if self.mode == "max" else train < self.best_train)):
                self.best_train, self.best_train_epoch = train, epoch


@dataclass(frozen=True)
class Note:
    """One line of the event log: when (seconds since the run started), what kind, the text."""

    at: float | None
    kind: str  # checkpoint | command | log | connection | ended | ack
    text: str
    level: str = "info"  # info | warning | error | good


@dataclass
class RankUsage:
    """One rank's latest resource figures, from a `system` event."""

    rank: int
    host: str = ""
    cpu: float | None = None
    ram: float | None = None
    ram_total: float | None = None
    step_time: float | None = None
    data_time: float | None = None
    gpus: list = field(default_factory=list)
    state: str = ""  # from the per-rank channel: live | silent | ended | unreachable ("" without one)
    host_cpu: float | None = None  # the whole host's CPU use (percent) and RAM in use (bytes), as this rank saw them
    host_ram: float | None = None


@dataclass(frozen=True)
class HostUsage:
    """One host's CPU and RAM, whole machine (not only the run's processes), from its ranks' latest figures."""

    host: str
    ranks: list[int]
    cpu: float | None  # percent of all its cores
    ram: float | None  # bytes in use
    ram_total: float | None


class RunModel:
    """The run as the dashboard sees it. `apply(items)` is the only way in."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.applied = 0  # items applied so far (tests wait on this)
        self.version = 0  # bumped by every change: widgets redraw when it moved
        # What the run is.
        self.name = ""
        self.run_dir = ""
        self.world_size = 1
        self.hosts: list[str] = []
        self.device = ""
        self.backend = ""
        self.batch_size = 0
        self.config: dict = {}  # the run's settings (run.json's, or run_started's): the info screen lists them
        self.model_file = ""
        self.dataset_file = ""
        self.pid = 0
        self.resumed_from = ""
        self.via = ""  # how this view reaches the run when not directly ("ssh me@node"), from the source
        self.clock_times = False  # event times as this machine's clock instead of since the start (key w)
        self.monitor = "main"
        self.mode = "max"
        self.started: float | None = None
        self._started_by_event = False  # the first run_started's time beats run.json's (rewritten by a resume)
        self.ended: float | None = None
        self.last_time: float | None = None  # time of the newest event
        # Where it is.
        self.state = "running"  # running | completed | stopped | early_stopped | preempted | failed
        self.connection = CONNECTING
        self.connection_detail = ""
        self.epochs = 0
        self.epochs_done = 0
        self.epoch = 0  # the epoch in progress, 0-based
        self.epoch_step = 0
        self.steps_in_epoch = 0
        self.step = 0
        self.rate = 0.0  # samples per second
        self.lr: float | None = None
        self.grad_norm: float | None = None  # before clipping, when the run clips or logs it
        self.loss: float | None = None  # latest training loss (step window)
        self._rate_window: deque[tuple[float, int, int, float]] = deque()  # (time, step, epoch, rate): RATE_SECONDS
        self.epoch_durations: list[float] = []
        # Charts and table.
        self.train_loss = MinMaxSeries()  # x: global step
        self.valid_loss = MinMaxSeries()  # x: global step at the epoch's end
        self.epoch_train_loss = MetricTrack("train loss", "min")
        self.metrics: dict[str, MetricTrack] = {}
        self.main_alias: str | None = None  # the metric `main` merely repeats, if any
        # Ranks.
        self.ranks: list[RankUsage] = []
        self.slowest: int | None = None
        self._slow_streak: tuple[int | None, int] = (None, 0)  # (rank, system samples it has been slowest in)
        # (cpu %, first GPU's use %, step time) per system sample, newest last; None where a rank was silent.
        self.rank_history: dict[int, deque[tuple[float | None, float | None, float | None]]] = {}
        self.history_times: deque[float] = deque(maxlen=HISTORY)  # when each of those samples came
        self.silent_ranks: list[int] = []  # ranks the per-rank channel says have gone quiet (stopped, stuck, gone)
        self.stop_pending = False  # a stop after this epoch was applied: the run ends at the epoch's end
        self.steering = Steering()  # pause, lr scale, patience, timed checkpoints: as the run last applied them
        # Events and commands.
        self.notes: deque[Note] = deque(maxlen=RECENT)
        self.start_notes: list[Note] = []  # the first START_NOTES notes (also in `notes` until pushed out)
        self.notes_total = 0
        self.last_error: Note | None = None  # pinned where the events are shown, however many lines follow
        self.last_ack: CommandAck | None = None
        self.beat: HeartbeatSeen | None = None  # the newest heartbeat: age of the last step, rank 0's phase
        self.pending_commands: dict[str, str] = {}  # id -> command, until applied
        self.loading: float | None = None  # how much of a replay's event log is read (0..1) while it is read
        self.recorded_state = ""  # run.json's state: a replay's end is known before its events are all read

    # -- applying ------------------------------------------------------------------------------

    def apply(self, items: list[Item]) -> None:
        changed = False
        for item in items:
            self.applied += 1
            if isinstance(item, HeartbeatSeen):  # every second: the header ticks anyway; redraw only on a new phase
                changed = changed or self.beat is None or item.phase != self.beat.phase
                self.beat = item
                continue
            changed = True
            if isinstance(item, Event):  # each once, in seq order: the sources see to it (RunClient.last_seq, events_log)
                if item.time:
                    self.last_time = item.time
                self._event(item)
            elif isinstance(item, ConnectionChanged):
                self._connection(item)
            elif isinstance(item, CommandAck):
                self._ack(item)
            elif isinstance(item, RunInfo):
                self._info(item.info)
            elif isinstance(item, Loading):
                self.loading = None if item.done >= item.total else item.done / item.total
        if changed:
            self.version += 1

    def _note(self, at: float | None, kind: str, text: str, level: str = "info") -> None:
        note = Note(None if at is None or self.started is None else at - self.started, kind, text, level)
        self.notes.append(note)
        if len(self.start_notes) < START_NOTES:
            self.start_notes.append(note)
        if level == "error":
            self.last_error = note
        elif kind == "connection" and level == "good":
            self.last_error = None  # connected again: the connection error is history
        self.notes_total += 1

    def _info(self, info: dict) -> None:
        self.name = str(info.get("name") or self.name)
        self.world_size = int(info.get("world_size") or self.world_size)
        self.hosts = list(info.get("hosts") or self.hosts)
        self.device = str(info.get("device") or self.device)
        if isinstance(info.get("started"), (int, float)) and self.started is None:
            self.started = float(info["started"])
        if isinstance(info.get("ended"), (int, float)):
            self.ended = float(info["ended"])
        state = info.get("state")
        if isinstance(state, str) and state:
            self.state = self.recorded_state = state
        config = info.get("config")
        if isinstance(config, dict):
            self._config(config)

    def _config(self, config: dict) -> None:
        self.config = dict(config)
        self.monitor = str(config.get("monitor") or self.monitor)
        self.mode = str(config.get("mode") or self.mode)
        self.epochs = int(config.get("epochs") or self.epochs)
        self.batch_size = int(config.get("batch_size") or self.batch_size)

    def _event(self, ev: Event) -> None:
        if isinstance(ev, Step):
            self._step(ev)
        elif isinstance(ev, EpochEnd):
            self._epoch_end(ev)
        elif isinstance(ev, System):
            self._system(ev)
        elif isinstance(ev, CheckpointSaved):
            self._note(ev.time, "checkpoint", f"checkpoint saved ({ev.reason}): {_short_path(ev.path)} "
                       f"after epoch {ev.epoch}, step {ev.step}", "good")
        elif isinstance(ev, Log):
            level = {"warning": "warning", "error": "error"}.get(ev.level, "info")
            self._note(ev.time, "log", ev.message, level)
        elif isinstance(ev, Command):
            self._command(ev)
        elif isinstance(ev, RunEnded):
            self.state = ev.status
            self.ended = ev.time or self.ended
            level = {"completed": "good", "failed": "error"}.get(ev.status, "warning")
            self.stop_pending = False
            self._note(ev.time, "ended", f"run ended: {ev.status.replace('_', ' ')}" + (f" ({ev.reason})" if ev.reason else ""),
                       level)
        elif isinstance(ev, RunStarted):
            self._run_started(ev)

    def _run_started(self, ev: RunStarted) -> None:
        self.name = ev.name or self.name
        self.run_dir = ev.run_dir
        self.epochs = ev.epochs or self.epochs
        self.world_size = ev.world_size or 1
        self.hosts = list(ev.hosts) or self.hosts
        self.device = ev.device
        self.backend = ev.backend
        self.batch_size = ev.batch_size
        self.model_file, self.dataset_file, self.pid = ev.model, ev.dataset, ev.pid
        self.resumed_from = ev.resumed_from or ""
        self.steps_in_epoch = ev.steps_per_epoch or self.steps_in_epoch
        if ev.config:
            self._config(ev.config)
        if ev.time and not self._started_by_event:  # a resume keeps the first start: elapsed and event times never go back
            self.started, self._started_by_event = ev.time, True
        self.state = "running"
        self.ended = None
        self.epoch = self.epochs_done = max(self.epochs_done, ev.start_epoch)
        self._rate_window.clear()  # a resume: the gap since the last process is not training time
        self.stop_pending = False
        self.steering = Steering.from_dict(ev.steering)  # what the checkpoint kept (a pause too)
        resumed = f" (resumed from {_short_path(ev.resumed_from)})" if ev.resumed_from else ""
        self._note(ev.time, "log", f"run started: {self.world_size} rank{'s' if self.world_size != 1 else ''} on "
                   f"{', '.join(dict.fromkeys(self.hosts)) or '?'}, {ev.device}{resumed}")

    def _step(self, ev: Step) -> None:
        self.epoch = ev.epoch
        self.epoch_step = ev.epoch_step
        self.steps_in_epoch = ev.steps_in_epoch or self.steps_in_epoch
        self.step = ev.step
        self.rate = ev.rate
        self.lr = ev.lr
        self.grad_norm = ev.grad_norm
        self.loss = ev.loss
        self.train_loss.append(ev.step, ev.loss, ev.time or None)
        if ev.time:  # kept across epoch boundaries: the speed does not restart each epoch
            window = self._rate_window
            window.append((ev.time, ev.step, ev.epoch, ev.rate))
            while window[0][0] < ev.time - RATE_SECONDS:
                window.popleft()

    def _epoch_end(self, ev: EpochEnd) -> None:
        epoch = ev.epoch + 1  # shown 1-based
        self.epochs_done = max(self.epochs_done, epoch)
        self.step = max(self.step, ev.step)
        if self.epochs_done < self.epochs or not self.epochs:
            self.epoch, self.epoch_step = self.epochs_done, 0
        else:
            self.epoch, self.epoch_step = ev.epoch, self.steps_in_epoch
        if ev.duration > 0:
            self.epoch_durations.append(ev.duration)
        self.lr = ev.lr or self.lr
        self.epoch_train_loss.add(epoch, None, ev.train_loss, ev.time or None)
        for name in dict.fromkeys([*ev.metrics, *ev.train_metrics]):
            track = self.metrics.get(name)
            if track is None:
                track = self.metrics[name] = MetricTrack(name, self.mode if name == self.monitor else better_mode(name))
            track.add(epoch, _num(ev.metrics.get(name)), _num(ev.train_metrics.get(name)), ev.time or None)
        best = ev.best if isinstance(ev.best, dict) else {}
        monitored = self.metrics.get(self.monitor)
        if monitored is not None and isinstance(best.get("value"), (int, float)) and isinstance(best.get("epoch"), int):
            if math.isfinite(best["value"]):
                monitored.best, monitored.best_epoch = float(best["value"]), best["epoch"] + 1
        valid_loss = _num(ev.metrics.get("loss"))
        if valid_loss is not None:
            self.valid_loss.append(ev.step, valid_loss, ev.time or None)
        self.main_alias = self._find_alias()

    def _find_alias(self) -> str | None:
        """The metric that `main` always equals (the digits example's accuracy), to show once, not twice."""
        main = self.metrics.get("main")
        if main is None or len(main.values) >= 64:
            return self.main_alias if main is not None else None
        for name, track in self.metrics.items():
            if name not in ("main", "loss") and track.values == main.values and track.values:
                return name
        return None

    def _system(self, ev: System) -> None:
        ranks: list[RankUsage] = []
        for entry in ev.ranks:
            if not isinstance(entry, dict):
                continue
            ranks.append(RankUsage(
                rank=int(entry.get("rank", len(ranks))), host=str(entry.get("host", "")), cpu=_num(entry.get("cpu")),
                ram=_num(entry.get("ram")), ram_total=_num(entry.get("ram_total")), step_time=_num(entry.get("step_time")),
                data_time=_num(entry.get("data_time")),
                gpus=[g for g in entry.get("gpus") or [] if isinstance(g, dict)], state=str(entry.get("state") or ""),
                host_cpu=_num(entry.get("host_cpu")), host_ram=_num(entry.get("host_ram"))))
        self.ranks = sorted(ranks, key=lambda r: r.rank)
        self.history_times.append(ev.time)
        for r in self.ranks:
            history = self.rank_history.setdefault(r.rank, deque(maxlen=HISTORY))
            gpu = _num(r.gpus[0].get("util")) if r.gpus else None
            history.append((None, None, None) if r.state == "silent" else (r.cpu, gpu, r.step_time))
        self.silent_ranks = [r.rank for r in self.ranks if r.state == "silent"]
        self.slowest = self._straggler()

    def _straggler(self) -> int | None:
        """The rank every other waits for: clearly slower than the others' median, several samples running."""
        timed = [r for r in self.ranks if r.step_time is not None]
        candidate = None
        if len(timed) > 1:
            slowest = max(timed, key=lambda r: r.step_time or 0.0)
            others = sorted(r.step_time or 0.0 for r in timed if r is not slowest)
            median = others[len(others) // 2] if len(others) % 2 else (others[len(others) // 2 - 1] + others[len(others) // 2]) / 2
            if (slowest.step_time or 0.0) >= SLOWEST_MARGIN * median:
                candidate = slowest.rank
        rank, count = self._slow_streak
        self._slow_streak = (candidate, count + 1 if candidate == rank else 1)
        return candidate if candidate is not None and self._slow_streak[1] >= SLOWEST_SAMPLES else None

    def _command(self, ev: Command) -> None:
        what = ev.command + (" after this epoch" if ev.after_epoch else "")
        what += f" {ev.value}" if ev.value else ""
        if ev.status == "applied":
            self.pending_commands.pop(ev.id, None)
            self.stop_pending = self.stop_pending or (ev.command == "stop" and ev.after_epoch)
            if ev.steering:  # a steering command: the run's whole steering after it
                self.steering = Steering.from_dict(ev.steering)
            self._note(ev.time, "command", f"{what} applied" + (f" {ev.reason}" if ev.reason else ""), "good")
        elif ev.status == "refused":
            self._note(ev.time, "command", f"{what} refused: {ev.reason}", "warning")
        else:  # accepted: who sent it (steering is worth knowing the author of)
            self._note(ev.time, "command", f"{what} {ev.status}" + (f" from {ev.by}" if ev.by else "")
                       + (f": {ev.reason}" if ev.reason else ""))

    def _connection(self, item: ConnectionChanged) -> None:
        before = self.connection
        self.connection = item.state
        self.connection_detail = item.detail
        if item.state == before:
            return
        if item.state in (RECONNECTING, ERROR, DEAD, TUNNEL_LOST):
            prefix = {RECONNECTING: "connection lost", ERROR: "error", DEAD: "run dead", TUNNEL_LOST: "tunnel lost"}[item.state]
            self._note(self.clock(), "connection", f"{prefix}: {item.detail}", "error")
        elif item.state == LIVE and before in (RECONNECTING, CONNECTING, DEAD, TUNNEL_LOST) and self.notes_total:
            self._note(self.clock(), "connection", "connected again", "good")

    def _ack(self, ack: CommandAck) -> None:
        """The control bar shows every ack; the log only those the run never saw (it logs the others itself)."""
        self.last_ack = ack
        if ack.status == "accepted" and ack.id:
            self.pending_commands[ack.id] = ack.command
        if ack.status not in ("accepted", "refused"):
            what = ack.command + (" after this epoch" if ack.after_epoch else "")
            self._note(self.clock(), "ack", f"{what}: {ack.status}" + (f" ({ack.reason})" if ack.reason else ""), "warning")

    # -- reading -------------------------------------------------------------------------------

    @property
    def watching_live(self) -> bool:
        """Whether the clock runs for this view (a live or followed run that has not ended)."""
        return self.state == "running" and self.connection in (LIVE, CONNECTING, RECONNECTING, FOLLOWING, TUNNEL_LOST)

    def elapsed(self) -> float | None:
        if self.started is None:
            return None
        if self.ended is not None and self.state != "running":
            end = self.ended
        elif self.watching_live:
            end = self.clock()
        else:
            end = self.last_time or self.started
        return max(0.0, end - self.started)

    def progress_age(self) -> float | None:
        """Seconds since rank 0's last step (or evaluation batch), from the heartbeat, counted on to now."""
        if self.beat is None or self.beat.progress_age is None:
            return None
        return self.beat.progress_age + max(0.0, self.clock() - self.beat.at)

    def last_heard(self) -> float | None:
        """Seconds since the newest heartbeat reached this dashboard (on its own clock)."""
        return max(0.0, self.clock() - self.beat.at) if self.beat is not None else None

    def stall_limit(self) -> float:
        sps = self.steps_per_second()
        return max(STALL_FLOOR, STALL_STEPS / sps) if sps else STALL_FLOOR

    def liveness(self) -> str:
        """The one state the header leads with: the connection state, or STALLED, or DEAD.

        STALLED when the heartbeat says no step for `stall_limit()` (rank 0 waiting
        for a stopped rank looks like this), also while the heartbeat itself is late;
        DEAD when the source says so (process gone here, silent from afar); an ended
        run is its end state; LOADING while a replay is still reading its history.
        """
        if self.loading is not None:
            return LOADING
        if self.state != "running" or self.connection in (DEAD, ERROR):
            return self.connection
        if self.connection in (LIVE, RECONNECTING):
            age = self.progress_age()
            if age is not None and age >= self.stall_limit():
                return STALLED
        return self.connection

    @property
    def looks_live(self) -> bool:
        """Whether figures that only mean something on a running run (samples/s, ETA) may be shown: not while paused."""
        return self.state == "running" and self.liveness() in (LIVE, FOLLOWING) and not self.paused

    @property
    def paused(self) -> bool:
        """Held by a pause: the heartbeat says so (live), or the last steering applied did (a log being followed)."""
        if self.state != "running":
            return False
        return self.beat.phase == "paused" if self.beat is not None else self.steering.paused

    @property
    def phase(self) -> str:
        """What rank 0 is doing, from the heartbeat: training, validating, checkpointing, ... ("" when unknown)."""
        return self.beat.phase if self.beat is not None and self.state == "running" else ""

    def _training_intervals(self) -> list[tuple[float, int, float]]:
        """(seconds, steps, samples/s) between consecutive step events of one epoch, over the last RATE_SECONDS:
        the gap across an epoch's end (validation, checkpoint) is not training time, so it is left out."""
        window = list(self._rate_window)
        return [(t1 - t0, s1 - s0, r1) for (t0, s0, e0, _), (t1, s1, e1, r1) in zip(window, window[1:])
                if e1 == e0 and t1 > t0 and s1 > s0]

    def steps_per_second(self) -> float | None:
        intervals = self._training_intervals()
        if intervals:
            return sum(steps for _, steps, _ in intervals) / sum(dt for dt, _, _ in intervals)
        if self.rate and self.batch_size:
            return self.rate / (self.batch_size * max(1, self.world_size))
        return None

    def samples_per_second(self) -> float | None:
        """The run's own samples/s figures, time-weighted over the window (one short window does not swing it)."""
        intervals = self._training_intervals()
        if intervals:
            return sum(dt * rate for dt, _, rate in intervals) / sum(dt for dt, _, _ in intervals)
        return self.rate or None

    def eta(self) -> float | None:
        """Seconds left: the rest of this epoch at the step rate, the other epochs at their measured length."""
        if not self.looks_live or not self.epochs or not self.steps_in_epoch:
            return None
        sps = self.steps_per_second()
        left_in_epoch = max(0, self.steps_in_epoch - self.epoch_step)
        epochs_after = max(0, self.epochs - self.epoch - 1)
        if self.epoch_durations:
            per_epoch = sum(self.epoch_durations[-5:]) / len(self.epoch_durations[-5:])
            current = left_in_epoch / sps if sps else per_epoch * left_in_epoch / self.steps_in_epoch
            return current + epochs_after * per_epoch
        if not sps:
            return None
        return (left_in_epoch + epochs_after * self.steps_in_epoch) / sps

    def epoch_fraction(self) -> float:
        if not self.epochs:
            return 0.0
        within = self.epoch_step / self.steps_in_epoch if self.steps_in_epoch else 0.0
        done = self.epochs_done if self.epochs_done > self.epoch else self.epoch + within
        return min(1.0, done / self.epochs)

    def chart_metrics(self) -> list[MetricTrack]:
        """The metrics that get a chart of their own: all but loss (on the loss chart) and a repeated main."""
        skip = {"loss", "main" if self.main_alias else ""}
        tracks = [t for name, t in self.metrics.items() if name not in skip]
        return sorted(tracks, key=lambda t: (t.name != self.monitor and t.name != self.main_alias, 0))

    def time_origin(self) -> float | None:
        """The start's own time while event times are shown as clock times (else None: since the start)."""
        return self.started if self.clock_times else None

    def host_usage(self) -> list[HostUsage]:
        """Each host's whole-machine CPU and RAM, in rank order of first appearance (ranks on one host agree;
        the latest figure of its lowest rank stands for it)."""
        hosts: dict[str, list[RankUsage]] = {}
        for r in self.ranks:
            hosts.setdefault(r.host or "?", []).append(r)
        usage = []
        for host, ranks in hosts.items():
            first = next((r for r in ranks if r.host_cpu is not None or r.host_ram is not None), ranks[0])
            usage.append(HostUsage(host, [r.rank for r in ranks], first.host_cpu, first.host_ram, first.ram_total))
        return usage

    def metric_label(self, name: str) -> str:
        if name == self.main_alias:
            return f"{name} (main)"
        return name


def _num(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _short_path(path: str | None) -> str:
    """The last two parts of a path: checkpoints/last.pt."""
    if not path:
        return ""
    parts = path.rstrip("/").split("/")
    return "/".join(parts[-2:])
