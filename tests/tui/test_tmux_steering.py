"""End to end: steering a real job from the real dashboard in a real terminal (tmux). p pauses (the header says
PAUSED and the run holds), t opens the steering dialog where `lr x0.5` shows what it does before enter sends it,
the header then shows `lr x0.5`, and p resumes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.runs import read_events, wait_until
from helpers.tmux import Tmux, end_job, wait_endpoints
from helpers.tui import ROOT, train_args

pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")]


def applied(run_dir: Path, command: str) -> list[dict]:
    return [e for e in read_events(run_dir) if e["type"] == "command" and e["command"] == command
            and e["status"] == "applied"]


def test_p_pauses_t_halves_the_lr_and_p_resumes_a_real_job(tmp_path: Path):
    run_dir = tmp_path / "digits-steered"
    job = subprocess.Popen(train_args(run_dir, "--epochs", "1000", "--no-tensorboard"), cwd=ROOT,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    tmux = Tmux(100, 30)
    try:
        wait_endpoints(run_dir, job)
        tmux.start([sys.executable, "-m", "scorch_tui", str(run_dir)])
        tmux.wait_for(lambda s: " LIVE " in s and "RUNNING" in s and "p pause" in s, "the dashboard to go live",
                      timeout=120)
        # WHEN p is pressed: the run holds, and the header says PAUSED
        tmux.keys("p")
        wait_until(lambda: applied(run_dir, "pause"), "the pause applied")
        first = tmux.wait_for(lambda s: "PAUSED" in s.splitlines()[0] and "p resume" in s, "PAUSED in the header")
        assert "ETA" not in first.splitlines()[0]
        # WHEN t is pressed and lr x0.5 typed: the dialog says what it would do; enter sends it
        tmux.keys("t")
        tmux.wait_for(lambda s: "enter sends" in s, "the steering dialog")
        tmux.keys("lr x0.5")
        tmux.wait_for(lambda s: "lr x0.5 of the schedule" in s, "the dialog's preview")
        assert not applied(run_dir, "lr")
        tmux.keys("Enter")
        [lr] = wait_until(lambda: applied(run_dir, "lr"), "the lr change applied")
        assert lr["steering"]["lr_scale"] == 0.5 and lr["by"].endswith("(scorch-tui)")
        tmux.wait_for(lambda s: "lr x0.5" in s.splitlines()[0], "lr x0.5 in the header")
        # WHEN p is pressed again: the run trains on, and the header no longer says PAUSED
        tmux.keys("p")
        wait_until(lambda: applied(run_dir, "resume"), "the resume applied")
        tmux.wait_for(lambda s: "PAUSED" not in s.splitlines()[0] and "RUNNING" in s.splitlines()[0], "RUNNING again")
        steps = len([e for e in read_events(run_dir) if e["type"] == "step"])
        wait_until(lambda: len([e for e in read_events(run_dir) if e["type"] == "step"]) > steps, "steps after resume")
    finally:
        tmux.close()
        end_job(job)
