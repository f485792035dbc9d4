"""A real terminal for dashboard tests and benches (one tmux server of our own), and the real job it watches."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import time
import uuid
from pathlib import Path

from helpers.runs import ROOT


class Tmux:
    """One tmux server of our own (its own socket), so the user's sessions are never touched."""

    def __init__(self, width: int, height: int) -> None:
        self.socket = f"scorch-test-{uuid.uuid4().hex[:8]}"
        self.session = "tui"
        self.width, self.height = width, height

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        # The server (and so every pane) takes this environment. Under pytest the process environment holds
        # COLUMNS=80 LINES=24 (set below Python: os.environ lacks them), and Textual obeys them over the pane's
        # real size, so without this every dashboard in tmux was 80x24 whatever the test asked for.
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, check=check, env=env)

    def start(self, command: list[str]) -> None:
        self.run("new-session", "-d", "-s", self.session, "-x", str(self.width), "-y", str(self.height),
                 "-c", str(ROOT), " ".join(shlex.quote(c) for c in command))
        self.run("set-option", "-t", self.session, "remain-on-exit", "on")

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", self.session).stdout

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", self.session, *keys)

    def resize(self, width: int, height: int) -> None:
        """The terminal changes size, as a person dragging the window's corner does (the app gets SIGWINCH)."""
        self.width, self.height = width, height
        self.run("resize-window", "-t", self.session, "-x", str(width), "-y", str(height))

    def pane_dead(self) -> bool:
        out = self.run("display-message", "-p", "-t", self.session, "#{pane_dead}", check=False).stdout.strip()
        return out == "1"

    def wait_for(self, predicate, what: str, timeout: float = 60.0, seen: list | None = None,  # type: ignore[no-untyped-def]
                 every: float = 0.2) -> str:
        """The first screen that satisfies `predicate`; every screen looked at goes into `seen`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.screen()
            if seen is not None:
                seen.append(text)
            if predicate(text):
                return text
            time.sleep(every)
        raise AssertionError(f"timed out waiting for {what}; the screen was:\n{self.screen()}")

    def close(self) -> None:
        self.run("kill-server", check=False)


def wait_endpoints(run_dir: Path, job: subprocess.Popen, timeout: float = 180) -> dict:
    """run.json once the job's telemetry endpoints are in it (the job has built its model and data)."""
    info_path = run_dir / "run.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert job.poll() is None, "the job ended before it started publishing"
        try:
            info = json.loads(info_path.read_text())
        except (OSError, ValueError):
            info = {}
        if "telemetry" in info:
            return info
        time.sleep(0.2)
    raise AssertionError("timed out waiting for run.json endpoints")


def end_job(job: subprocess.Popen) -> None:
    """SIGTERM the job's whole session (a cluster's way), SIGKILL whatever is left; reap it."""
    for sig, wait in ((signal.SIGTERM, 120), (signal.SIGKILL, 30)):
        if job.poll() is not None:
            break
        try:
            os.killpg(job.pid, sig)
        except ProcessLookupError:
            break
        try:
            job.wait(wait)
        except subprocess.TimeoutExpired:
            continue
    if job.poll() is None:
        job.wait()
