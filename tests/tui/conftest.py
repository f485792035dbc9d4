"""Fixtures for the dashboard tests: a real finished run folder, made once per session."""

from __future__ import annotations

import asyncio
import inspect
import subprocess
from pathlib import Path

import pytest
from helpers.tui import ROOT, train_args


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run `async def` tests in a fresh event loop (App.run_test is a coroutine; no plugin needed)."""
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    arguments = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    asyncio.run(pyfuncitem.obj(**arguments))
    return True


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """GIVEN a real run of examples/digits that trained 2 short epochs and ended."""
    run_dir = tmp_path_factory.mktemp("runs") / "digits-finished"
    done = subprocess.run(train_args(run_dir, "--epochs", "2", "--max-train-iterations", "5", "--no-telemetry",
                                     "--no-tensorboard"), capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return run_dir
