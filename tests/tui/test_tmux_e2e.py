"""End to end: a real training job, the real dashboard in a real terminal (tmux), real keys.

Press c and the checkpoint lands on disk; press q and the dashboard goes while the job trains on.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from tui_helpers import ROOT, train_args

from scorch.telemetry.protocol import CheckpointSaved, read_events

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux"),
]


class Tmux:
    """One tmux server of our own (its own socket), so the user's sessions are never touched."""

    def __init__(self, width: int, height: int) -> None:
        self.socket = f"scorch-test-{uuid.uuid4().hex[:8]}"
        self.session = "tui"
        self.width, self.height = width, height

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, check=check)

    def start(self, command: list[str]) -> None:
        self.run("new-session", "-d", "-s", self.session, "-x", str(self.width), "-y", str(self.height),
                 "-c", str(ROOT), " ".join(_quote(c) for c in command))
        self.run("set-option", "-t", self.session, "remain-on-exit", "on")

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", self.session).stdout

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", self.session, *keys)

    def pane_dead(self) -> bool:
        out = self.run("display-message", "-p", "-t", self.session, "#{pane_dead}", check=False).stdout.strip()
        return out == "1"

    def wait_for(self, predicate, what: str, timeout: float = 60.0) -> str:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.screen()
            if predicate(text):
                return text
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}; the screen was:\n{self.screen()}")

    def close(self) -> None:
        self.run("kill-server", check=False)


def _quote(word: str) -> str:
    import shlex

    return shlex.quote(word)


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
