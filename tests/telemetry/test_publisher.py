"""The publisher on real loopback sockets: snapshot, exact late join, commands, binds, CURVE, shutdown."""

from __future__ import annotations

import json
import os
import socket
import threading
import time

import psutil
import pytest
import zmq
from helpers.telemetry import FakeRun, as_dicts

from scorch import ctl, events_log
from scorch.errors import ScorchError
from scorch.telemetry.client import ClientError, RunClient
from scorch.telemetry.protocol import EpochEnd, Log, RunEnded, Step, System
from scorch.telemetry.publisher import StepHistory, check_bind


@pytest.fixture
def run(tmp_path):
    synthetic = FakeRun(tmp_path / "run")
    yield synthetic
    synthetic.close()


@pytest.fixture
def client(run):
    c = run.client(timeout=3.0)
    yield c
    c.close()


def test_hello_answers_with_the_run_so_far(run, client):
    # GIVEN a run with steps, an epoch end, three system samples and a warning
    run.start()
    run.steps(10)
    run.emit(EpochEnd(epoch=0, step=10, train_loss=0.5, metrics={"main": 0.9}))
    for cpu in (10.0, 20.0, 30.0):
        run.emit(System(ranks=[{"rank": 0, "cpu": cpu}]))
    last = run.emit(Log(level="warning", message="careful"))
    run.wait_published(last.seq)
    # WHEN a client says hello
    snapshot = client.hello()
    # THEN it gets the run, every event the charts need, only the latest system sample, and the last seq
    assert snapshot.run is not None and snapshot.run.epochs == 3
    assert snapshot.last_seq == last.seq == 16 and snapshot.state == "running"
    kinds = [e.type for e in snapshot.history]
    assert kinds.count("step") == 10 and kinds.count("epoch_end") == 1 and kinds.count("log") == 1
    assert [e.ranks[0]["cpu"] for e in snapshot.history if isinstance(e, System)] == [30.0]
    assert [e.seq for e in snapshot.history] == sorted(e.seq for e in snapshot.history)
    # AND once the run has ended, hello says how
    run.wait_published(run.emit(RunEnded(status="completed")).seq)
    assert client.hello().state == "completed"


def test_a_long_run_snapshot_stays_small_and_keeps_spikes_and_dips():
    # GIVEN a million-step loss curve with one spike and one dip
    history = StepHistory(buckets=512)
    for seq in range(1, 1_000_001):
        loss = 100.0 if seq == 543_210 else -5.0 if seq == 123_456 else 1.0 / seq
        history.add(seq, loss, str(seq))
    # WHEN the snapshot's step events are taken
    kept = history.items()
    seqs = [seq for seq, _ in kept]
    # THEN there are at most ~2 per bucket, the extremes and the latest are among them, evenly spread
    assert len(kept) <= 2 * 512 + 1
    assert {543_210, 123_456, 1_000_000} <= set(seqs)
    assert min(seqs) <= 2048 and len(seqs) == len(set(seqs))


def test_a_late_joiner_reconstructs_exactly_the_event_log(run, client):
    # GIVEN a run emitting steadily from another thread, as the training thread does
    run.start()
    stop = threading.Event()

    def train() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            run.emit(Step(step=i, loss=1.0 / i))
            if i % 50 == 0:
                run.emit(System(ranks=[{"rank": 0, "cpu": float(i)}]))
                run.emit(EpochEnd(epoch=i // 50, step=i))
            time.sleep(0.0005)
        run.emit(RunEnded(status="completed"))

    trainer = threading.Thread(target=train)
    trainer.start()
    try:
        time.sleep(0.3)
        # WHEN a client joins mid-run: subscribe, hello, fetch the exact history, then follow the stream
        client.subscribe()
        snapshot = client.hello()
        seen = client.replay_all(upto_seq=snapshot.last_seq)
        time.sleep(0.3)
    finally:
        stop.set()
        trainer.join()
    while not seen or seen[-1].type != "run_ended":
        event = client.recv(5.0)
        assert event is not None, "the stream went quiet before run_ended"
        seen.append(event)
    # THEN snapshot + stream is events.jsonl: same events, same order, no gap, no duplicate
    assert snapshot.last_seq > 1 and len(seen) > snapshot.last_seq
    assert as_dicts(seen) == run.logged()


def test_a_resumed_run_shows_its_whole_history_and_is_live_again(tmp_path):
    # GIVEN a run that stopped after 20 steps, and a new process resuming it
    first = FakeRun(tmp_path / "run")
    first.start()
    first.steps(20)
    first.emit(RunEnded(status="stopped"))
    first.close()
    resumed = FakeRun(tmp_path / "run", resume=True)
    client = resumed.client()
    try:
        resumed.start()
        resumed.steps(5, start=20)
        resumed.wait_published(resumed.seq)
        # WHEN a client says hello and fetches the exact history
        snapshot = client.hello()
        everything = client.replay_all(upto_seq=snapshot.last_seq)
        ack = client.command("checkpoint")
    finally:
        client.close()
        resumed.close()
    # THEN it sees both processes' events, and the run counts as running (commands accepted)
    assert snapshot.state == "running" and snapshot.last_seq == 1 + 20 + 1 + 1 + 5
    assert [e.type for e in snapshot.history].count("step") == 25
    assert snapshot.run is not None and snapshot.run.seq == 23
    assert [e.seq for e in everything] == list(range(1, 29))
    assert ack.status == "accepted"


def overflow_and_read(run, client):
    """Subscribe `client`, overflow `run`'s 5-event queue with 2000 steps and an end; every event the client
    then reads up to that end, and the end."""
    client.subscribe()
    client.hello()
    time.sleep(0.2)
    run.start()
    run.steps(2000)
    end = run.emit(RunEnded(status="completed"))
    assert run.publisher.dropped > 0
    seen = []
    while not seen or seen[-1].seq < end.seq:
        event = client.recv(5.0)
        assert event is not None
        seen.append(event)
    return seen, end


def test_events_the_stream_dropped_are_filled_from_the_log(tmp_path):
    # GIVEN a publisher whose queue holds only 5 events, and a subscribed client
    run = FakeRun(tmp_path / "run", queue_size=5)
    client = run.client()
    try:
        # WHEN a burst of 2000 events overflows the queue
        # THEN the client still sees every logged event in order (holes filled with replay)
        seen, end = overflow_and_read(run, client)
        # AND the publisher says in the log how many it could not stream
        run.wait_published(end.seq)
        deadline = time.monotonic() + 10
        while not any(e["type"] == "log" and "not streamed" in e["message"] for e in run.logged()):
            assert time.monotonic() < deadline, "no log event reports the dropped events"
            time.sleep(0.1)
    finally:
        client.close()
        run.close()
    assert as_dicts(seen) == run.logged()[: len(seen)]


def test_a_replay_cut_short_by_a_line_being_written_is_asked_again(tmp_path, monkeypatch):
    # GIVEN a publisher whose first replay stops early, as a reader does at a line the writer has not finished
    real_page, cut = events_log.Pages.page, []

    def page(self, after_seq, limit, upto_seq, max_bytes):
        texts, more = real_page(self, after_seq, limit, upto_seq, max_bytes)
        if not cut and len(texts) > 3:
            cut.append(len(texts))
            return texts[:3], False  # the reader met a torn last line: no more for now
        return texts, more

    monkeypatch.setattr(events_log.Pages, "page", page)
    run = FakeRun(tmp_path / "run", queue_size=5)
    client = run.client()
    try:
        # WHEN a burst overflows the queue, so the client must fill holes from the log
        seen, end = overflow_and_read(run, client)
    finally:
        client.close()
        run.close()
    # THEN the short page was asked again: no event is missing, none came twice, and no gap was given up on
    assert cut, "the test never cut a replay short"
    assert [e.seq for e in seen] == list(range(seen[0].seq, end.seq + 1))
    assert as_dicts(seen) == run.logged()[: len(seen)]
    assert client.gaps == 0


def test_commands_need_a_signature_by_the_token_and_every_outcome_is_logged(run):
    run.start()
    # GIVEN clients with no token, a wrong token and the right one
    no_token = RunClient(run.publisher.control_endpoint, run.publisher.publish_endpoint, token=None)
    wrong = RunClient(run.publisher.control_endpoint, run.publisher.publish_endpoint, token="guess")
    right = run.client()
    try:
        # WHEN each asks for a checkpoint
        refused_missing = no_token.command("checkpoint")
        refused_wrong = wrong.command("stop")
        unknown = right.command("explode")
        accepted = right.command("stop", after_epoch=True)
    finally:
        for c in (no_token, wrong, right):
            c.close()
    # THEN only the right token is accepted and reaches the trainer's control queue
    assert refused_missing.status == "refused" and "unsigned command" in refused_missing.reason
    assert refused_wrong.status == "refused" and refused_wrong.reason.startswith("bad signature (wrong token")
    assert unknown.status == "refused" and "unknown command" in unknown.reason
    assert accepted.status == "accepted"
    requests = run.control.take()
    assert [(r.command, r.id, r.after_epoch, r.source) for r in requests] == [("stop", accepted.id, True, "request")]
    # AND every outcome is a `command` event in the log, without the token given
    commands = [e for e in run.logged() if e["type"] == "command"]
    assert [(c["id"], c["status"]) for c in commands] == [
        (refused_missing.id, "refused"), (refused_wrong.id, "refused"), (unknown.id, "refused"),
        (accepted.id, "accepted")]
    assert "guess" not in open(run.folder.events_path).read()


def test_a_finished_run_refuses_commands(run, client):
    run.start()
    run.wait_published(run.emit(RunEnded(status="stopped")).seq)
    ack = client.command("checkpoint")
    assert ack.status == "refused" and "ended" in ack.reason
    assert run.control.take() == []


def test_malformed_and_oversized_requests_get_an_error_not_a_crash(run, client):
    # GIVEN garbage requests of several kinds
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(run.publisher.control_endpoint)
    try:
        replies = []
        for body in (b"\xff\xfe", b"[1, 2]", b'{"op": "nope"}', b'{"op": "replay", "after_seq": "x"}',
                     json.dumps({"op": "hello", "pad": "x" * 70_000}).encode()):
            sock.send(body)
            assert sock.poll(3000), f"no answer to {body[:30]!r}"
            replies.append(json.loads(sock.recv_multipart()[-1]))
        # AND a frame far beyond the limit: ZeroMQ drops that peer unread
        sock.send(b"x" * (2 * 1024 * 1024))
    finally:
        sock.close()
    # THEN each is an error reply, and the publisher still answers hello
    assert [r["op"] for r in replies] == ["error"] * 5
    assert "larger than" in replies[-1]["reason"]
    assert client.hello().state == "running"


@pytest.mark.parametrize("bind, words", [
    ("0.0.0.0:0", ["CURVE", "scorch-ctl keygen", "--curve-keys"]),
    ("localhost", ["--bind localhost", "HOST:PORT"]),
    ("127.0.0.1:99999", ["HOST:PORT"]),
])
def test_unsafe_or_malformed_binds_are_refused_before_anything_is_written(tmp_path, bind, words):
    # WHEN the publisher is asked to listen beyond loopback without keys, or on a malformed address
    with pytest.raises(ScorchError) as err:
        FakeRun(tmp_path / "run", bind=bind)
    # THEN the message names the fix, and no token or endpoint was written
    for word in words:
        assert word in err.value.message
    assert not (tmp_path / "run" / ".token").exists()
    assert "telemetry" not in json.loads((tmp_path / "run" / "run.json").read_text())


def test_a_busy_port_is_a_clear_error(tmp_path):
    # GIVEN a port someone else listens on
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        # WHEN the publisher is told to use it
        with pytest.raises(ScorchError) as err:
            FakeRun(tmp_path / "run", bind=f"127.0.0.1:{port}")
    # THEN the message names --bind and the port
    assert f"--bind 127.0.0.1:{port}" in err.value.message and "in use" in err.value.message


def test_a_fixed_port_puts_control_on_the_next_one(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    run = FakeRun(tmp_path / "run", bind=f"127.0.0.1:{port}")
    try:
        info = json.loads((tmp_path / "run" / "run.json").read_text())["telemetry"]
        assert info == {"publish": f"tcp://127.0.0.1:{port}", "control": f"tcp://127.0.0.1:{port + 1}"}
    finally:
        run.close()


def test_token_is_private_and_written_before_the_endpoints(run):
    token_path = run.folder.token_path
    assert os.stat(token_path).st_mode & 0o777 == 0o600
    assert os.stat(token_path).st_mtime_ns <= os.stat(run.folder.info_path).st_mtime_ns
    assert open(token_path).read().strip() not in open(run.folder.info_path).read()


def test_curve_encrypts_both_sockets_and_plain_clients_get_nothing(tmp_path, capsys):
    # GIVEN keys from scorch-ctl keygen and a publisher using them
    keys = tmp_path / "keys"
    assert ctl.main(["keygen", str(keys)]) == 0
    assert os.stat(keys / "server.key_secret").st_mode & 0o777 == 0o600
    run = FakeRun(tmp_path / "run", curve_keys=str(keys))
    curve = run.client(timeout=3.0, client_keys=ctl._client_keys(str(keys)))
    plain = RunClient(run.publisher.control_endpoint, run.publisher.publish_endpoint, timeout=0.5)
    try:
        run.start()
        # WHEN a CURVE client (keygen's client key, the server key from run.json) and a plain one connect
        curve.subscribe()
        snapshot = curve.hello()
        run.steps(1)
        event = curve.recv(5.0)
        ack = curve.command("checkpoint")
        # THEN the CURVE client sees the run and may command; the plain one gets no answer
        assert snapshot.run is not None and isinstance(event, Step) and ack.status == "accepted"
        with pytest.raises(ClientError, match="no answer"):
            plain.hello()
    finally:
        curve.close()
        plain.close()
        run.close()


def test_curve_admits_only_listed_clients_and_keygen_lists_its_own(tmp_path, capsys):
    # GIVEN keys from keygen: authorized_clients/ lists the client key it made
    keys = tmp_path / "keys"
    assert ctl.main(["keygen", str(keys)]) == 0
    assert os.listdir(keys / "authorized_clients") == ["client.key"]
    run = FakeRun(tmp_path / "run", curve_keys=str(keys))
    listed = run.client(client_keys=ctl._client_keys(str(keys)))
    stranger = run.client(timeout=0.5)  # ad hoc keys, not listed
    try:
        # THEN the listed client is answered and the stranger is not
        assert listed.hello().state == "running"
        with pytest.raises(ClientError, match="no answer"):
            stranger.hello()
    finally:
        listed.close()
        stranger.close()
        run.close()


def test_curve_keys_without_listed_clients_are_refused_at_start(tmp_path):
    # GIVEN server keys and an empty allow-list (the server's public key is in run.json, for anyone to read)
    keys = tmp_path / "keys"
    assert ctl.main(["keygen", str(keys)]) == 0
    os.remove(keys / "authorized_clients" / "client.key")
    # THEN a run with them does not start, and says how to list clients
    with pytest.raises(ScorchError, match="no client keys in .*authorized_clients"):
        check_bind("0.0.0.0:0", str(keys))


def test_frozen_subscribers_neither_hold_up_the_stream_nor_grow_memory(tmp_path):
    # GIVEN a publisher with one subscriber that never reads and one whose process is stopped
    # (what an emit costs beside them is a bench figure: bench/telemetry.py, "frozen subscribers")
    run = FakeRun(tmp_path / "run")
    frozen = zmq.Context.instance().socket(zmq.SUB)
    frozen.setsockopt(zmq.LINGER, 0)
    frozen.setsockopt(zmq.SUBSCRIBE, b"")
    frozen.setsockopt(zmq.RCVHWM, 10)
    frozen.connect(run.publisher.publish_endpoint)
    import subprocess
    import sys

    stopped = subprocess.Popen([sys.executable, "-c", (
        "import sys, time, zmq\n"
        "s = zmq.Context().socket(zmq.SUB); s.setsockopt(zmq.SUBSCRIBE, b''); s.setsockopt(zmq.RCVHWM, 10)\n"
        f"s.connect({run.publisher.publish_endpoint!r}); s.recv_multipart(); print('ready', flush=True); time.sleep(60)\n")],
        stdout=subprocess.PIPE)
    try:
        assert stopped.stdout.readline() == b"ready\n"  # its subscription is live: it got the welcome heartbeat
        os.kill(stopped.pid, 19)  # SIGSTOP
        assert frozen.poll(30_000)  # the other one's too: the stream reaches it, and it will not read again
        # WHEN a hundred thousand events are emitted while both hold their buffers full
        rss_before = psutil.Process().memory_info().rss
        for i in range(100_000):
            run.emit(Step(step=i, loss=1.0, rate=float(i)))
        # THEN the publisher thread gets through all of them (a send that waited on a frozen peer would stop it here)
        run.wait_published(run.seq, timeout=120)
        rss_after = psutil.Process().memory_info().rss
    finally:
        os.kill(stopped.pid, 18)  # SIGCONT, so that it can die
        stopped.kill()
        stopped.wait()
        stopped.stdout.close()
        frozen.close()
        run.close()
    # AND memory stays bounded by the high-water marks, not by what was sent
    assert rss_after - rss_before < 64 * 1024 * 1024


def test_close_is_prompt_with_a_frozen_subscriber_and_queued_events(tmp_path):
    run = FakeRun(tmp_path / "run")
    frozen = zmq.Context.instance().socket(zmq.SUB)
    frozen.setsockopt(zmq.LINGER, 0)
    frozen.setsockopt(zmq.SUBSCRIBE, b"")
    frozen.connect(run.publisher.publish_endpoint)
    try:
        run.steps(5000)
        # WHEN the run closes with events queued and a subscriber that reads nothing
        thread = run.publisher._thread
        closing = threading.Thread(target=run.close)
        closing.start()
        closing.join(120)  # a hang fails here; how long close takes is bounded by FINAL_DRAIN_SECONDS, not asserted
        # THEN it returned and the publisher's thread is gone (it does not wait for the frozen subscriber)
        assert not closing.is_alive() and not thread.is_alive()
        run.close()  # twice is fine
    finally:
        frozen.close()


def test_a_request_flood_gets_a_bounded_share_of_the_cpu_and_valid_clients_are_still_answered(run, client):
    # GIVEN a process flooding the control socket with hellos, garbage and wrong tokens, never reading replies
    run.start()
    run.steps(100)
    import subprocess
    import sys

    flooder = subprocess.Popen([sys.executable, "-c", (
        "import time, zmq\n"
        "s = zmq.Context().socket(zmq.DEALER); s.setsockopt(zmq.SNDHWM, 100000)\n"
        f"s.connect({run.publisher.control_endpoint!r})\n"
        "bodies = [b'{\"op\": \"hello\"}', b'\\xff' * 50, b'{\"op\": \"command\", \"command\": \"stop\", \"token\": \"x\"}']\n"
        "end = time.time() + 4\n"
        "for b in bodies:\n"
        "    s.send(b)\n"
        "print('flooding', flush=True)\n"
        "while time.time() < end:\n"
        "    for b in bodies:\n"
        "        s.send(b)\n")], stdout=subprocess.PIPE)
    try:
        assert flooder.stdout.readline() == b"flooding\n"
        thread = next(t for t in psutil.Process().threads() if t.id == run.publisher._thread.native_id)
        cpu_before, wall_before = thread.user_time + thread.system_time, time.monotonic()
        # WHEN a valid client says hello in the middle of it
        snapshot = client.hello()
        time.sleep(max(0.0, 2.0 - (time.monotonic() - wall_before)))
        thread = next(t for t in psutil.Process().threads() if t.id == run.publisher._thread.native_id)
        share = (thread.user_time + thread.system_time - cpu_before) / (time.monotonic() - wall_before)
    finally:
        flooder.kill()
        flooder.wait()
        flooder.stdout.close()
    # THEN it is answered, and the publisher thread used a bounded share of a core (it rests 9x its busy time)
    assert snapshot.last_seq >= 101  # and up to 30 refusals a minute logged
    assert share < 0.3, share
    assert run.control.take() == []


def test_the_client_hands_each_event_out_once_across_snapshots_and_reconnects(run, client):
    # GIVEN a client that has seen the run so far (RunClient.last_seq: the receiving side's one record)
    run.start()
    run.steps(10)
    run.wait_published(run.seq)
    first = client.hello()
    assert [e.seq for e in first.history] == list(range(1, 12)) and client.last_seq == 11
    # WHEN more happens and it asks again (the dashboard's check when the stream is quiet)
    run.steps(5, start=10)
    run.wait_published(run.seq)
    again = client.hello(newer_only=True)
    # AND a new client takes over its record (a reconnect) and asks after more
    fresh = run.client(timeout=3.0)
    try:
        fresh.last_seq = client.last_seq
        run.steps(2, start=15)
        run.wait_published(run.seq)
        later = fresh.hello(newer_only=True)
    finally:
        fresh.close()
    # THEN each snapshot hands out only what was not handed out before
    assert [e.seq for e in again.history] == list(range(12, 17))
    assert [e.seq for e in later.history] == [17, 18] and fresh.last_seq == 18


def test_a_request_older_than_its_deadline_is_dropped_unanswered_and_counted(run):
    from scorch.telemetry.protocol import Hello, Replay
    from scorch.telemetry.publisher import REQUEST_DEADLINE_SECONDS

    run.start()
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(run.publisher.control_endpoint)
    try:
        # GIVEN a hello stamped long before its turn (its client gave up), then a fresh replay on the same connection
        sock.send(Hello(time=time.time() - REQUEST_DEADLINE_SECONDS - 5).encode())
        sock.send(Replay(after_seq=0, time=time.time()).encode())
        # THEN the only answer is the replay's: the stale hello got no work and no reply
        assert sock.poll(30_000)
        assert json.loads(sock.recv())["op"] == "events"
        # AND the drop is counted in the log, saying why
        deadline = time.monotonic() + 60
        while not [e for e in run.logged() if e["type"] == "log" and "dropped unanswered" in e["message"]]:
            assert time.monotonic() < deadline, "no log of the dropped request"
            time.sleep(0.1)
        assert not sock.poll(0)
    finally:
        sock.close()
