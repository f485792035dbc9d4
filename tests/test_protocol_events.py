"""Events: one definition shared by the log, the wire and the dashboard."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from scorch.events_log import Writer, read_events
from scorch.telemetry import protocol
from scorch.telemetry.protocol import (
    EVENT_TYPES,
    Ack,
    CommandRequest,
    EpochEnd,
    Error,
    EventsPage,
    Heartbeat,
    Hello,
    ProtocolError,
    Replay,
    RunEnded,
    RunStarted,
    Snapshot,
    Step,
    decode,
    decode_reply,
    decode_request,
)


@pytest.mark.parametrize("cls", list(EVENT_TYPES.values()))
def test_every_event_round_trips(cls):
    event = cls().stamped(7, 123.5)
    assert decode(event.to_json()) == event
    assert protocol.event_frames(event) == [cls.type.encode(), event.to_json().encode()]


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


def test_a_torn_line_in_the_middle_is_skipped_not_fatal(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text('{"type": "epo\n' + EpochEnd().stamped(1, 1.0).to_json() + "\n")
    assert read_events(str(path)) == [EpochEnd().stamped(1, 1.0)]


def test_appending_after_a_crash_drops_the_torn_line(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text(RunEnded(status="failed").stamped(1, 1.0).to_json() + '\n{"type": "st')
    log = Writer(str(path))
    log.event(RunEnded().stamped(2, 2.0))
    log.close()
    assert [e.seq for e in read_events(str(path))] == [1, 2]
    assert all(json.loads(line) for line in path.read_text().splitlines())


def test_importing_scorch_and_the_protocol_does_not_import_torch():
    code = "import sys, scorch, scorch.telemetry.protocol, scorch.config; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# -- the wire ------------------------------------------------------------------------------------

@pytest.mark.parametrize("message", [Hello(), Replay(after_seq=5, limit=10), Ack(id="c1", status="accepted"),
                                     CommandRequest(command="stop", id="c1", token="t", after_epoch=True),
                                     Error(reason="request is not JSON")])
def test_every_wire_message_round_trips(message):
    assert type(message).decode(message.encode()) == message


def test_snapshots_and_replay_pages_round_trip_with_their_events():
    history = [RunStarted(name="r", epochs=3).stamped(1, 1.0), Step(step=3, loss=0.5).stamped(2, 2.0)]
    snapshot = Snapshot(last_seq=2, state="running", dropped=1, run=history[0], history=history)
    assert Snapshot.decode(snapshot.encode()) == snapshot
    page = EventsPage(events=history, last_seq=7, more=True)
    assert EventsPage.decode(page.encode()) == page
    # AND the publisher's way, from JSON text it keeps, encodes the very same bytes
    texts = [e.to_json() for e in history]
    assert Snapshot.encode_parts(2, "running", 1, texts[0], texts) == snapshot.encode()
    assert EventsPage.encode_parts([t.encode() for t in texts], 7, True) == page.encode()


def test_requests_are_told_apart_by_op_and_a_bad_one_says_what_is_wrong():
    assert decode_request(b'{"op": "replay", "after_seq": 3}') == Replay(after_seq=3)
    assert decode_request(b'{"op": "hello", "from": "a newer client"}') == Hello()
    for raw, why in [(b"\xff", "not JSON"), (b"[1]", "not a JSON object"), (b'{"op": "x"}', "unknown op 'x'"),
                     (b'{"op": "replay", "limit": "9"}', "replay.limit")]:
        with pytest.raises(ProtocolError, match=why):
            decode_request(raw)


def test_a_reply_is_the_one_expected_or_the_error_the_run_sent():
    assert decode_reply(Ack(id="c", status="refused", reason="wrong token").encode(), Ack).reason == "wrong token"
    assert decode_reply(Error(reason="unknown op").encode(), Snapshot) == Error(reason="unknown op")
    with pytest.raises(ProtocolError):
        decode_reply(b"[]", Snapshot)


def test_a_heartbeat_with_fields_of_a_newer_version_still_reads():
    beat = Heartbeat(time=5.0, last_seq=9, state="running")
    kind, body = beat.frames()
    data = json.loads(body)
    assert kind == b"heartbeat" and data["type"] == "heartbeat" and data["v"] == protocol.SCHEMA_VERSION
    data["per_rank"] = [{"rank": 1, "age": 0.5}]  # a field this version does not know
    assert Heartbeat.decode(json.dumps(data)) == beat
    with pytest.raises(ProtocolError):
        Heartbeat.decode('{"type": "heartbeat", "last_seq": "nine"}')
