"""Liveness you can trust: LIVE, STALLED (no step for a while), DEAD (process gone, or silent from afar).

The model derives one state from the heartbeat's age of the last step and the
source's verdict; these tests drive it with scripted items, real ZeroMQ
sockets, and a real process killed with SIGKILL.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.tui import ROOT, FakeRun, ScriptedRun, ScriptedSource, read_until, settle
from scorch_tui.app import ScorchApp
from scorch_tui.cli import run_dir_source
from scorch_tui.model import STALLED, RunModel
from scorch_tui.runs import read_entry
from scorch_tui.sources import (
    CONNECTING,
    DEAD,
    LIVE,
    RECONNECTING,
    CommandAck,
    ConnectionChanged,
    HeartbeatSeen,
    LiveSource,
    WaitingSource,
)

from scorch.run_folder import why_dead
from scorch.telemetry.protocol import Step


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def live_model(run: ScriptedRun) -> tuple[RunModel, Clock]:
    """A model of a run 37 steps into its 5th epoch (0.05 s a step), live, just after a heartbeat."""
    clock = Clock(0.0)
    model = RunModel(clock)
    model.apply([ConnectionChanged(LIVE, "tcp://127.0.0.1:5556"), *run.through(4, 37)])
    clock.now = run.now
    return model, clock


def test_no_step_for_ten_seconds_is_stalled_and_a_new_step_is_live_again():
    # GIVEN a live run stepping every 0.05 s, its heartbeat saying the last step was 0.2 s ago
    run = ScriptedRun()
    model, clock = live_model(run)
    model.apply([HeartbeatSeen(0.2, "training", clock.now)])
    assert model.liveness() == LIVE
    # WHEN heartbeats keep coming but the step age grows past the 10 s floor
    clock.now += 9.0
    model.apply([HeartbeatSeen(9.2, "waiting for other ranks", clock.now)])
    assert model.liveness() == LIVE
    clock.now += 1.0
    model.apply([HeartbeatSeen(10.2, "waiting for other ranks", clock.now)])
    # THEN it is STALLED, saying for how long and what rank 0 does, and shows nothing that looks live
    assert model.liveness() == STALLED
    assert model.progress_age() == pytest.approx(10.2)
    assert model.phase == "waiting for other ranks"
    assert not model.looks_live and model.eta() is None
    # AND without any heartbeat the age still grows (a frozen rank 0 sends none)
    clock.now += 20.0
    assert model.progress_age() == pytest.approx(30.2) and model.liveness() == STALLED
    # WHEN steps come again
    model.apply([HeartbeatSeen(0.1, "training", clock.now)])
    # THEN it is LIVE again
    assert model.liveness() == LIVE and model.looks_live


def test_a_slow_run_is_stalled_only_after_five_of_its_steps():
    # GIVEN a run whose steps take 4 s each
    clock = Clock(0.0)
    model = RunModel(clock)
    run = ScriptedRun()
    events = run.started()
    for step in range(1, 8):
        events.append(run.stamp(Step(epoch=0, step=step, epoch_step=step, steps_in_epoch=100, loss=1.0, rate=16.0), 4.0))
    model.apply([ConnectionChanged(LIVE), *events])
    assert model.stall_limit() == pytest.approx(20.0)
    # WHEN 15 s pass without a step: slow, not stalled; 21 s: stalled
    model.apply([HeartbeatSeen(15.0, "training", clock.now)])
    assert model.liveness() == LIVE
    model.apply([HeartbeatSeen(21.0, "training", clock.now)])
    assert model.liveness() == STALLED


def test_dead_says_why_and_stops_the_clock():
    # GIVEN a live run
    run = ScriptedRun()
    model, clock = live_model(run)
    elapsed = model.elapsed()
    # WHEN the source finds its process gone
    model.apply([ConnectionChanged(DEAD, "process 4242 is gone (killed or crashed)")])
    clock.now += 60
    # THEN the one state is DEAD, nothing looks live, elapsed stops at the last event, the log says why
    assert model.liveness() == DEAD
    assert not model.looks_live and model.eta() is None
    assert model.elapsed() == pytest.approx(elapsed)
    assert model.notes[-1].text == "run dead: process 4242 is gone (killed or crashed)"
    assert model.notes[-1].level == "error"


def test_a_resume_keeps_the_first_start_so_elapsed_never_goes_back():
    # GIVEN a run that trained, then is resumed later (a second run_started)
    run = ScriptedRun()
    model, clock = live_model(run)
    before = model.elapsed()
    note_times = [n.at for n in model.notes]
    run.now += 30
    model.apply([*run.started(), *run.steps_of(4, 40)])
    clock.now = run.now
    # THEN elapsed counts from the first start and event times keep growing
    assert model.elapsed() > before
    later = [n.at for n in model.notes]
    assert later[: len(note_times)] == note_times and later == sorted(later)


async def screen_after(size: tuple[int, int], *last: object) -> list[str]:
    """The dashboard's lines for a live 4-rank run 37 steps into its 5th epoch, then `last`."""
    run = ScriptedRun()
    source = ScriptedSource()
    source.feed(ConnectionChanged(LIVE, "tcp://127.0.0.1:5556"), *run.through(4, 37),
                *(item(run) if callable(item) else item for item in last))
    app = ScorchApp(source, clock=run.clock)
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        return app.export_text().splitlines()


async def test_header_reads_stalled_with_the_age_and_phase_and_no_eta():
    # GIVEN the dashboard on a live run whose last step was 14 s ago, rank 0 waiting for the others
    lines = await screen_after((100, 30), lambda run: HeartbeatSeen(14.0, "waiting for other ranks", run.clock()))
    header, progress = lines[0], "\n".join(lines[1:3])
    # THEN the header leads with STALLED, the age and the phase; no ETA, no samples/s
    assert "STALLED" in header and "no step for 00:00:14 (waiting for other ranks)" in header, header
    assert "RUNNING" not in header and "ETA" not in header, header
    assert "samples/s" not in progress and "it/s" not in progress, progress


async def test_header_reads_dead_with_the_reason_and_no_eta():
    lines = await screen_after((120, 30), ConnectionChanged(DEAD, "process 4242 is gone (killed or crashed)"))
    header, progress = lines[0], "\n".join(lines[1:3])
    assert "DEAD" in header and "process 4242 is gone (killed or crashed)" in header, header
    assert "RECONNECTING" not in header and "RUNNING" not in header and "ETA" not in header, header
    assert "samples/s" not in progress, progress


async def test_between_epochs_the_step_line_says_validating():
    run = ScriptedRun()
    source = ScriptedSource()
    source.feed(ConnectionChanged(LIVE), *run.through(4, 100), HeartbeatSeen(0.3, "validating", run.clock()))
    app = ScorchApp(source, clock=run.clock)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        step_line = app.export_text().splitlines()[2]
    assert step_line.strip().startswith("Validating"), step_line


# -- the picker, a fresh open and the live view agree ---------------------------------------------


def dead_run(tmp_path: Path) -> Path:
    """A run folder whose run.json says running, written by a process that has exited."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    job = FakeRun(tmp_path / "run")
    for event in ScriptedRun().through(1, 30):
        job.emit(event)
    job.close()
    job.folder.write_info(pid=gone.pid)
    return tmp_path / "run"


def test_picker_fresh_open_and_run_folder_agree_on_dead(tmp_path: Path):
    run_dir = dead_run(tmp_path)
    info = json.loads((run_dir / "run.json").read_text())
    reason = why_dead(info)
    # THEN the words are the same everywhere: the picker's row, the opened run, the shared check
    assert reason.startswith("process ") and "is gone" in reason
    entry = read_entry(str(run_dir))
    assert entry.liveness == "dead" and entry.dead_reason == reason
    source = run_dir_source(str(run_dir), None, False, None)
    try:
        states = [i for i in source.read(0.0) if isinstance(i, ConnectionChanged)]
    finally:
        source.close()
    assert states[0] == ConnectionChanged(DEAD, reason)


def test_a_zombie_is_dead_too(tmp_path: Path):
    # GIVEN a killed child nobody has reaped yet (kill -9 of a job whose parent is busy)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        child.kill()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            stat = Path(f"/proc/{child.pid}/stat").read_text()
            if stat.rpartition(")")[2].split()[0] == "Z":
                break
            time.sleep(0.05)
        # THEN it counts as gone
        assert why_dead({"state": "running", "pid": child.pid})
    finally:
        child.wait()


# -- over real sockets ------------------------------------------------------------------------------


def test_the_heartbeat_carries_the_age_of_the_last_step_and_the_phase(tmp_path: Path):
    # GIVEN a publisher whose trainer last stepped `age` seconds ago
    age = {"value": 0.5, "phase": "training"}
    job = FakeRun(tmp_path / "run", progress=lambda: (age["value"], age["phase"]))
    source = LiveSource.from_run_dir(job.folder.path)
    model = RunModel()
    try:
        for event in ScriptedRun().through(1, 30):
            job.emit(event)
        items = read_until(source, lambda items: any(isinstance(i, HeartbeatSeen) for i in items), 15)
        model.apply(items)
        assert model.liveness() == LIVE
        # WHEN the trainer stops stepping (waiting for another rank)
        age.update(value=42.0, phase="waiting for other ranks")
        items = read_until(source, lambda items: any(isinstance(i, HeartbeatSeen) and i.progress_age == 42.0
                                                    for i in items), 15)
        model.apply(items)
        # THEN the dashboard says STALLED, with the phase
        assert model.liveness() == STALLED and model.phase == "waiting for other ranks"
    finally:
        source.close()
        job.close()


JOB = """
import sys, time
from pathlib import Path
sys.path.insert(0, {tests!r})
from helpers.tui import FakeRun, ScriptedRun
job = FakeRun(Path({run_dir!r}))
for event in ScriptedRun().through(1, 30):
    job.emit(event)
print("ready", flush=True)
time.sleep(300)
"""


def test_kill_9_reads_dead_within_seconds_and_a_resume_is_followed_again(tmp_path: Path):
    # GIVEN a real publishing process and a dashboard source watching it
    run_dir = tmp_path / "run"
    job = subprocess.Popen([sys.executable, "-c", JOB.format(tests=str(ROOT / "tests"), run_dir=str(run_dir))],
                           stdout=subprocess.PIPE)
    source = None
    try:
        assert job.stdout is not None and job.stdout.readline() == b"ready\n"
        source = LiveSource.from_run_dir(str(run_dir))
        read_until(source, lambda items: ConnectionChanged(LIVE, "") in items or any(
            isinstance(i, ConnectionChanged) and i.state == LIVE for i in items), 20)
        # WHEN it is killed with SIGKILL
        job.kill()
        job.wait()
        killed = time.monotonic()
        items = read_until(source, lambda items: any(isinstance(i, ConnectionChanged) and i.state == DEAD
                                                     for i in items), 20)
        # THEN the source says DEAD, naming the process, well within 5 s, never RECONNECTING first
        took = time.monotonic() - killed
        states = [i for i in items if isinstance(i, ConnectionChanged)]
        assert states[-1] == ConnectionChanged(DEAD, f"process {job.pid} is gone (killed or crashed)")
        assert RECONNECTING not in [s.state for s in states]
        print(f"DEAD {took:.1f} s after SIGKILL")  # the goal is under 5 s; timing is not asserted under load
        # WHEN the run is resumed by a new process (new pid, new ports, new token)
        old_token = (run_dir / ".token").read_text()
        resumed = FakeRun(run_dir)
        try:
            assert (run_dir / ".token").read_text() != old_token
            items = read_until(source, lambda items: any(isinstance(i, ConnectionChanged) and i.state == LIVE
                                                         for i in items), 20)
            # THEN it is live again, and commands go through with the new token
            source.send("checkpoint")
            items = read_until(source, lambda items: any(isinstance(i, CommandAck) for i in items), 20)
            [ack] = [i for i in items if isinstance(i, CommandAck)]
            assert ack.status == "accepted", ack
        finally:
            resumed.close()
    finally:
        if source is not None:
            source.close()
        if job.poll() is None:
            job.kill()
            job.wait()


async def test_time_alone_turns_live_into_stalled_on_every_panel():
    # GIVEN the dashboard on a live run that just stepped
    run = ScriptedRun()
    clock = Clock(run.clock())
    source = ScriptedSource()
    source.feed(ConnectionChanged(LIVE), *run.through(4, 37), HeartbeatSeen(0.2, "training", clock.now))
    app = ScorchApp(source, clock=clock)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        assert "samples/s" in app.export_text()
        # WHEN 15 s pass with no item at all (a frozen rank 0 sends nothing)
        clock.now += 15
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and "samples/s" in app.export_text():
            await pilot.pause(0.1)
        text = app.export_text()
    # THEN the header says STALLED and the speed is gone from the progress panel too
    assert "STALLED" in text.splitlines()[0] and "samples/s" not in text, text


# -- scorch-tui --wait RUN_DIR ---------------------------------------------------------------------


def test_wait_says_the_run_has_not_started_then_watches_it_live(tmp_path: Path):
    # GIVEN a dashboard waiting on a folder no run has written yet
    run_dir = tmp_path / "next"
    source = WaitingSource(str(run_dir), lambda: run_dir_source(str(run_dir), None, False, None), poll=0.05)
    job = None
    try:
        items = source.read(0.05)
        assert ConnectionChanged(CONNECTING, f"waiting for {run_dir}: the run has not started yet") in items
        assert source.commands_off == "waiting for the run to start"
        # AND an events.jsonl made before run.json has the config does not fool it (the trainer opens it early)
        run_dir.mkdir()
        (run_dir / "events.jsonl").write_text("")
        assert not any(isinstance(i, ConnectionChanged) for i in source.read(0.05)) and source.commands_off
        # WHEN the job starts there
        job = FakeRun(run_dir)
        for event in ScriptedRun().through(1, 30):
            job.emit(event)
        items = read_until(source, lambda items: any(isinstance(i, ConnectionChanged) and i.state == LIVE
                                                     for i in items), 20)
        # THEN the dashboard is live on it, history included, and commands go through
        assert any(isinstance(i, Step) for i in items)
        assert source.commands_off == ""
        source.send("checkpoint")
        items = read_until(source, lambda items: any(isinstance(i, CommandAck) for i in items), 20)
        assert next(i for i in items if isinstance(i, CommandAck)).status == "accepted"
    finally:
        source.close()
        if job is not None:
            job.close()


def test_wait_is_refused_with_ssh_and_without_a_folder(capsys):
    from scorch_tui.cli import tui_main

    assert tui_main(["--wait"]) == 2
    assert "--wait needs the run folder" in capsys.readouterr().err
    assert tui_main(["--wait", "--ssh", "me@host", "runs/x"]) == 2
    assert "--wait watches a local run folder" in capsys.readouterr().err


def test_a_run_caught_while_starting_takes_commands_once_its_token_is_there(tmp_path: Path):
    # GIVEN a run folder whose run.json has the config but no endpoints and no token yet (the trainer is starting)
    run_dir = tmp_path / "starting"
    run_dir.mkdir()
    (run_dir / "run.json").write_text(json.dumps({"state": "running", "pid": os.getpid(), "config": {"telemetry": True}}))
    source = run_dir_source(str(run_dir), None, False, None)
    job = None
    try:
        assert isinstance(source, LiveSource) and source.commands_off.startswith("read-only: no token")
        items = source.read(0.05)
        assert [i.state for i in items if isinstance(i, ConnectionChanged)] == [CONNECTING]
        # WHEN the publisher starts (token, then endpoints)
        job = FakeRun(run_dir)
        for event in ScriptedRun().through(1, 30):
            job.emit(event)
        read_until(source, lambda items: any(isinstance(i, ConnectionChanged) and i.state == LIVE for i in items), 20)
        # THEN commands are on
        assert source.commands_off == ""
    finally:
        source.close()
        if job is not None:
            job.close()
