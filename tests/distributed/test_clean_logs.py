"""Clean logs under mpirun: OpenMPI gives each rank a terminal, yet a redirected `mpirun ... > log` holds plain
lines (no progress bar, no escape codes), progress from rank 0 alone, and an error once, tagged with a rank."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.runs import EXAMPLES, scorch_env

pytestmark = pytest.mark.slow

MPIRUN = shutil.which("mpirun")
if MPIRUN is None:
    pytest.skip("needs OpenMPI's mpirun: bash scripts/install.sh --test", allow_module_level=True)
pytest.importorskip("horovod.torch", reason="needs Horovod: bash scripts/install-horovod.sh")


def digits(run_dir: Path, *extra: str) -> list[str]:
    """The digits example as the README writes it: no --headless (conftest's example_args adds it)."""
    folder = EXAMPLES / "digits"
    return ["--model", str(folder / "model.py"), "--dataset", str(folder / "dataset.py"), "--dataset-path", str(folder),
            "--run-dir", str(run_dir), "--epochs", "1", "--no-telemetry", *extra]


def mpirun_to_file(log: Path, *args: str) -> tuple[int, str]:
    """`mpirun -np 2 scorch-train ARGS > log 2>&1`; its exit code and the log."""
    root = ["--allow-run-as-root"] if os.geteuid() == 0 else []
    cmd = [MPIRUN, *root, "--oversubscribe", "--bind-to", "none", "-np", "2", sys.executable, "-m", "scorch.cli", *args]
    env = scorch_env()
    env["OMP_NUM_THREADS"] = "1"
    with open(log, "w") as out:
        code = subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=300).returncode
    return code, log.read_text()


def test_mpirun_redirected_to_a_file_has_plain_lines_from_rank_zero(tmp_path):
    # GIVEN two ranks of the digits example (one epoch: many progress updates), the output redirected to a file
    code, text = mpirun_to_file(tmp_path / "log", *digits(tmp_path / "run", "--log-interval", "0"))
    # THEN the run completes, the file has no carriage return and no escape sequence
    assert code == 0, text
    assert "\r" not in text and "\x1b" not in text, repr(text[:2000])
    # AND rank 0 alone printed: one start line, one end line, step lines once each
    assert text.count("scorch: training ") == 1 and text.count("run ended: completed") == 1, text
    steps = [line for line in text.splitlines() if " step " in line and line.startswith("epoch 1/1")]
    assert steps and len(steps) == len(set(steps)), text


def test_an_error_every_rank_has_is_printed_once_with_its_rank(tmp_path):
    # GIVEN two ranks with a --monitor that names no metric (every rank finds it after the first epoch)
    code, text = mpirun_to_file(tmp_path / "log", *digits(tmp_path / "run", "--monitor", "acc"))
    # THEN the job fails, and the error is in the log once, tagged with the rank that printed it
    assert code != 0, text
    errors = [line for line in text.splitlines() if line.startswith("scorch-train: error:")]
    assert errors == ["scorch-train: error: rank 0: --monitor acc: the validation metrics are ['accuracy', 'loss', "
                      "'main']; pick one of them"], text
