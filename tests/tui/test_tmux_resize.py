"""Resize-safe in a real terminal: 200x60 -> 80x24 -> 120x40 with a real job (and with a replay) leaves every panel
readable: each panel's title where a dashboard opened at that size has it, the header and control line whole,
no line running past the terminal's width."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.tmux import Tmux, end_job, wait_endpoints
from helpers.tui import ROOT, train_args

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux"),
]

SIZES = ((80, 24), (120, 40))
TITLES = ("metrics", "ranks", "events", "loss")  # panels every layout has, each in its top border


def layout(screen: str) -> dict[str, int]:
    """Where each panel's title line is: the row of the border line that starts with (or holds) the title."""
    rows: dict[str, int] = {}
    for number, line in enumerate(screen.splitlines()):
        for title in TITLES:
            if title not in rows and re.search(rf"─\s?{title}\b", line):
                rows[title] = number
    return rows


def readable(screen: str, width: int, live: bool) -> bool:
    lines = screen.splitlines()
    if len(lines) < 3 or any(len(line) > width for line in lines):
        return False
    head = lines[0]
    state = ("LIVE" in head and "RUNNING" in head) if live else ("REPLAY" in head and "COMPLETED" in head)
    return state and "elapsed" in head and set(layout(screen)) == set(TITLES) and "commands" in screen


def fresh_screen(command: list[str], size: tuple[int, int], live: bool) -> str:
    """The screen of a dashboard opened at `size` (the reference a resized one must match)."""
    fresh = Tmux(*size)
    try:
        fresh.start(command)
        fresh.wait_for(lambda s: readable(s, size[0], live), f"a fresh dashboard at {size}", timeout=120)
        time.sleep(1.0)  # a replay's last redraws (the events panel lays out after the first frame)
        return fresh.wait_for(lambda s: readable(s, size[0], live), f"a fresh dashboard at {size}", timeout=120)
    finally:
        fresh.close()


def check_resizes(command: list[str], live: bool) -> None:
    fresh = {size: fresh_screen(command, size, live) for size in SIZES}
    expected = {size: layout(screen) for size, screen in fresh.items()}
    tmux = Tmux(200, 60)
    try:
        # GIVEN the dashboard open at 200x60
        tmux.start(command)
        tmux.wait_for(lambda s: readable(s, 200, live), "the dashboard at 200x60", timeout=120)
        for size in SIZES:
            # WHEN the terminal shrinks to 80x24, then grows to 120x40
            tmux.resize(*size)
            # THEN every panel is readable where a fresh open at that size has it (the screen redraws in its time)
            # (a finished replay no longer changes, so there the whole screen must be the fresh one's: each panel
            # redrawn for its new width, none left as the wider layout drew it)
            def same(s: str, size: tuple[int, int] = size) -> bool:
                return readable(s, size[0], live) and layout(s) == expected[size] and (live or s == fresh[size])

            screen = tmux.wait_for(same, f"a readable dashboard at {size} laid out as a fresh one", timeout=60)
            assert layout(screen) == expected[size], screen
    finally:
        tmux.close()


def test_a_live_job_resized_down_and_up_keeps_every_panel_readable(tmp_path: Path):
    run_dir = tmp_path / "digits-resized"
    job = subprocess.Popen(train_args(run_dir, "--epochs", "1000", "--no-tensorboard"), cwd=ROOT,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_endpoints(run_dir, job)
        check_resizes([sys.executable, "-m", "scorch_tui", str(run_dir)], live=True)
    finally:
        end_job(job)


def test_a_replay_resized_down_and_up_keeps_every_panel_readable(finished_run: Path):
    check_resizes([sys.executable, "-m", "scorch_tui", str(finished_run)], live=False)
