"""A scripted run for dashboard tests: events as a real run emits them, at fixed times.

`ScriptedRun` numbers events and stamps them on a fake timeline starting at T0,
so the screen (elapsed time, ETA, event times) is the same on every machine.
"""

from __future__ import annotations

import asyncio
import queue
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from scorch_tui.sources import MAX_BATCH, CommandAck, ConnectionChanged, Item, Source

from helpers.runs import ROOT
from helpers.telemetry import FakeRun  # noqa: F401 (the dashboard tests take it from here)
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

DIGITS = ROOT / "examples" / "digits"


def train_args(run_dir: Path, *extra: str) -> list[str]:
    """scorch-train arguments for a tiny digits run in `run_dir` (a separate process: no torch in this one)."""
    return [sys.executable, "-m", "scorch.cli", "--model", str(DIGITS / "model.py"), "--dataset", str(DIGITS / "dataset.py"),
            "--dataset-path", str(DIGITS), "--run-dir", str(run_dir), "--headless", "--seed", "1", *extra]

T0 = 1_700_000_000.0  # the scripted run starts here (any fixed time will do)
BATCH = 64
WORLD = 4


class ScriptedRun:
    """Builds the events of a 4-rank, 10-epoch run of 100 steps an epoch, one call per phase."""

    def __init__(self, epochs: int = 10, steps: int = 100, world: int = WORLD, few_metrics: bool = False) -> None:
        self.epochs, self.steps, self.world = epochs, steps, world
        self.few_metrics = few_metrics  # epochs report only main and loss (like examples/digits): two charts
        self.seq = 0
        self.now = T0
        self.step = 0

    def stamp(self, event: Event, dt: float = 0.0) -> Event:
        self.seq += 1
        self.now += dt
        return event.stamped(self.seq, self.now)

    def started(self) -> list[Event]:
        return [self.stamp(RunStarted(
            name="20240101-120000-resnet", run_dir="/runs/20240101-120000-resnet", model="model.py", dataset="dataset.py",
            epochs=self.epochs, steps_per_epoch=self.steps, batch_size=BATCH, world_size=self.world,
            hosts=["gpu-a", "gpu-a", "gpu-b", "gpu-b"][: self.world], device="cuda:0", backend="horovod", pid=4242,
            config={"monitor": "main", "mode": "max", "epochs": self.epochs, "batch_size": BATCH}))]

    def steps_of(self, epoch: int, upto: int, every: int = 10) -> list[Event]:
        """Step events of `epoch` up to `upto` steps done, one per `every` steps (as a throttled run sends)."""
        events: list[Event] = []
        for done in range(every, upto + 1, every):
            self.step = epoch * self.steps + done
            loss = 2.3 / (1 + 0.05 * self.step) + (0.4 if self.step == 250 else 0.0)  # one spike
            events.append(self.stamp(Step(epoch=epoch, step=self.step, epoch_step=done, steps_in_epoch=self.steps,
                                          loss=loss, rate=every * BATCH * self.world / 0.5, lr=0.01), 0.5))
        return events

    def epoch_end(self, epoch: int) -> list[Event]:
        accuracy = 0.5 + 0.04 * epoch
        loss = 1.5 / (1 + epoch)
        best_epoch = epoch
        metrics = {"main": accuracy, "loss": loss} if self.few_metrics else {
            "main": accuracy, "accuracy": accuracy, "loss": loss, "f1": accuracy - 0.05}
        return [
            self.stamp(EpochEnd(epoch=epoch, step=self.step, train_loss=1.6 / (1 + epoch),
                                metrics=metrics,
                                best={"value": accuracy, "epoch": best_epoch}, lr=0.01, duration=6.0), 1.0),
            self.stamp(CheckpointSaved(path="/runs/x/checkpoints/last.pt", reason="epoch", epoch=epoch + 1,
                                       step=self.step)),
        ]

    def system(self, slow_rank: int = 2) -> list[Event]:
        ranks = []
        for rank in range(self.world):
            ranks.append({"rank": rank, "host": ["gpu-a", "gpu-a", "gpu-b", "gpu-b"][rank], "cpu": 95.0 + rank,
                          "ram": (3 + rank) * 2**30, "ram_total": 64 * 2**30,
                          "step_time": 0.05 + (0.03 if rank == slow_rank else 0.0), "data_time": 0.004,
                          "gpus": [{"index": rank % 2, "name": "A100", "util": 90.0 - rank, "mem_used": 20 * 2**30,
                                    "mem_total": 80 * 2**30, "temp": 60.0 + rank, "power": 250.0}]})
        return [self.stamp(System(ranks=ranks))]

    def log(self, message: str, level: str = "warning") -> list[Event]:
        return [self.stamp(Log(level=level, message=message))]

    def command_applied(self, command: str, id: str) -> list[Event]:
        return [self.stamp(Command(id=id, command=command, status="applied", reason=f"at step {self.step}"))]

    def ended(self, status: str = "completed", reason: str = "") -> list[Event]:
        return [self.stamp(RunEnded(status=status, reason=reason, epoch=self.epochs, step=self.step), 1.0)]

    def through(self, epochs_done: int, steps_into_next: int = 0) -> list[Event]:
        """A run from its start to `epochs_done` full epochs and some steps into the next."""
        events = self.started()
        for epoch in range(epochs_done):
            events += self.steps_of(epoch, self.steps)
            events += self.system()
            events += self.epoch_end(epoch)
        if steps_into_next:
            events += self.steps_of(epochs_done, steps_into_next)
            events += self.system()
        return events

    def clock(self) -> float:
        """The fixed 'now' for the app: just after the newest event."""
        return self.now + 1.0


async def settle(pilot, timeout: float = 30.0, redraw: bool = True) -> None:  # type: ignore[no-untyped-def]
    """Wait until the app applied everything the scripted source handed out, then (`redraw`) redraw at once."""
    from scorch_tui.screens.run_view import RunScreen

    app = pilot.app
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        screen = app.run_screen
        source = screen.source if screen is not None else None
        if screen is not None and source.unread == 0 and screen.model.applied >= source.delivered:
            await pilot.pause()
            if source.unread == 0 and screen.model.applied >= source.delivered:
                break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("the app did not take in the scripted items in time")
    screen = app.run_screen
    assert isinstance(screen, RunScreen)
    if redraw:
        screen.redraw(force=True)
        await pilot.pause()


def read_until(source, want, timeout: float = 30.0) -> list:  # type: ignore[no-untyped-def]
    """Items read from `source` until `want(items so far)` holds; AssertionError after `timeout` seconds."""
    items: list = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        items.extend(source.read(0.05))
        if want(items):
            return items
    raise AssertionError(f"not seen within {timeout} s: {items[-20:]}")


async def until(pilot, condition, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    """Let the app run until `condition()` holds (a screen pushed, a redraw done), at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        await pilot.pause(0.05)


def items_of(*groups: list[Event]) -> Iterator[Event]:
    for group in groups:
        yield from group


class ScriptedSource(Source):
    """A fake of the same surface: tests feed items and read back the commands sent.

    Commands get `ack_status` (accepted by default) at once, like a run that answers.
    """

    def __init__(self, label: str = "scripted", commands_off: str = "", ack_status: str = "accepted",
                 ack_reason: str = "") -> None:
        super().__init__()
        self.label = label
        self.commands_off = commands_off
        self.ack_status = ack_status
        self.ack_reason = ack_reason
        self.sent: list[tuple[str, bool]] = []  # every command that reached the "run"
        self.delivered = 0  # items handed out by read(): tests wait until the app applied them all
        self._items: queue.SimpleQueue[Item] = queue.SimpleQueue()
        self.closed = False

    def feed(self, *items: Item) -> None:
        for item in items:
            self._items.put(item)

    def connection(self, state: str, detail: str = "") -> None:
        self.feed(ConnectionChanged(state, detail))

    @property
    def unread(self) -> int:
        return self._items.qsize()

    def read(self, timeout: float) -> list[Item]:
        items = super().read(timeout)
        self.delivered += len(items)
        return items

    def _read(self, timeout: float) -> list[Item]:
        items: list[Item] = []
        try:
            items.append(self._items.get(timeout=timeout) if timeout > 0 else self._items.get_nowait())
        except queue.Empty:
            return items
        while len(items) < MAX_BATCH:
            try:
                items.append(self._items.get_nowait())
            except queue.Empty:
                break
        return items

    def _command(self, command: str, after_epoch: bool, value: str | None = None) -> CommandAck:
        self.sent.append((command, after_epoch) if value is None else (command, after_epoch, value))
        return CommandAck(command, self.ack_status, self.ack_reason, f"cmd{len(self.sent)}", after_epoch, value)

    def close(self) -> None:
        self.closed = True
