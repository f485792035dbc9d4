"""Sources: replay of a saved run, following a file, and a live run over real ZeroMQ sockets."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from helpers.tui import FakeRun, ScriptedRun, ScriptedSource
from scorch_tui.sources import (
    ENDED,
    ERROR,
    FOLLOWING,
    LIVE,
    MAX_BATCH,
    RECONNECTING,
    REPLAY,
    CommandAck,
    ConnectionChanged,
    LiveSource,
    ReplaySource,
    RunInfo,
    SourceError,
    SourceReader,
)

from scorch.events_log import read_events
from scorch.telemetry.protocol import Event, Log, RunEnded, RunStarted, Step


def drain(source, until=lambda items: False, timeout: float = 10.0) -> list:
    """Read from `source` until `until(all items so far)` holds or nothing more comes (replay) / time is up."""
    items: list = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = source.read(0.05)
        items.extend(batch)
        if until(items):
            return items
    return items


def events_in(items: list) -> list[Event]:
    return [item for item in items if isinstance(item, Event)]


def states_in(items: list) -> list[str]:
    return [item.state for item in items if isinstance(item, ConnectionChanged)]


# -- replay ---------------------------------------------------------------------------------------


def test_replay_hands_over_run_json_then_every_event_in_order(finished_run: Path):
    source = ReplaySource(str(finished_run))
    items = drain(source, until=lambda items: any(isinstance(e, RunEnded) for e in items), timeout=5.0)
    assert isinstance(items[0], RunInfo) and items[0].info["state"] == "completed"
    assert states_in(items) == [REPLAY]
    assert [e.seq for e in events_in(items)] == [e.seq for e in read_events(str(finished_run / "events.jsonl"))]
    assert source.commands_off.startswith("replay")


def test_a_long_log_arrives_in_slices(tmp_path: Path):
    # GIVEN a run folder with 12,001 events
    run = ScriptedRun(epochs=200, steps=600)
    events = run.started()
    for epoch in range(20):
        events += run.steps_of(epoch, 600, every=1)
    (tmp_path / "events.jsonl").write_text("".join(e.to_json() + "\n" for e in events))
    # WHEN it is replayed
    source = ReplaySource(str(tmp_path))
    sizes = []
    got: list[Event] = []
    while True:
        batch = events_in(source.read(0.0))
        if not batch:
            break
        sizes.append(len(batch))
        got += batch
    # THEN each read hands over a bounded slice, and together they are the whole log, in order
    assert max(sizes) <= MAX_BATCH and len(sizes) >= 3
    assert [e.seq for e in got] == [e.seq for e in events]


def test_a_torn_last_line_is_dropped_and_a_bad_middle_line_is_skipped_with_a_warning(tmp_path: Path):
    run = ScriptedRun()
    good = [e.to_json() for e in run.through(1)]
    (tmp_path / "events.jsonl").write_text("\n".join(good) + '\n{"type":"step","seq":9')
    items = drain(ReplaySource(str(tmp_path)), timeout=0.3)
    assert len(events_in(items)) == len(good) and ERROR not in states_in(items)

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "events.jsonl").write_text("\n".join([good[0], "not json", *good[1:]]) + "\n")
    items = drain(ReplaySource(str(bad)), until=lambda items: len(events_in(items)) > len(good), timeout=10.0)
    # THEN every good event shows, and a warning in the event log names the line; no error state
    assert [e.seq for e in events_in(items) if e.seq] == [json.loads(line)["seq"] for line in good]
    warnings = [e for e in events_in(items) if isinstance(e, Log) and e.level == "warning"]
    assert ERROR not in states_in(items) and len(warnings) == 1 and "line 2 skipped" in warnings[0].message


def test_follow_picks_up_lines_as_they_are_written(tmp_path: Path):
    # GIVEN a run without telemetry that has written its first events, the last one half-way
    run = ScriptedRun()
    events = run.through(1, 30)
    log = tmp_path / "events.jsonl"
    text = "".join(e.to_json() + "\n" for e in events)
    log.write_text(text[:-20])
    source = ReplaySource(str(tmp_path), follow=True)
    items = drain(source, timeout=0.5)
    assert states_in(items) == [FOLLOWING]
    assert len(events_in(items)) == len(events) - 1  # the half-written line waits
    assert source.commands_off.startswith("read-only")
    # WHEN the line is finished and the run ends
    with open(log, "a") as fh:
        fh.write(text[-20:] + "".join(e.to_json() + "\n" for e in run.ended()))
    items = drain(source, until=lambda items: ENDED in states_in(items), timeout=3.0)
    # THEN the rest arrives, and the end is noticed
    assert [type(e) for e in events_in(items)] == [type(events[-1]), RunEnded]
    assert ENDED in states_in(items)


def test_not_a_run_folder_is_refused_with_a_message(tmp_path: Path):
    with pytest.raises(SourceError, match="not a scorch run folder"):
        ReplaySource(str(tmp_path))
    with pytest.raises(SourceError, match="no such folder"):
        ReplaySource(str(tmp_path / "missing"))


def test_commands_to_a_source_that_takes_none_are_refused_with_its_reason():
    source = ScriptedSource(commands_off="read-only: no token")
    source.send("checkpoint")
    [ack] = source.read(0.0)
    assert ack == CommandAck("checkpoint", "refused", "read-only: no token")
    assert source.sent == []


def test_the_reader_thread_delivers_batches_and_closes_the_source():
    source = ScriptedSource()
    got: list = []
    reader = SourceReader(source, got.extend)
    reader.start()
    source.feed(*ScriptedRun().started())
    deadline = time.monotonic() + 5
    while not got and time.monotonic() < deadline:
        time.sleep(0.01)
    reader.stop()
    assert isinstance(got[0], RunStarted)
    assert source.closed


class SnapshotOnlyClient:
    """Just enough of RunClient to hand LiveSource one snapshot."""

    def __init__(self, history: list[Event], state: str) -> None:
        from scorch.telemetry.client import Snapshot

        self.snapshot = Snapshot(run=None, history=history, last_seq=history[-1].seq, state=state)
        self.control = "tcp://127.0.0.1:1"
        self.last_heartbeat = time.monotonic()
        self.last_seq: int | None = None

    def subscribe(self, wait: bool = True) -> bool:
        return True

    def hello(self, newer_only: bool = False):  # type: ignore[no-untyped-def]
        return self.snapshot

    def recv(self, timeout: float) -> None:
        time.sleep(timeout)

    def close(self) -> None:
        pass


def test_a_resumed_run_is_still_live_though_its_history_holds_an_end():
    # GIVEN a run that was preempted, then resumed, and is running again
    run = ScriptedRun()
    history = run.through(1) + run.ended("preempted") + run.started() + run.steps_of(1, 20)
    source = LiveSource(lambda: SnapshotOnlyClient(history, "running"), "test")
    # WHEN the dashboard connects
    items = source.read(0.0)
    # THEN it has the whole history and stays live
    assert [e.seq for e in events_in(items)] == [e.seq for e in history]
    assert states_in(items) == [LIVE]
    source.close()


def test_a_snapshot_of_an_ended_run_ends_the_connection():
    run = ScriptedRun()
    history = run.through(1) + run.ended("completed")
    source = LiveSource(lambda: SnapshotOnlyClient(history, "completed"), "test")
    items = source.read(0.0)
    assert states_in(items) == [LIVE, ENDED]
    source.send("checkpoint")
    [ack] = source.read(0.0)
    assert ack.status == "failed" and ack.reason == "the run has ended"


# -- live, over real sockets ----------------------------------------------------------------------


@pytest.fixture
def job(tmp_path: Path):
    job = FakeRun(tmp_path / "run")
    yield job
    job.close()


def test_live_source_sees_history_then_the_stream_and_sends_commands(job: FakeRun):
    # GIVEN a job that has already trained a while
    script = ScriptedRun()
    for event in script.through(1, 30):
        job.emit(event)
    source = LiveSource.from_run_dir(job.folder.path)
    try:
        # WHEN the dashboard connects
        items = drain(source, until=lambda items: any(isinstance(e, Step) and e.epoch_step == 30 for e in items))
        # THEN it is live with the history so far
        assert states_in(items)[-1] == LIVE
        assert isinstance(events_in(items)[0], RunStarted)
        # AND new events stream in
        job.emit(Step(epoch=1, step=140, epoch_step=40, steps_in_epoch=100, loss=0.5))
        items = drain(source, until=lambda items: any(isinstance(e, Step) and e.step == 140 for e in items))
        assert any(isinstance(e, Step) and e.step == 140 for e in items)
        # AND a checkpoint command reaches the job's control queue and is acknowledged
        source.send("checkpoint")
        items = drain(source, until=lambda items: any(isinstance(i, CommandAck) for i in items))
        [ack] = [i for i in items if isinstance(i, CommandAck)]
        assert ack.status == "accepted" and ack.id
        assert [r.command for r in job.control.take()] == ["checkpoint"]
        # AND the end of the run ends the connection
        job.emit(RunEnded(status="stopped", reason="stop requested"))
        items = drain(source, until=lambda items: ENDED in states_in(items))
        assert ENDED in states_in(items)
    finally:
        source.close()


def test_without_the_token_the_live_source_is_read_only(job: FakeRun):
    os.unlink(job.folder.token_path)
    source = LiveSource.from_run_dir(job.folder.path)
    try:
        assert "read-only: no token" in source.commands_off and ".token" in source.commands_off
    finally:
        source.close()


def test_live_source_reconnects_when_the_job_comes_back_on_new_ports(tmp_path: Path):
    # GIVEN a dashboard watching a job
    job = FakeRun(tmp_path / "run")
    script = ScriptedRun()
    for event in script.through(1, 30):
        job.emit(event)
    source = LiveSource.from_run_dir(job.folder.path, quiet_after=1.0, retry_after=0.2)
    try:
        items = drain(source, until=lambda items: LIVE in states_in(items))
        drain(source, timeout=0.3)
        # WHEN the job's process goes away without a word
        seq = job.seq
        job.close()
        items = drain(source, until=lambda items: RECONNECTING in states_in(items), timeout=15)
        # THEN the source says it is reconnecting
        assert RECONNECTING in states_in(items)
        # WHEN the job resumes (new ports in run.json) and goes on
        job = FakeRun(tmp_path / "run")
        job.emit(Step(epoch=1, step=150, epoch_step=50, steps_in_epoch=100, loss=0.4))
        items = drain(source, until=lambda items: any(isinstance(e, Step) and e.step == 150 for e in items), timeout=15)
        # THEN it is live again and picks up where it was, without repeating history
        assert LIVE in states_in(items)
        assert [e.seq for e in events_in(items)] == [seq + 1]
    finally:
        source.close()
        job.close()
