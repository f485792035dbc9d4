"""Commands that cannot be replayed or forged, on a real run: the exact bytes of a captured command are
applied once and refused every time after, a forged, changed or stale one is refused, and each refusal says why."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.faults import Job, child_env, of_type, run_args

from scorch.telemetry.auth import WINDOW_SECONDS, sign
from scorch.telemetry.client import read_run_info, read_token
from scorch.telemetry.protocol import CommandRequest

HOSTILE = str(Path(__file__).with_name("hostile.py"))


def send_exact(control: str, wire: bytes, times: int, tmp_path: Path) -> dict[str, int]:
    captured = tmp_path / f"captured-{time.monotonic_ns()}"
    captured.write_bytes(wire)
    done = subprocess.run([sys.executable, HOSTILE, "replay", control, str(captured), str(times)], capture_output=True,
                          text=True, env=child_env(), timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.slow
def test_a_captured_command_is_applied_once_and_every_replay_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    with Job(run_dir, run_args(run_dir, "--epochs", "1000", "--telemetry", size=40_000), logs=tmp_path) as job:
        job.wait_step(1)
        control, token = read_run_info(str(run_dir))["telemetry"]["control"], read_token(str(run_dir))
        assert token
        # GIVEN the exact bytes of a valid checkpoint command, as an eavesdropper on the wire captured them
        signed = sign(CommandRequest(command="checkpoint"), token)
        wire = signed.encode()
        assert token.encode() not in wire  # the token itself never crosses the wire
        # WHEN they are sent once, then 20 times more from new connections
        first = send_exact(control, wire, 1, tmp_path)
        replays = send_exact(control, wire, 20, tmp_path)
        # THEN the first is accepted, every replay refused as such
        assert first == {"accepted: ": 1}, first
        assert len(replays) == 1 and list(replays)[0].startswith(f"refused: replayed: id {signed.id[:16]}"), replays
        assert sum(replays.values()) == 20, replays
        # AND a forged command (another key), a changed one (the mac of another), a stale one and the token in clear
        # are refused, saying why
        forged = send_exact(control, sign(CommandRequest(command="stop"), "guess").encode(), 1, tmp_path)
        changed = send_exact(control, dataclasses.replace(signed, command="stop").encode(), 1, tmp_path)
        old = sign(CommandRequest(command="stop"), token, now=time.time() - WINDOW_SECONDS - 5)
        stale = send_exact(control, old.encode(), 1, tmp_path)
        clear = send_exact(control, CommandRequest(command="stop", token=token).encode(), 1, tmp_path)
        assert list(forged)[0].startswith("refused: bad signature (wrong token") and sum(forged.values()) == 1, forged
        assert list(changed)[0].startswith("refused: bad signature (wrong token") and sum(changed.values()) == 1, changed
        assert list(stale)[0].startswith("refused: stale: signed"), stale
        assert list(clear)[0].startswith("refused: a token in clear"), clear
        # AND the run applied that checkpoint exactly once, logged the refusals, and trains on
        job.wait_for(lambda evs: of_type(evs, "command", id=signed.id, status="applied"), "the checkpoint applied")
        now = max(e["step"] for e in of_type(job.events(), "step"))
        job.wait_step(now + 20)
        events = job.events()
        mine = [e for e in events if e["type"] == "command" and e["id"] == signed.id]
        assert [e["status"] for e in mine if e["status"] != "refused"] == ["accepted", "applied"]
        assert len([e for e in mine if e["status"] == "refused" and e["reason"].startswith("replayed")]) == 20
        assert len(of_type(events, "checkpoint_saved", reason="request")) == 1
        assert not [e for e in events if e["type"] == "command" and e["command"] == "stop" and e["status"] != "refused"]
        assert job.alive()
