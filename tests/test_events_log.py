"""events.jsonl has one reader and one writer (scorch/events_log.py), and one rule for every reader."""

from __future__ import annotations

from pathlib import Path

import pytest

from scorch import events_log
from scorch.telemetry.protocol import EpochEnd, Log, RunEnded, Step


def write_lines(path: Path, *lines: str) -> None:
    path.write_text("".join(line + "\n" for line in lines))


def ends(*seqs: int) -> list[str]:
    return [EpochEnd(epoch=seq, metrics={"main": 0.5}).stamped(seq, 1.0).to_json() for seq in seqs]


def test_a_torn_last_line_is_dropped_and_a_follower_gets_it_once_whole(tmp_path):
    path = tmp_path / "events.jsonl"
    whole = RunEnded(status="completed").stamped(3, 1.0).to_json()
    path.write_text("".join(line + "\n" for line in ends(1, 2)) + whole[:10])
    # GIVEN a log whose last line is half written
    reader = events_log.Reader(str(path))
    # THEN the reader hands out the whole lines only, and knows a line is waiting
    assert [e.seq for e in reader.events()] == [1, 2] and reader.torn and reader.skipped == 0
    # WHEN the rest of the line arrives, THEN a follower reads it, once
    with open(path, "a") as fh:
        fh.write(whole[10:] + "\n")
    assert [e.seq for e in reader.events()] == [3] and not reader.torn
    assert reader.events() == []


def test_a_bad_line_mid_file_is_skipped_counted_and_hides_nothing(tmp_path):
    path = tmp_path / "events.jsonl"
    # GIVEN a log with a torn line in the middle (a crash, then a resume that appended), a line that is
    # JSON but no event, and a line of a type this version does not know
    write_lines(path, *ends(1), '{"type": "epo', *ends(2), '{"type": "step", "seq": 3, "loss": "high"}',
                '{"type": "from_the_future", "seq": 4}', *ends(5))
    reader = events_log.Reader(str(path))
    # THEN every good event is read, the bad lines are counted, and said in one warning naming the file and lines
    assert [e.seq for e in reader.events()] == [1, 2, 5]
    assert reader.skipped == 2 and reader.refused == 0
    assert str(path) in reader.warning() and "line 2" in reader.warning() and "line 4" in reader.warning()
    # AND the unknown type still counts for seq order (its text goes to replay)
    assert [line.seq for line in events_log.Reader(str(path)).lines()] == [1, 2, 4, 5]


def test_a_seq_out_of_order_is_refused_and_never_seeds_the_numbering(tmp_path):
    path = tmp_path / "events.jsonl"
    # GIVEN a log whose last line repeats an older seq (a second writer, a hand edit)
    write_lines(path, *ends(1, 2, 3), *ends(2))
    reader = events_log.Reader(str(path))
    assert [e.seq for e in reader.events()] == [1, 2, 3]
    assert reader.refused == 1 and "seq 2 does not follow seq 3" in reader.warning()
    # WHEN a resumed run opens the log to append
    writer = events_log.Writer(str(path))
    # THEN it numbers on from the highest seq in order, not from the last line
    assert writer.last_seq == 3
    writer.event(Log(message="resumed").stamped(writer.last_seq + 1, 2.0))
    writer.close()
    assert [e.seq for e in events_log.read_events(str(path))] == [1, 2, 3, 4]


def test_the_writer_reads_an_existing_log_once_and_cuts_its_torn_tail(tmp_path, monkeypatch):
    path = tmp_path / "events.jsonl"
    path.write_text("".join(line + "\n" for line in ends(1, 2)) + '{"type": "st')
    reads = []
    lines = events_log.Reader.lines

    def counted(self, limit=None):
        reads.append(self.offset)
        return lines(self, limit)

    monkeypatch.setattr(events_log.Reader, "lines", counted)
    seen: list[int] = []
    # WHEN a resumed run opens its log, with a visitor (the publisher's history)
    writer = events_log.Writer(str(path), visit=lambda line: seen.append(line.seq))
    # THEN one pass gave both the numbering and the visitor's events
    assert reads == [0] and writer.last_seq == 2 and seen == [1, 2]
    # AND the torn line is gone before anything is appended
    writer.event(Step(step=1).stamped(3, 3.0))
    writer.close()
    assert path.read_text().count("\n") == 3 and '{"type": "st' not in path.read_text()


def test_after_a_failed_write_the_log_takes_only_run_ended_and_every_other_event_raises_again(tmp_path, monkeypatch):
    # GIVEN a log whose disk fills up half-way through a line (the first write of it lands 10 bytes, then ENOSPC)
    import errno
    import os

    path = tmp_path / "events.jsonl"
    writer = events_log.Writer(str(path))
    writer.event(Step(step=1).stamped(1, 1.0))
    real_write, full = os.write, [True]

    def short(fd, data):
        if full[0]:
            return real_write(fd, data[:10])
        return real_write(fd, data)

    monkeypatch.setattr(events_log.os, "write", short)
    # WHEN the next event does not fit THEN it raises naming the log, and the partial line is taken back
    with pytest.raises(OSError) as raised:
        writer.event(Step(step=2).stamped(2, 2.0))
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(path)
    # AND any later event raises the same error (another thread met the full disk first: the loop still stops)
    full[0] = False  # room again (the run freed its .reserve)
    with pytest.raises(OSError):
        writer.event(Log(message="after").stamped(3, 3.0))
    # AND run_ended is still written, as the last line
    writer.event(RunEnded(status="failed", reason="disk full").stamped(4, 4.0))
    writer.event(Log(message="after the end").stamped(5, 5.0))  # the log is closed: nothing more, no error
    assert [(e.type, e.seq) for e in events_log.read_events(str(path))] == [("step", 1), ("run_ended", 4)]


def test_a_seq_far_ahead_is_refused_and_the_events_after_it_are_kept(tmp_path):
    path = tmp_path / "events.jsonl"
    # GIVEN a log with a line pasted in whose seq jumps far ahead of the run's numbering
    write_lines(path, *ends(1, 2, 3), *ends(999_999), *ends(4, 5))
    reader = events_log.Reader(str(path))
    # THEN that line is refused, the run's own events after it are all read
    assert [e.seq for e in reader.events()] == [1, 2, 3, 4, 5]
    assert reader.refused == 1 and "seq 999999 jumps more than 1000 past seq 3" in reader.warning()
    # AND a resumed run numbers on from the run's own last seq
    writer = events_log.Writer(str(path))
    assert writer.last_seq == 5
    writer.close()


def test_replay_pages_skip_bad_lines_and_page_by_seq(tmp_path):
    path = tmp_path / "events.jsonl"
    write_lines(path, *ends(*range(1, 300)), "not json", *ends(*range(300, 700)))
    pages = events_log.Pages(str(path))
    pages.INDEX_EVERY = 50
    got, after = [], 0
    while True:
        texts, more = pages.page(after, 120, 650, 1 << 20)
        got += [int(text.split(b'"seq":')[1].split(b",")[0]) for text in texts]
        after = got[-1]
        if not more:
            break
    assert got == list(range(1, 651))
    # AND a page from the middle starts from the index, not the top of the file
    texts, more = pages.page(600, 5, 650, 1 << 20)
    assert more and len(texts) == 5 and b'"seq":601' in texts[0]


def test_last_of_type_reads_from_the_end(tmp_path):
    path = tmp_path / "events.jsonl"
    write_lines(path, *ends(1, 2), RunEnded().stamped(3, 1.0).to_json(), '{"type": "epoch_end", "seq": 4, "epo')
    assert events_log.last_of_type(str(path), "epoch_end", tail_bytes=16)["seq"] == 2
    assert events_log.last_of_type(str(tmp_path / "none.jsonl"), "epoch_end") is None


@pytest.mark.parametrize("run_dir", ["runs/a", "/abs/b"])
def test_the_log_of_a_run_folder(run_dir):
    assert events_log.path(run_dir) == f"{run_dir}/{events_log.EVENTS_FILE}"


def test_a_resumed_run_reads_its_log_once_for_its_numbering_and_its_live_history(tmp_path, monkeypatch):
    from helpers.runs import tiny_args, train

    from scorch.cli import build_parser
    from scorch.config import from_namespace
    from scorch.telemetry.client import RunClient
    from scorch.trainer import build

    # GIVEN a finished run
    assert train(tiny_args(tmp_path / "run", "--epochs", "1", "--no-tensorboard", "--no-telemetry")) == 0
    logged = events_log.read_events(events_log.path(str(tmp_path / "run")))
    reads = []
    lines = events_log.Reader.lines
    monkeypatch.setattr(events_log.Reader, "lines", lambda self, limit=None: (reads.append(self.path), lines(self, limit))[1])
    # WHEN it is resumed with telemetry on
    args = build_parser().parse_args(["--resume", str(tmp_path / "run"), "--epochs", "2", "--headless", "--telemetry"])
    trainer = build(from_namespace(args), {"epochs", "headless", "telemetry"})
    try:
        # THEN its log was read once, and that one read gave both the numbering and the late joiner's history
        assert reads == [events_log.path(str(tmp_path / "run"))]
        assert trainer.emitter.seq == logged[-1].seq
        with RunClient.from_run_dir(str(tmp_path / "run")) as client:
            snapshot = client.hello()
        assert snapshot.last_seq == logged[-1].seq and snapshot.run is not None and snapshot.run.seq == logged[0].seq
    finally:
        trainer.close()
