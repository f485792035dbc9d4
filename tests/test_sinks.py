"""An optional sink that fails (TensorBoard without Pillow, tensorboardX's writer thread dead on a full disk)
never ends the run: training goes on, one `log` event at level error names the sink and the cause."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers.runs import example_args, read_events, scorch_cmd, scorch_env, tiny_args, train


def error_logs(run_dir: Path) -> list[dict]:
    return [e for e in read_events(run_dir) if e["type"] == "log" and e["level"] == "error"]


def test_tensorboard_images_without_pillow_do_not_end_the_run(tmp_path, monkeypatch):
    # GIVEN Pillow cannot be imported (a plain `pip install` before Pillow was a dependency), and the digits
    # example, whose Socket.process returns images for TensorBoard
    monkeypatch.setitem(sys.modules, "PIL", None)
    run_dir = tmp_path / "run"
    # WHEN it trains two epochs
    code = train(example_args("digits", run_dir, "--epochs", "2", "--no-telemetry"))
    # THEN the run completes, and one error event (not one an epoch) names TensorBoard and the missing module
    assert code == 0
    assert read_events(run_dir)[-1]["status"] == "completed"
    errors = error_logs(run_dir)
    assert len(errors) == 1, errors
    assert "TensorBoard" in errors[0]["message"] and "PIL" in errors[0]["message"], errors[0]
    # AND the scalars written before and after the failure are on disk
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.slow
def test_a_dead_tensorboard_writer_thread_does_not_hang_or_end_the_run(tmp_path):
    # GIVEN the run's tensorboard folder is a tmpfs with no free block: tensorboardX can create its event file,
    # but its writer thread dies at the first flush, and its queue of 10 then fills (put() blocks for ever)
    run_dir = tmp_path / "run"
    folder = run_dir / "tensorboard"
    folder.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4k", "tmpfs", str(folder)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        (folder / "filler").write_bytes(b"x" * 4096)
        # WHEN a run logs far more than 10 TensorBoard events
        job = subprocess.run(scorch_cmd(*tiny_args(run_dir, "--epochs", "8", "--no-telemetry")), env=scorch_env(),
                             capture_output=True, text=True, timeout=240)
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)
    # THEN it completes, and says once that TensorBoard failed
    assert job.returncode == 0, job.stderr
    assert read_events(run_dir)[-1]["status"] == "completed"
    errors = error_logs(run_dir)
    assert len(errors) == 1 and "TensorBoard" in errors[0]["message"], errors
