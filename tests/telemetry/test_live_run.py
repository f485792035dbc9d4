"""Telemetry on real training runs: late join, scorch-ctl checkpoint/stop, frozen watchers, --no-telemetry."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers.runs import example_args, read_events, scorch_cmd, scorch_env, tiny_args, train
from helpers.telemetry import as_dicts

from scorch.telemetry.client import RunClient


def scorch_ctl(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("scorch-ctl")
    cmd = [exe] if exe else [sys.executable, "-m", "scorch.ctl"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, env=scorch_env(), timeout=120)


def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def steps_logged(run_dir: Path) -> int:
    try:
        return sum(1 for e in read_events(run_dir) if e["type"] == "step")
    except (OSError, ValueError):
        return 0


@pytest.mark.slow
def test_late_joiner_sees_the_exact_log_and_scorch_ctl_checkpoints_and_stops(tmp_path):
    # GIVEN a real scorch-train run, long enough to be caught mid-run
    run_dir = tmp_path / "run"
    argv = example_args("two_inputs", run_dir, "--dataset-args", '{"size": 40000}', "--epochs", "50", "--seed", "1",
                        "--no-tensorboard")
    proc = subprocess.Popen(scorch_cmd(*argv), env=scorch_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    client = None
    try:
        wait_for(lambda: steps_logged(run_dir) >= 3, 120, "the run to make progress")
        # WHEN a client joins mid-run: subscribe, hello, the exact history up to the snapshot, then the stream
        client = RunClient.from_run_dir(str(run_dir), timeout=10)
        client.subscribe()
        snapshot = client.hello()
        seen = client.replay_all(upto_seq=snapshot.last_seq)
        # AND scorch-ctl is used with a wrong token, then to checkpoint (waiting for it), then to stop
        wrong = scorch_ctl(str(run_dir), "checkpoint", "--token", "wrong")
        checkpoint = scorch_ctl(str(run_dir), "checkpoint", "--wait")
        stop = scorch_ctl(str(run_dir), "stop")
        while not seen or seen[-1].type != "run_ended":
            event = client.recv(60)
            assert event is not None, "the stream went quiet before run_ended"
            seen.append(event)
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        stderr = proc.stderr.read().decode()
        proc.stderr.close()
        if client is not None:
            client.close()
    # THEN scorch-ctl's answers and exit codes say what happened, without tracebacks
    assert snapshot.state == "running" and snapshot.run is not None and snapshot.last_seq >= 4
    assert wrong.returncode == 1 and "wrong token" in wrong.stderr and "Traceback" not in wrong.stderr
    assert checkpoint.returncode == 0 and "checkpoint applied" in checkpoint.stdout, checkpoint.stderr
    assert stop.returncode == 0 and "stop accepted" in stop.stdout, stop.stderr
    # AND the run ended cleanly as stopped
    assert code == 0, stderr
    logged = read_events(run_dir)
    assert logged[-1]["type"] == "run_ended" and logged[-1]["status"] == "stopped"
    assert json.loads((run_dir / "run.json").read_text())["state"] == "stopped"
    # AND the late joiner reconstructed exactly events.jsonl: no gap, no duplicate, same order
    assert as_dicts(seen) == logged
    # AND the refusal and both commands are in the log, and the requested checkpoint loads
    statuses = [(e["command"], e["status"]) for e in logged if e["type"] == "command"]
    assert statuses == [("checkpoint", "refused"), ("checkpoint", "accepted"), ("checkpoint", "applied"),
                        ("stop", "accepted"), ("stop", "applied")]
    saved = [e for e in logged if e["type"] == "checkpoint_saved" and e["reason"] == "request"]
    assert len(saved) == 2
    state = torch.load(saved[0]["path"], weights_only=False)
    assert state["model_state"] and state["step"] == saved[-1]["step"] > 0


@pytest.mark.slow
def test_frozen_watchers_do_not_slow_training(tmp_path):
    # GIVEN the same one-epoch run twice, side by side, with a step event every step (the worst case):
    # one watched by a subscriber that never reads and a SIGSTOPped subscriber process, one not watched
    script = Path(__file__).with_name("watched_run.py")
    runs = {mode: subprocess.Popen([sys.executable, str(script), str(tmp_path / mode), mode], env=scorch_env(),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE) for mode in ("none", "frozen")}
    # WHEN both have trained
    results = {}
    for mode, proc in runs.items():
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err.decode()[-2000:]
        results[mode] = json.loads(out.decode().strip().splitlines()[-1])
    # THEN the watched run's median step is about as fast (generous bound: other work shares this machine)
    plain, frozen = (statistics.median(results[m]["step_times"]) for m in ("none", "frozen"))
    assert len(results["frozen"]["step_times"]) > 200
    assert frozen < 1.5 * plain + 1e-3, (plain, frozen)
    # AND the frozen watchers cost bounded memory (high-water marks, not the whole stream)
    assert results["frozen"]["rss_growth"] < 64 * 1024 * 1024


def test_telemetry_is_on_by_default_and_off_with_no_telemetry(tmp_path):
    # WHEN a run trains with default flags, and another with --no-telemetry
    assert train(tiny_args(tmp_path / "on", "--epochs", "1", "--no-tensorboard")) == 0
    assert train(tiny_args(tmp_path / "off", "--epochs", "1", "--no-tensorboard", "--no-telemetry")) == 0
    # THEN the first has a private token and loopback endpoints in run.json; the second neither
    on = json.loads((tmp_path / "on" / "run.json").read_text())
    assert on["telemetry"]["publish"].startswith("tcp://127.0.0.1:")
    assert on["telemetry"]["control"].startswith("tcp://127.0.0.1:")
    assert os.stat(tmp_path / "on" / ".token").st_mode & 0o777 == 0o600
    off = json.loads((tmp_path / "off" / "run.json").read_text())
    assert "telemetry" not in off and not (tmp_path / "off" / ".token").exists()


def test_an_unsafe_bind_stops_the_run_before_training_with_a_clear_message(tmp_path, capsys):
    code = train(tiny_args(tmp_path / "run", "--epochs", "1", "--bind", "0.0.0.0:0"))
    err = capsys.readouterr().err
    assert code == 2 and "scorch-ctl keygen" in err and "--curve-keys" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()  # nothing to clean up before trying again with the fix
