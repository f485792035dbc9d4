"""Events: one definition shared by the log, the wire and the dashboard."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from scorch.telemetry import protocol
from scorch.telemetry.protocol import EVENT_TYPES, EpochEnd, ProtocolError, RunEnded, decode, read_events


@pytest.mark.parametrize("cls", list(EVENT_TYPES.values()))
def test_every_event_round_trips(cls):
    event = cls().stamped(7, 123.5)
    assert decode(event.to_json()) == event
    assert protocol.encode_frames(event)[0] == cls.type.encode()


def test_unknown_types_are_skipped_and_unknown_fields_ignored():
    assert decode('{"type": "from_the_future", "seq": 1}') is None
    event = decode('{"type": "run_ended", "seq": 3, "status": "stopped", "new_field": [1, 2]}')
    assert event == RunEnded(seq=3, status="stopped")


@pytest.mark.parametrize("raw", [b"\xff\xfe", "not json", "[1, 2]", '{"seq": 1}', '{"type": "epoch_end", "metrics": 3}',
                                 '{"type": "step", "epoch": "one"}', '{"type": "step", "loss": true}'])
def test_malformed_input_raises_protocol_error_only(raw):
    with pytest.raises(ProtocolError):
        decode(raw)


def test_reader_skips_a_torn_last_line(tmp_path):
    path = tmp_path / "events.jsonl"
    good = [EpochEnd(epoch=i, metrics={"main": 0.5}).stamped(i + 1, 1.0) for i in range(3)]
    path.write_text("".join(e.to_json() + "\n" for e in good) + '{"type": "epoch_e')
    assert read_events(str(path)) == good


def test_torn_line_in_the_middle_is_an_error(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text('{"type": "epo\n' + EpochEnd().to_json() + "\n")
    with pytest.raises(ProtocolError):
        read_events(str(path))


def test_appending_after_a_crash_drops_the_torn_line(tmp_path):
    from scorch.callbacks.jsonl import JsonlLog

    path = tmp_path / "events.jsonl"
    path.write_text(RunEnded(status="failed").stamped(1, 1.0).to_json() + '\n{"type": "st')
    log = JsonlLog(str(path))
    log.event(RunEnded().stamped(2, 2.0))
    log.close()
    assert [e.seq for e in read_events(str(path))] == [1, 2]
    assert all(json.loads(line) for line in path.read_text().splitlines())


def test_importing_scorch_and_the_protocol_does_not_import_torch():
    code = "import sys, scorch, scorch.telemetry.protocol, scorch.config; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
