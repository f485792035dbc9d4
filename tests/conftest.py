"""Shared fixtures: example paths, an in-process scorch-train, and a guard against leaks.

Every test fails if it leaves a thread or a child process behind.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def example_args(name: str, run_dir: Path, *extra: str) -> list[str]:
    """scorch-train arguments for examples/NAME, writing to run_dir."""
    folder = EXAMPLES / name
    return ["--model", str(folder / "model.py"), "--dataset", str(folder / "dataset.py"),
            "--dataset-path", str(folder), "--run-dir", str(run_dir), "--headless", *extra]


def tiny_args(run_dir: Path, *extra: str) -> list[str]:
    """The two-input example at a size that trains in well under a second an epoch."""
    return example_args("two_inputs", run_dir, "--dataset-args", '{"size": 512}', "--seed", "1", *extra)


def train(argv: list[str], capsys: pytest.CaptureFixture | None = None) -> int:
    """Run scorch-train in this process; returns its exit code."""
    from scorch.cli import train_main

    return train_main(argv)


def build(argv: list[str]):
    """A Trainer built in this process from scorch-train arguments; the test calls fit() and close()."""
    from scorch.cli import build_parser
    from scorch.config import from_namespace
    from scorch.trainer import build as build_trainer

    return build_trainer(from_namespace(build_parser().parse_args(argv)))


def read_events(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines() if line.strip()]


def scorch_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def scorch_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "scorch.cli", *args]


@pytest.fixture(autouse=True)
def no_leftovers():
    """GIVEN any test, THEN it leaves no new thread and no child process running."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5
    while True:
        threads = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        children = [c for c in psutil.Process().children(recursive=True) if c.status() != psutil.STATUS_ZOMBIE]
        if not threads and not children or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not threads, f"test left threads running: {threads}"
    assert not children, f"test left child processes running: {[c.cmdline() for c in children]}"
