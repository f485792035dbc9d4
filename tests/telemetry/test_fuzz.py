"""Property-based: random bytes and random JSON at the decoder and at the control socket crash nothing."""

from __future__ import annotations

import dataclasses
import json

import zmq
from helpers.telemetry import FakeRun
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scorch.telemetry.protocol import EVENT_TYPES, Event, ProtocolError, decode

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
field_values = (scalars | st.lists(scalars, max_size=3) | st.dictionaries(st.text(max_size=5), scalars, max_size=3)
                | st.sampled_from([10**309, -(10**400)]))  # integers no float can hold
# Objects that look like events: a known type, some known field names, values of any JSON type.
field_names = sorted({f.name for cls in EVENT_TYPES.values() for f in dataclasses.fields(cls)})
event_like = st.fixed_dictionaries(
    {"type": st.sampled_from(sorted(EVENT_TYPES) + ["future_event"])},
    optional={name: field_values for name in field_names},
)


def decodes_or_refuses(raw: bytes) -> None:
    try:
        result = decode(raw)
    except ProtocolError:
        return
    assert result is None or isinstance(result, Event)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_decode_or_raise_protocol_error(raw):
    decodes_or_refuses(raw)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values | event_like)
def test_random_json_decodes_or_raises_protocol_error(value):
    decodes_or_refuses(json.dumps(value).encode())


# A request stamped too long ago is dropped unanswered on purpose (test_publisher tests that): here, times that are not stale.
fresh_times = st.none() | st.text(max_size=5) | st.floats(min_value=4e9, max_value=5e9) | st.booleans()

requests = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {"op": st.sampled_from(["hello", "replay", "command", "nope"]) | json_values},
        optional={"command": st.sampled_from(["checkpoint", "stop"]) | json_values, "token": json_values,
                  "id": json_values, "time": fresh_times, "mac": json_values, "after_epoch": json_values, "after_seq": json_values, "limit": json_values},
    ).map(lambda v: json.dumps(v).encode()),
)


def test_the_control_socket_survives_random_frames(tmp_path):
    # GIVEN a live publisher with some history
    run = FakeRun(tmp_path / "run")
    run.start()
    run.steps(20)
    client = run.client(timeout=3.0)
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(run.publisher.control_endpoint)

    @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(requests, min_size=1, max_size=3))
    def throw(frames):
        # WHEN random multipart messages arrive
        sock.send_multipart(frames)
        # THEN an answer comes (every request is answered, whatever it holds), a JSON object with a known op
        assert sock.poll(30_000), f"no reply to {frames!r}"
        reply = json.loads(sock.recv_multipart()[-1])
        assert reply["op"] in ("error", "ack", "snapshot", "events")

    try:
        throw()
        # AND the publisher still answers a valid hello, and took no command without the token
        snapshot = client.hello()
        assert snapshot.run is not None and snapshot.last_seq >= 21
        assert run.control.take() == []
    finally:
        sock.close()
        client.close()
        run.close()
