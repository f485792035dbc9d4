"""Steering a real one-process run with scorch-ctl: timed checkpoints from now on, a pause that holds the loop
(heartbeat phase "paused", no steps, no timed checkpoints, and a --stall-timeout watchdog that does not fire),
and SIGTERM while paused, which still preempts the run cleanly; its resume starts paused, as it was."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
from helpers.runs import read_events, scorch_cmd, scorch_env, tiny_args, wait_until

from scorch import ctl
from scorch.telemetry.client import RunClient

pytestmark = pytest.mark.slow


def steer(run_dir, *words: str) -> None:
    code = ctl.main([str(run_dir), *words, "--wait", "--wait-timeout", "60", "--timeout", "30"])
    assert code == 0, f"scorch-ctl {' '.join(words)} exited {code}"


def of(run_dir, kind: str, **fields) -> list[dict]:
    return [e for e in read_events(run_dir) if e["type"] == kind and all(e.get(k) == v for k, v in fields.items())]


def test_timed_checkpoints_a_pause_that_holds_and_sigterm_while_paused(tmp_path):
    run_dir = tmp_path / "run"
    job = subprocess.Popen(scorch_cmd(*tiny_args(run_dir, "--epochs", "500", "--stall-timeout", "3", "--no-tensorboard")),
                           env=scorch_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    client = None
    try:
        wait_until(lambda: (run_dir / "events.jsonl").exists() and of(run_dir, "step"), "training steps", timeout=120)
        # WHEN a checkpoint every second is asked for: they come, reason "interval"
        steer(run_dir, "checkpoint-every", "1s")
        wait_until(lambda: len(of(run_dir, "checkpoint_saved", reason="interval")) >= 2, "timed checkpoints")
        # WHEN the run is paused: the heartbeat says so
        steer(run_dir, "pause")
        client = RunClient.from_run_dir(str(run_dir), timeout=10)
        client.subscribe()
        wait_until(lambda: (client.recv(0.5), client.heartbeat)[1] is not None and client.heartbeat.phase == "paused",
                   "a heartbeat with phase paused", timeout=30)
        assert client.heartbeat.progress_age < 3
        # THEN for longer than --stall-timeout nothing trains, no timed checkpoint is taken, and the watchdog holds
        steps, saved = len(of(run_dir, "step")), len(of(run_dir, "checkpoint_saved"))
        time.sleep(5.0)  # a window longer than --stall-timeout 3, not a wait for an event
        assert job.poll() is None, job.communicate()[0][-2000:]
        assert len(of(run_dir, "step")) == steps and len(of(run_dir, "checkpoint_saved")) == saved
        # WHEN SIGTERM comes while paused: the run is preempted at once, with its checkpoint
        job.send_signal(signal.SIGTERM)
        out, _ = job.communicate(timeout=60)
        assert job.returncode == 0, out[-2000:]
        ended = of(run_dir, "run_ended")[-1]
        assert ended["status"] == "preempted" and of(run_dir, "checkpoint_saved")[-1]["reason"] == "signal"
        client.close()
        client = None
        # WHEN the preempted run is resumed (a requeued job): it starts paused, as it was, and says how to go on
        steps = len(of(run_dir, "step"))
        job = subprocess.Popen(scorch_cmd("--resume", str(run_dir), "--headless"), env=scorch_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wait_until(lambda: any("resumed paused" in e["message"] for e in of(run_dir, "log")), "the resumed-paused note",
                   timeout=120)
        assert of(run_dir, "run_started")[-1]["steering"]["paused"] is True
        time.sleep(3.0)  # a window for steps that must not come
        assert job.poll() is None and len(of(run_dir, "step")) == steps
        # THEN resume goes on training
        steer(run_dir, "resume")
        wait_until(lambda: len(of(run_dir, "step")) > steps, "steps after resume", timeout=60)
        steer(run_dir, "stop")
        out, _ = job.communicate(timeout=60)
        assert job.returncode == 0, out[-2000:]
    finally:
        if client is not None:
            client.close()
        if job.poll() is None:
            job.kill()
            job.communicate()
