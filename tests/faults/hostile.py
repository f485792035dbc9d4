"""Hostile and broken clients of a run's control socket, as small programs (ZeroMQ only, no torch).

    python hostile.py flood CONTROL_ENDPOINT SECONDS SEED [RATE [MESSAGES]]
        For SECONDS or until MESSAGES are sent (at most RATE messages a second; 0: as fast as it can), from
        several connections at once: random bytes, oversized messages (over the 64 KiB request limit, and
        over the run's 128 KiB frame limit, which drops the connection), floods of `hello`, commands signed
        with a wrong key, with a token in clear or unsigned, random JSON; some connections never read their
        replies. Prints {"sent": N, "kinds": {...}, "answered": M} at the end.

    python hostile.py command CONTROL_ENDPOINT TOKEN COMMAND ID
        Sends one command and prints "sent", then waits for the answer (the test kills it first).

    python hostile.py replay CONTROL_ENDPOINT CAPTURED_FILE N
        Sends the exact bytes of a captured command N times, each from a new connection; prints the
        replies' statuses counted.

    python hostile.py subscribers PUBLISH_ENDPOINT COUNT ROUNDS
        Subscriber churn: COUNT subscribers that never read connect at once, stay a second, leave; ROUNDS times.

    python hostile.py hellos CONTROL_ENDPOINT CONNECTIONS PER_CONNECTION
        A hello storm: CONNECTIONS connections each send PER_CONNECTION hellos, never read the snapshots,
        and leave after a few seconds.

The bench (bench/fault_drill.py) and tests/faults use the same code, so the drill's numbers and the
tests' assertions are about the same hostile traffic.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import sys
import time

import zmq

from scorch.telemetry.auth import sign
from scorch.telemetry.protocol import CommandRequest

KINDS = ("random_bytes", "oversized", "huge_frame", "hello", "wrong_token", "no_token", "random_json", "multipart")


def message(kind: str, rng: random.Random) -> list[bytes]:
    """One hostile request of `kind`, as the frames a DEALER sends."""
    if kind == "random_bytes":
        return [rng.randbytes(rng.randrange(1, 300))]
    if kind == "oversized":
        return [b'{"op": "hello", "pad": "' + b"x" * (100 * 1024) + b'"}']
    if kind == "huge_frame":
        return [b"\0" * (2 * 1024 * 1024)]
    if kind == "hello":
        return [b'{"op": "hello"}']
    if kind == "wrong_token":  # signed with a key that is not the run's token, or a token sent in clear
        command = CommandRequest(command=rng.choice(["stop", "checkpoint"]))
        if rng.random() < 0.5:
            return [dataclasses.replace(command, token=rng.randbytes(16).hex()).encode()]
        return [sign(command, rng.randbytes(16).hex()).encode()]
    if kind == "no_token":
        return [json.dumps({"op": "command", "command": "stop"}).encode()]
    if kind == "random_json":
        value = rng.choice([None, 1, "x", [], {"op": rng.choice(["replay", "command", "nope", 7])},
                            {"op": "replay", "after_seq": rng.randrange(-5, 10**6), "limit": rng.choice([0, 1, 10**9, "a"])}])
        return [json.dumps(value).encode()]
    return [rng.randbytes(8), b"", b'{"op": "hello"}']  # multipart: extra frames before the request


def flood(endpoint: str, seconds: float, seed: int, rate: float = 0, max_messages: int = 0) -> dict:
    """Send hostile traffic for `seconds` (or until `max_messages`), at most `rate` a second; returns counts."""
    rng = random.Random(seed)
    context = zmq.Context()
    sockets: list[tuple[zmq.Socket, bool]] = []

    def connect(reads: bool) -> zmq.Socket:
        sock = context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 100)
        sock.setsockopt(zmq.RCVHWM, 100)
        sock.connect(endpoint)
        return sock

    for i in range(6):
        sockets.append((connect(reads=i % 2 == 0), i % 2 == 0))  # half never read their replies
    sent, answered, kinds = 0, 0, dict.fromkeys(KINDS, 0)
    start = time.monotonic()
    deadline = start + seconds
    try:
        while time.monotonic() < deadline and (not max_messages or sent < max_messages):
            if rate and sent > rate * (time.monotonic() - start):
                time.sleep(0.005)
                continue
            i = rng.randrange(len(sockets))
            sock, reads = sockets[i]
            kind = rng.choices(KINDS, weights=(20, 2, 1, 30, 30, 5, 10, 2))[0]
            try:
                sock.send_multipart(message(kind, rng), zmq.NOBLOCK)
            except zmq.Again:
                pass  # the server is not keeping up with this connection: a real flooder moves on
            else:
                sent += 1
                kinds[kind] += 1
            if kind == "huge_frame":  # the server drops this connection: come back on a new one
                sock.close()
                sock = connect(reads)
                sockets[i] = (sock, reads)
            while reads and sock.poll(0):
                sock.recv_multipart()
                answered += 1
    finally:
        for sock, _ in sockets:
            sock.close()
        context.term()
    return {"sent": sent, "kinds": kinds, "answered": answered}


def send_command(endpoint: str, token: str, command: str, command_id: str) -> None:
    """A dashboard that sends a command and then dies (the caller kills it after "sent")."""
    context = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.connect(endpoint)
    sock.send(sign(CommandRequest(command=command), token, command_id=command_id).encode())
    print("sent", flush=True)
    sock.poll(60_000)
    os._exit(0)


def replay(endpoint: str, captured: bytes, times: int) -> dict:
    """An eavesdropper who captured the exact bytes of one command sends them `times` times, each on a new
    connection (as a new client would); returns the replies' statuses and reasons, counted."""
    context = zmq.Context()
    statuses: dict[str, int] = {}
    try:
        for _ in range(times):
            sock = context.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(endpoint)
            sock.send(captured)
            if sock.poll(30_000):
                reply = json.loads(sock.recv())
                key = f"{reply.get('status')}: {str(reply.get('reason') or '')[:40]}"
            else:
                key = "no answer"
            statuses[key] = statuses.get(key, 0) + 1
            sock.close()
    finally:
        context.term()
    return statuses


def _many(count: int) -> zmq.Context:
    """A context for `count` sockets: ZeroMQ's default of 1023 a context (and sockets closed but not yet
    reaped count) is what made a churn of 500 fail with "Too many open files" in the client, not the run."""
    context = zmq.Context()
    context.set(zmq.MAX_SOCKETS, 2 * count + 64)
    return context


def subscribers(endpoint: str, count: int, rounds: int, stay: float = 1.0) -> dict:
    """`rounds` times: `count` subscribers that never read connect, stay `stay` seconds, and leave."""
    context, opened = _many(count), 0
    try:
        for _ in range(rounds):
            socks = []
            try:
                for _ in range(count):
                    sock = context.socket(zmq.SUB)
                    sock.setsockopt(zmq.LINGER, 0)
                    sock.setsockopt(zmq.RCVHWM, 10)
                    sock.setsockopt(zmq.SUBSCRIBE, b"")
                    sock.connect(endpoint)
                    socks.append(sock)
                    opened += 1
                time.sleep(stay)
            finally:  # closed even on an error, or term() would wait for them for ever
                for sock in socks:
                    sock.close()
    finally:
        context.term()
    return {"opened": opened}


def hellos(endpoint: str, connections: int, per_connection: int, stay: float = 5.0) -> dict:
    """A hello storm from `connections` connections that never read the snapshots they asked for."""
    context, socks, sent = _many(connections), [], 0
    try:
        for _ in range(connections):
            sock = context.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.RCVHWM, 10)
            sock.connect(endpoint)
            socks.append(sock)
        for sock in socks:
            for _ in range(per_connection):
                try:
                    sock.send(b'{"op": "hello"}', zmq.NOBLOCK)
                except zmq.Again:
                    break
                sent += 1
        time.sleep(stay)
    finally:
        for sock in socks:
            sock.close()
        context.term()
    return {"sent": sent}


if __name__ == "__main__":
    if sys.argv[1] == "subscribers":
        print(json.dumps(subscribers(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))), flush=True)
    elif sys.argv[1] == "hellos":
        print(json.dumps(hellos(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))), flush=True)
    elif sys.argv[1] == "replay":
        print(json.dumps(replay(sys.argv[2], open(sys.argv[3], "rb").read(), int(sys.argv[4]))), flush=True)
    elif sys.argv[1] == "flood":
        rate = float(sys.argv[5]) if len(sys.argv) > 5 else 0
        most = int(sys.argv[6]) if len(sys.argv) > 6 else 0
        print(json.dumps(flood(sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), rate, most)), flush=True)
    else:
        send_command(*sys.argv[2:6])
