"""Honest state on every exit path: a run that took its folder and then could not start (a busy --bind port,
a -c checkpoint that does not fit its Network) ends there as any run ends: `run_ended` in its event log,
`failed` in run.json with the same reason, the folder free (real scorch-train processes).

The full disk under the event log is in test_disk.py, the second SIGTERM in test_preemption.py, kill -9
in test_one_writer.py."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from helpers.faults import Job, run_args

from scorch import run_folder


def busy_port(tmp_path: Path, stack: list) -> tuple[list[str], str]:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    stack.append(busy)
    port = busy.getsockname()[1]
    return ["--telemetry", "--bind", f"127.0.0.1:{port}"], f"port {port} is already in use"


def foreign_checkpoint(tmp_path: Path, stack: list) -> tuple[list[str], str]:
    import torch

    path = tmp_path / "other.pt"
    torch.save({"model_state": {"other.weight": torch.zeros(3)}}, path)
    return ["-c", str(path)], f"-c/--checkpoint {path}: weights do not fit this Network"


@pytest.mark.parametrize("cause", [busy_port, foreign_checkpoint], ids=["busy --bind port", "-c that does not fit"])
def test_a_start_that_fails_after_taking_its_folder_records_its_end_there(tmp_path, cause):
    run_dir, held = tmp_path / "run", []
    try:
        # GIVEN a new run whose start fails after its run folder was made
        extra, why = cause(tmp_path, held)
        with Job(run_dir, run_args(run_dir, "--epochs", "1", *extra, size=200)) as job:
            code = job.wait()
    finally:
        for thing in held:
            thing.close()
    # THEN it exits 2 with one line naming the cause, no traceback
    err = job.stderr()
    assert code == 2 and why in err and "Traceback" not in err, err
    # AND the event log ends with run_ended "failed" for that reason, and run.json says the same
    events = job.events()
    assert events and events[-1]["type"] == "run_ended", events
    assert events[-1]["status"] == "failed" and why in events[-1]["reason"], events[-1]
    info = json.loads((run_dir / "run.json").read_text())
    assert info["state"] == "failed" and info["reason"] == events[-1]["reason"] and info["ended"] > 0, info
    # AND every reader calls it ended (the lock is free), not running and not dead
    alive = run_folder.liveness(str(run_dir))
    assert (alive.state, alive.status) == ("ended", "failed"), alive
    assert run_folder.lock_held(str(run_dir)) is False
