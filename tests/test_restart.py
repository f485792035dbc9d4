"""Resume without dead ends: a run that failed before its first checkpoint can be started again in its own
folder as the message says; `--resume` of a complete run says so and how to train on; a run with
checkpoints is never started over."""

from __future__ import annotations

import json
import shlex
import socket

from helpers.runs import read_events, tiny_args, train


def stderr_of(capsys) -> str:
    return capsys.readouterr().err


def test_a_run_that_failed_before_its_first_checkpoint_starts_again_as_the_message_says(tmp_path, capsys):
    run_dir = tmp_path / "run"
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    args = tiny_args(run_dir, "--epochs", "1", "--bind", f"127.0.0.1:{port}")
    try:
        # GIVEN a run whose start failed on a busy --bind port, after its folder was made
        assert train(args) == 2
        assert "is already in use" in stderr_of(capsys)
        assert json.loads((run_dir / "run.json").read_text())["state"] == "failed"
        # WHEN the same command runs again THEN it says how to start again in that folder
        assert train(args) == 2
        err = stderr_of(capsys)
        assert "ended before its first checkpoint" in err and "adding --restart to this command" in err, err
        # AND --resume, which has nothing to resume, names the exact command
        assert train(["--resume", str(run_dir)]) == 2
        err = stderr_of(capsys)
        assert "nothing to resume; start it again there with: scorch-train " in err, err
        command = shlex.split(err.split("start it again there with: ", 1)[1].strip())
    finally:
        busy.close()
    # WHEN the port is free and that command runs THEN the run trains in its own folder
    assert command[0] == "scorch-train" and "--restart" in command and f"127.0.0.1:{port}" in command
    assert train(command[1:]) == 0
    events = read_events(run_dir)
    assert events[-1]["type"] == "run_ended" and events[-1]["status"] == "completed"
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))  # the failed start's log continued
    assert (run_dir / "checkpoints" / "last.pt").exists()


def test_resume_of_a_complete_run_says_so_and_how_to_train_on(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert train(tiny_args(run_dir, "--epochs", "1", "--no-telemetry")) == 0
    capsys.readouterr()
    before = len(read_events(run_dir))
    # WHEN the complete run is resumed
    assert train(["--resume", str(run_dir)]) == 0
    out = capsys.readouterr().out
    # THEN it says it is complete and gives the command that extends it; nothing was appended
    assert "is complete (1 of 1 epochs)" in out and f"scorch-train --resume {run_dir} --epochs 2" in out, out
    assert "epochs 2-1" not in out
    assert len(read_events(run_dir)) == before
    # AND that command trains the second epoch
    command = shlex.split(out.split("give a larger total: ", 1)[1].strip())
    assert train([*command[1:], "--no-telemetry"]) == 0
    assert [e["epoch"] for e in read_events(run_dir) if e["type"] == "epoch_end"] == [0, 1]


def test_restart_never_starts_over_a_run_that_has_checkpoints(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert train(tiny_args(run_dir, "--epochs", "1", "--no-telemetry")) == 0
    capsys.readouterr()
    assert train(tiny_args(run_dir, "--epochs", "1", "--no-telemetry", "--restart")) == 2
    assert f"already holds a run; continue it with --resume {run_dir}" in stderr_of(capsys)
