"""Example paths, an in-process scorch-train, a run's events as dicts, and waiting on a condition."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scorch import events_log

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def example_args(name: str, run_dir: Path, *extra: str) -> list[str]:
    """scorch-train arguments for examples/NAME, writing to run_dir."""
    folder = EXAMPLES / name
    return ["--model", str(folder / "model.py"), "--dataset", str(folder / "dataset.py"),
            "--dataset-path", str(folder), "--run-dir", str(run_dir), "--headless", *extra]


def tiny_args(run_dir: Path, *extra: str) -> list[str]:
    """The two-input example at a size that trains in well under a second an epoch."""
    return example_args("two_inputs", run_dir, "--dataset-args", '{"size": 512}', "--seed", "1", *extra)


def train(argv: list[str], capsys: Any = None) -> int:
    """Run scorch-train in this process; returns its exit code."""
    from scorch.cli import train_main

    return train_main(argv)


def build(argv: list[str]) -> Any:
    """A Trainer built in this process from scorch-train arguments; the test calls fit() and close()."""
    from scorch.cli import build_parser
    from scorch.config import from_namespace
    from scorch.trainer import build as build_trainer

    return build_trainer(from_namespace(build_parser().parse_args(argv)))


def read_events(run_dir: Path) -> list[dict]:
    """Every good line of a run's event log as a dict (events_log's rule: a torn last line is dropped)."""
    return [json.loads(line.text) for line in events_log.Reader(events_log.path(str(run_dir))).lines()]


def scorch_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def scorch_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "scorch.cli", *args]


def wait_until(check: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    """Poll `check` until it returns something true (returned), or fail after `timeout` seconds naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.01)
