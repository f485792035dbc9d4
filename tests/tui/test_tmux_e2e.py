"""End to end: a real training job, the real dashboard in a real terminal (tmux), real keys.

Press c and the checkpoint lands on disk; press q and the dashboard goes while the job trains on.
A job killed with SIGKILL reads DEAD (never RECONNECTING RUNNING); a rank stopped with SIGSTOP
reads STALLED, and LIVE again after SIGCONT.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.launched import TORCHRUN_RANK, rank_process
from helpers.tmux import Tmux, end_job, wait_endpoints
from helpers.tui import ROOT, train_args

from scorch.events_log import read_events
from scorch.telemetry.protocol import CheckpointSaved

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux"),
]


def wait_file(predicate, what: str, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_c_checkpoints_a_real_job_and_q_leaves_it_running(tmp_path: Path):
    # GIVEN a real job that will train for a long while, publishing on loopback
    run_dir = tmp_path / "digits-live"
    job = subprocess.Popen(train_args(run_dir, "--epochs", "1000", "--no-tensorboard"), cwd=ROOT,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    tmux = Tmux(100, 30)
    try:
        info_path = run_dir / "run.json"
        wait_file(lambda: info_path.exists() and "telemetry" in json.loads(info_path.read_text()), "run.json endpoints",
                  timeout=120)
        # AND the dashboard opened on its folder in a real terminal
        tmux.start([sys.executable, "-m", "scorch_tui", str(run_dir)])
        tmux.wait_for(lambda s: " LIVE " in s and "RUNNING" in s and "commands: c checkpoint" in s,
                      "the dashboard to go live")

        # WHEN the user presses c
        tmux.keys("c")
        # THEN a checkpoint asked for by the dashboard lands on disk, and the screen says so
        def requested() -> list[CheckpointSaved]:
            return [e for e in read_events(str(run_dir / "events.jsonl"))
                    if isinstance(e, CheckpointSaved) and e.reason == "request"]

        wait_file(lambda: bool(requested()), "the requested checkpoint")
        assert Path(requested()[0].path).exists()
        tmux.wait_for(lambda s: "checkpoint saved (request)" in s, "the checkpoint on screen")
        assert "checkpoint: accepted" in tmux.screen()

        # WHEN the user presses q
        tmux.keys("q")
        tmux.wait_for(lambda s: tmux.pane_dead(), "the dashboard to quit", timeout=20)
        # THEN the job is still training: alive, still running, still writing events
        seen = len(read_events(str(run_dir / "events.jsonl")))
        time.sleep(1.5)
        assert job.poll() is None
        assert json.loads(info_path.read_text())["state"] == "running"
        assert len(read_events(str(run_dir / "events.jsonl"))) > seen
    finally:
        tmux.close()
        # The job ends the way a cluster would end it: SIGTERM, checkpoint, exit.
        if job.poll() is None:
            job.terminate()
        try:
            job.wait(120)
        except subprocess.TimeoutExpired:
            job.kill()
            job.wait()
        if job.stderr is not None:
            job.stderr.close()
    assert json.loads((run_dir / "run.json").read_text())["state"] == "preempted"
    assert os.path.exists(run_dir / "checkpoints" / "last.pt")


def header(screen: str) -> str:
    return screen.splitlines()[0] if screen else ""


def test_kill_9_reads_dead_with_the_reason_and_a_fresh_open_and_the_picker_agree(tmp_path: Path):
    # GIVEN a real job training for a long while, watched live in a real terminal
    run_dir = tmp_path / "digits-killed"
    job = subprocess.Popen(train_args(run_dir, "--epochs", "1000", "--no-tensorboard"), cwd=ROOT,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    tmux = Tmux(100, 30)
    again = picker = None
    try:
        info = wait_endpoints(run_dir, job)
        assert info["pid"] == job.pid
        tmux.start([sys.executable, "-m", "scorch_tui", str(run_dir)])
        tmux.wait_for(lambda s: " LIVE " in header(s) and "RUNNING" in header(s) and "samples/s" in s,
                      "the dashboard to go live", timeout=120)
        # WHEN the job is killed with SIGKILL (not reaped yet: its parent, this test, is busy watching)
        os.kill(job.pid, signal.SIGKILL)
        killed = time.monotonic()
        seen: list[str] = []
        screen = tmux.wait_for(lambda s: " DEAD " in header(s), "DEAD on screen", timeout=60, seen=seen)
        took = time.monotonic() - killed
        print(f"DEAD on screen {took:.1f} s after kill -9")
        # THEN the header says DEAD and why, and it never claimed RECONNECTING RUNNING on the way
        assert f"process {job.pid} is gone" in header(screen), header(screen)
        assert not any("RECONNECTING" in header(s) for s in seen), [header(s) for s in seen]
        # AND nothing on screen looks live: no ETA, no speed, no commands
        assert "ETA" not in header(screen) and "samples/s" not in screen and "it/s" not in screen
        assert "no commands" in screen
        job.wait()
        # AND a fresh open says the same
        again = Tmux(100, 30)
        again.start([sys.executable, "-m", "scorch_tui", str(run_dir)])
        fresh = again.wait_for(lambda s: " DEAD " in header(s), "DEAD on a fresh open", timeout=60)
        assert f"process {job.pid} is gone" in header(fresh) and "ETA" not in header(fresh), header(fresh)
        assert "RUNNING" not in header(fresh)
        # AND so does the picker of the folder
        picker = Tmux(140, 20)
        picker.start([sys.executable, "-m", "scorch_tui", str(tmp_path)])
        listed = picker.wait_for(lambda s: "digits-killed" in s, "the run in the picker", timeout=60)
        row = next(line for line in listed.splitlines() if "digits-killed" in line)
        assert " dead " in row and f"process {job.pid} is gone" in row, row
    finally:
        for t in (tmux, again, picker):
            if t is not None:
                t.close()
        end_job(job)


def test_sigstop_of_rank_1_reads_stalled_and_sigcont_live_again(tmp_path: Path):
    # GIVEN a real 2-rank torchrun job (gloo), watched live
    run_dir = tmp_path / "digits-two"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "scorch.cli",
           *train_args(run_dir, "--epochs", "1000", "--no-tensorboard")[3:]]
    job = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)
    tmux = Tmux(100, 30)
    stopped = None
    try:
        wait_endpoints(run_dir, job)
        tmux.start([sys.executable, "-m", "scorch_tui", str(run_dir)])
        tmux.wait_for(lambda s: " LIVE " in header(s) and "RUNNING" in header(s) and "2 ranks" in header(s)
                      and "samples/s" in s, "the dashboard to go live", timeout=120)
        # WHEN rank 1 is stopped with SIGSTOP
        stopped = rank_process(job.pid, 1, TORCHRUN_RANK)
        stopped.send_signal(signal.SIGSTOP)
        paused = time.monotonic()
        screen = tmux.wait_for(lambda s: " STALLED " in header(s), "STALLED on screen", timeout=90)
        print(f"STALLED on screen {time.monotonic() - paused:.1f} s after SIGSTOP of rank 1")
        # THEN the header says STALLED with the age of the last step, rank 0 waiting for the others, no ETA
        assert "no step for 00:00:" in header(screen), header(screen)
        # (the per-rank channel names the rank everyone waits for; until it does, rank 0's phase is shown)
        screen = tmux.wait_for(lambda s: "(rank 1 silent)" in header(s), "the silent rank in the header", timeout=30)
        assert "ETA" not in header(screen) and "samples/s" not in screen, screen
        # WHEN rank 1 goes on
        stopped.send_signal(signal.SIGCONT)
        stopped = None
        # THEN the dashboard is LIVE again, with its speed and ETA back
        screen = tmux.wait_for(lambda s: " LIVE " in header(s) and "ETA" in header(s) and "samples/s" in s,
                               "LIVE again", timeout=90)
        assert "STALLED" not in header(screen)
    finally:
        if stopped is not None:
            stopped.send_signal(signal.SIGCONT)
        tmux.close()
        end_job(job)


def test_wait_opens_before_the_job_and_goes_live_when_it_starts(tmp_path: Path):
    # GIVEN a dashboard started on a run folder that does not exist yet
    run_dir = tmp_path / "digits-later"
    tmux = Tmux(100, 30)
    job = None
    try:
        tmux.start([sys.executable, "-m", "scorch_tui", "--wait", str(run_dir)])
        tmux.wait_for(lambda s: "waiting for the run" in header(s) and "waiting for the run to start" in s,
                      "the waiting screen", timeout=60)
        assert not tmux.pane_dead()
        # WHEN the job starts there
        job = subprocess.Popen(train_args(run_dir, "--epochs", "1000", "--no-tensorboard"), cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        # THEN the same dashboard goes live on it, with commands
        tmux.wait_for(lambda s: " LIVE " in header(s) and "RUNNING" in header(s) and "commands: c checkpoint" in s,
                      "the dashboard to go live", timeout=180)
    finally:
        tmux.close()
        if job is not None:
            end_job(job)


def test_the_mouse_is_left_to_the_terminal_unless_asked_and_ctrl_c_quits(finished_run: Path):
    # GIVEN the dashboard on a finished run, started as a user would (no flags), and one with --mouse
    plain, grabbing = Tmux(80, 24), Tmux(80, 24)
    try:
        plain.start([sys.executable, "-m", "scorch_tui", str(finished_run)])
        grabbing.start([sys.executable, "-m", "scorch_tui", "--mouse", str(finished_run)])
        for t in (plain, grabbing):
            t.wait_for(lambda s: "COMPLETED" in header(s), "the replay on screen", timeout=60)
        flags = "#{mouse_any_flag}#{mouse_button_flag}#{mouse_standard_flag}#{mouse_sgr_flag}"
        # THEN only --mouse turns on the terminal's mouse reporting (so text can be selected over SSH)
        assert plain.run("display-message", "-p", "-t", plain.session, flags).stdout.strip() == "0000"
        assert "1" in grabbing.run("display-message", "-p", "-t", grabbing.session, flags).stdout
        # AND ctrl+c quits, as in any terminal program
        plain.keys("C-c")
        plain.wait_for(lambda s: plain.pane_dead(), "the dashboard to quit on ctrl+c", timeout=20)
    finally:
        plain.close()
        grabbing.close()


def test_chart_keys_and_the_wide_layout_in_a_real_terminal(finished_run: Path):
    # GIVEN the dashboard on a real finished digits run (loss and accuracy: two charts) in a 120x40 terminal
    tmux = Tmux(120, 40)
    try:
        tmux.start([sys.executable, "-m", "scorch_tui", str(finished_run)])
        screen = tmux.wait_for(lambda s: "COMPLETED" in header(s) and "epoch" in s, "the replay on screen", timeout=60)
        # THEN the two charts share the width: the second starts half way and its x axis ends at the right edge
        title = next(line for line in screen.splitlines() if "loss" in line and "━" in line)
        assert title.index("accuracy") > 55, screen
        axes = [line.rstrip() for line in screen.splitlines() if "└" in line and line.rstrip().endswith(" epoch")]
        assert axes and len(axes[0]) >= 115, screen

        def axes_say(s: str, word: str) -> int:  # the two charts' x axes share a screen row
            return sum(line.count(word) for line in s.splitlines() if "└" in line)

        # WHEN l is pressed: every chart is drawn on a log axis and says so
        assert axes_say(screen, " log ") == 0
        tmux.keys("l")
        tmux.wait_for(lambda s: axes_say(s, " log ") == 2, "both charts on a log axis")
        # AND x: time since the start on x
        tmux.keys("x")
        tmux.wait_for(lambda s: axes_say(s, " elapsed") == 2, "time on x")
        # AND e: smoothing named on every chart
        tmux.keys("e")
        tmux.wait_for(lambda s: axes_say(s, "ema 0.6") == 2, "smoothing on")
    finally:
        tmux.close()
