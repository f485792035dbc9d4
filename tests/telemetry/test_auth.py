"""Signed commands (scorch.telemetry.auth): forged, changed, stale and replayed commands are refused."""

from __future__ import annotations

import dataclasses

from scorch.telemetry.auth import WINDOW_SECONDS, Verifier, sign
from scorch.telemetry.protocol import CommandRequest, decode_request

TOKEN = "the-run-token"


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def wire(request: CommandRequest) -> CommandRequest:
    """What the run decodes from the bytes that crossed the wire."""
    decoded = decode_request(request.encode())
    assert isinstance(decoded, CommandRequest)
    return decoded


def test_a_signed_command_is_accepted_once_and_its_replay_refused():
    clock = Clock()
    verifier = Verifier(TOKEN, clock=clock)
    # GIVEN a command signed with the token, as it crossed the wire (bytes)
    signed = sign(CommandRequest(command="stop"), TOKEN, now=clock.now)
    assert TOKEN.encode() not in signed.encode()
    # THEN it is accepted the first time, and the same bytes again are refused as a replay, within the window and after
    assert verifier.check(wire(signed)) == ""
    assert verifier.check(wire(signed)).startswith("replayed")
    clock.now += WINDOW_SECONDS - 1
    assert verifier.check(wire(signed)).startswith("replayed")
    clock.now += 10 * WINDOW_SECONDS
    assert verifier.check(wire(signed)).startswith("stale")


def test_forged_changed_unsigned_and_clear_token_commands_are_refused():
    clock = Clock()
    verifier = Verifier(TOKEN, clock=clock)
    good = sign(CommandRequest(command="checkpoint"), TOKEN, now=clock.now)
    assert verifier.check(wire(sign(CommandRequest(command="stop"), "a guess", now=clock.now))).startswith("bad signature")
    assert verifier.check(wire(dataclasses.replace(good, command="stop"))).startswith("bad signature")  # changed, mac kept
    assert verifier.check(wire(dataclasses.replace(good, after_epoch=True))).startswith("bad signature")
    assert verifier.check(wire(dataclasses.replace(good, time=clock.now + 1))).startswith("bad signature")
    assert verifier.check(CommandRequest(command="stop", id="x", time=clock.now)).startswith("unsigned")
    assert verifier.check(CommandRequest(command="stop", token=TOKEN)).startswith("a token in clear")
    assert verifier.check(wire(good)) == ""


def test_a_command_outside_the_window_is_refused_either_way_and_seen_ids_are_forgotten_after_it():
    clock = Clock()
    verifier = Verifier(TOKEN, clock=clock)
    command = CommandRequest(command="checkpoint")
    assert verifier.check(sign(command, TOKEN, now=clock.now - WINDOW_SECONDS - 1)).startswith("stale")
    assert verifier.check(sign(command, TOKEN, now=clock.now + WINDOW_SECONDS + 1)).startswith("stale")
    for _ in range(100):
        assert verifier.check(sign(command, TOKEN, now=clock.now)) == ""
    clock.now += 2 * WINDOW_SECONDS + 1
    verifier.check(sign(command, TOKEN, now=clock.now))
    assert len(verifier._seen) == 1  # memory: only the ids that could still be replayed
