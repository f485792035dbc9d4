"""The per-rank channel on real ZeroMQ sockets, in one process: reporters, rank 0's watch, silence, security."""

from __future__ import annotations

import json
import threading
import time

import pytest
import zmq

from scorch.telemetry.protocol import Log, System
from scorch.telemetry.ranks import RankReporter, RankWatch


class Events:
    """What the watch emits, with a wait for a condition (never a fixed sleep)."""

    def __init__(self) -> None:
        self.items: list = []
        self._changed = threading.Condition()

    def __call__(self, event) -> None:
        with self._changed:
            self.items.append(event)
            self._changed.notify_all()

    def wait_for(self, check, timeout: float = 30.0):
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = check(self.items)
                if found:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail(f"not within {timeout} s; events: {self.items[-5:]}")
                self._changed.wait(left)


def last_system(events: list) -> System | None:
    return next((e for e in reversed(events) if isinstance(e, System)), None)


def figures(rank: int):
    return lambda: {"step": 7, "phase": "training", "step_time": 0.01, "collective_wait": 0.002}


@pytest.fixture
def watch():
    events = Events()
    made = RankWatch(3, ["here"] * 3, events, silent_seconds=1.5, system_seconds=0.2)
    made.events = events
    yield made
    made.close()


def test_every_rank_reports_its_figures_and_lines(watch):
    # GIVEN three ranks reporting to rank 0's watch
    reporters = [RankReporter(watch.handout, r, figures(r), None, beat_seconds=0.1) for r in range(3)]
    try:
        system = watch.events.wait_for(lambda ev: (s := last_system(ev)) and all(r["state"] == "live" and r.get("pid")
                                                                               for r in s.ranks) and s)
        # THEN each entry carries the rank's figures and its liveness
        assert [r["rank"] for r in system.ranks] == [0, 1, 2]
        assert system.ranks[1]["step"] == 7 and system.ranks[1]["collective_wait"] == 0.002
        # WHEN rank 1 sends a warning line THEN rank 0 logs it as rank 1's
        reporters[1].line("warning", "disk nearly full")
        line = watch.events.wait_for(lambda ev: next((e for e in ev if isinstance(e, Log) and e.rank == 1), None))
        assert line.level == "warning" and line.message == "rank 1: disk nearly full"
    finally:
        # WHEN every rank ends (each says bye)
        for reporter in reporters:
            reporter.close()
    # THEN a rank that said bye is "ended", never "silent"
    system = watch.events.wait_for(lambda ev: (s := last_system(ev)) and all(r["state"] == "ended" for r in s.ranks) and s)
    assert not any(isinstance(e, Log) and "has sent nothing" in e.message for e in watch.events.items)


def test_a_rank_that_goes_quiet_is_named_then_welcomed_back(watch):
    # GIVEN ranks 0 and 1 reporting, and rank 2 sending by hand
    reporters = [RankReporter(watch.handout, r, figures(r), None, beat_seconds=0.1) for r in range(2)]
    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.connect(watch.endpoint)
    beat = {"v": 1, "key": watch.key, "rank": 2, "kind": "beat", "pid": 4242, "host": "here", "step": 3,
            "phase": "training", "figures": {}, "lines": []}
    try:
        push.send(json.dumps(beat).encode())
        watch.events.wait_for(lambda ev: (s := last_system(ev)) and s.ranks[2].get("pid") == 4242)
        # WHEN rank 2 goes quiet THEN rank 0 names it, with its pid and what it was doing
        named = watch.events.wait_for(lambda ev: next((e for e in ev if isinstance(e, Log) and e.rank == 2), None))
        assert named.level == "error" and "pid 4242" in named.message and "training at step 3" in named.message
        assert watch.silent() == [2]
        # WHEN it reports again THEN rank 0 says so
        push.send(json.dumps(beat).encode())
        watch.events.wait_for(lambda ev: any(isinstance(e, Log) and "reports again" in e.message for e in ev))
        assert watch.silent() == []
    finally:
        push.close(0)
        context.term()
        for reporter in reporters:
            reporter.close()


def test_messages_without_the_job_key_are_dropped(watch):
    # GIVEN a local process that knows the endpoint but not the key
    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.connect(watch.endpoint)
    try:
        forged = {"v": 1, "key": "0" * 32, "rank": 1, "kind": "beat", "pid": 1, "lines": [["error", "forged"]]}
        for raw in (json.dumps(forged).encode(), b"not json", json.dumps({"key": watch.key, "rank": 99}).encode()):
            push.send(raw)
        # AND a genuine message after them
        push.send(json.dumps({**forged, "key": watch.key, "rank": 0, "lines": [["info", "genuine"]]}).encode())
        watch.events.wait_for(lambda ev: any(isinstance(e, Log) and "genuine" in e.message for e in ev))
    finally:
        push.close(0)
        context.term()
    # THEN only the genuine one was taken
    assert not any(isinstance(e, Log) and "forged" in e.message for e in watch.events.items)
    assert watch.ranks()[1]["seen"] is None


def test_beyond_loopback_the_channel_admits_only_the_jobs_curve_key(tmp_path):
    # GIVEN a channel with CURVE (as with --bind beyond loopback and --curve-keys)
    server = zmq.curve_keypair()
    events = Events()
    watch = RankWatch(2, ["here", "here"], events, host="127.0.0.1", server_keys=server, system_seconds=0.2)
    context = zmq.Context()
    intruder = context.socket(zmq.PUSH)
    try:
        handout = watch.handout
        assert handout["server_key"] == server[0].decode() and handout["unreachable"] == []
        # WHEN a CURVE client with a key of its own sends, and then the job's reporter
        public, secret = zmq.curve_keypair()
        intruder.curve_serverkey, intruder.curve_publickey, intruder.curve_secretkey = server[0], public, secret
        intruder.connect(watch.endpoint)
        intruder.send(json.dumps({"v": 1, "key": watch.key, "rank": 1, "kind": "beat", "pid": 666}).encode(), zmq.NOBLOCK)
        reporter = RankReporter(handout, 0, figures(0), None, beat_seconds=0.1)
        try:
            events.wait_for(lambda ev: (s := last_system(ev)) and s.ranks[0].get("pid"))
        finally:
            reporter.close()
    finally:
        intruder.close(0)
        context.term()
        watch.close()
    # THEN only the job's own key got in
    assert all(not (isinstance(e, System) and e.ranks[1].get("pid") == 666) for e in events.items)


def test_ranks_on_other_hosts_with_a_loopback_channel_are_unreachable_not_silent():
    # GIVEN rank 1 on another host and a loopback-only channel
    events = Events()
    watch = RankWatch(2, ["here", "there"], events, silent_seconds=0.5, system_seconds=0.2)
    try:
        # THEN rank 0 says at once why it will not see rank 1, and never calls it silent
        warning = events.wait_for(lambda ev: next((e for e in ev if isinstance(e, Log)), None))
        assert "ranks 1 run on other hosts" in warning.message and "--curve-keys" in warning.message
        assert watch.handout["unreachable"] == [1]
        system = events.wait_for(lambda ev: (s := last_system(ev)) and s.ranks[0]["state"] == "silent" and s)
        assert system.ranks[1]["state"] == "unreachable"
    finally:
        watch.close()
