"""Shared fixtures: a guard against leaks (helpers are in tests/helpers).

Every test fails if it leaves a thread or a child process behind.
"""

from __future__ import annotations

import threading
import time

import psutil
import pytest

# The shared helpers live in tests/helpers (import them from there). These names stay for test files
# written before it, in the cases that worked then (another conftest.py shadows this one's names).
from helpers.runs import EXAMPLES, ROOT, build, example_args, read_events, scorch_cmd, scorch_env, tiny_args, train  # noqa: E402, F401


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
