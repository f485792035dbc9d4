"""Full disks and unwritable folders: a clear message naming the path and the flag, exit 5, the previous
checkpoint intact; `--on-save-error continue` trains on and logs the error.

The real variants mount a size-limited tmpfs (or a read-only bind mount), which needs root; where
mounting is not allowed they are skipped and the injected-OSError variants still run.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
from pathlib import Path

import pytest
from helpers.faults import FAILING_SAVE, Job, assert_run_folder_whole, child_env, of_type, run_args, slow_model, temp_files
from helpers.runs import read_events, tiny_args, train

from scorch import checkpoint as ckpt
from scorch import events_log, run_folder

STEPS = 50  # steps an epoch at size 2000


def mount(*args: str) -> None:
    result = subprocess.run(["mount", *args], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount here (mount {' '.join(args)}: {result.stderr.strip() or result.returncode}); "
                    "the injected-OSError variants cover this")


@pytest.fixture
def mounts():
    """mount(...) for the test; everything it mounted is unmounted afterwards."""
    done: list[str] = []

    def do(*args: str) -> None:
        mount(*args)
        done.append(args[-1])

    yield do
    for target in reversed(done):
        subprocess.run(["umount", "-l", target], capture_output=True)


def small_disk(mounts, folder: Path, megabytes: int) -> Path:
    folder.mkdir()
    mounts("-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(folder))
    return folder


def assert_stopped_for(job: Job, code: int, path: Path, why: str) -> None:
    err = job.stderr()
    assert code == 5, err
    assert f"could not write checkpoint {path}: {why}; the previous checkpoint is intact" in err, err
    assert "--on-save-error continue" in err and "Traceback" not in err, err


def test_a_full_disk_inside_torch_save_is_reported_as_the_disk_error(tmp_path, monkeypatch):
    # GIVEN a file system that takes 1000 bytes, then fails with ENOSPC (torch's zip writer turns
    # such a failure into RuntimeError("unexpected pos ..."), which would escape --on-save-error)
    import io

    import torch

    class FillsUp(io.FileIO):
        def write(self, data):
            if self.tell() + len(data) > 1000:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return super().write(data)

    monkeypatch.setattr(ckpt.os, "fdopen", lambda fd, mode: FillsUp(fd, "wb"))
    # WHEN a checkpoint is written there
    with pytest.raises(OSError) as raised:
        ckpt.atomic_save({"model_state": {"w": torch.zeros(10_000)}}, str(tmp_path / "last.pt"))
    # THEN the error is the disk's, and nothing is left behind
    assert raised.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("disk", ["tmpfs", "injected"])
def test_a_full_disk_stops_with_a_clear_message_and_keeps_the_previous_checkpoint(tmp_path, mounts, disk):
    # GIVEN a run of 4 MiB checkpoints on a disk that holds one of them, not two (a real 7 MiB tmpfs: last.pt
    # and best.pt are links to one file; or torch.save failing with ENOSPC after one save, half a file written)
    if disk == "tmpfs":
        run_dir, env, code = small_disk(mounts, tmp_path / "disk", 7) / "run", child_env(), None
    else:
        run_dir, env, code = tmp_path / "run", child_env(SCORCH_TEST_SAVE_ERRNO=str(errno.ENOSPC), SCORCH_TEST_SAVE_OK="1"), FAILING_SAVE
    args = run_args(run_dir, "--epochs", "3", "--model-args", '{"ballast_mb": 4}', size=2000, model=slow_model(tmp_path))
    # WHEN the second epoch's last.pt does not fit
    with Job(run_dir, args, env=env, python_code=code) as job:
        exit_code = job.wait()
    # THEN the run stops: exit 5, a message naming the file, the cause and the flag, no traceback
    assert_stopped_for(job, exit_code, run_dir / "checkpoints" / "last.pt", "the disk is full")
    ended = of_type(job.events(), "run_ended")[-1]
    assert ended["status"] == "failed" and "the disk is full" in ended["reason"]
    # AND the first epoch's checkpoints are intact, and the half-written file is gone
    loaded = assert_run_folder_whole(run_dir)
    assert loaded["last.pt"]["step"] == loaded["best.pt"]["step"] == STEPS
    assert temp_files(run_dir) == []


def test_on_save_error_continue_trains_on_and_logs_the_error(tmp_path):
    # GIVEN a disk that fills up after the first epoch's checkpoints, and --on-save-error continue
    run_dir = tmp_path / "run"
    env = child_env(SCORCH_TEST_SAVE_ERRNO=str(errno.ENOSPC), SCORCH_TEST_SAVE_OK="1")
    with Job(run_dir, run_args(run_dir, "--epochs", "3", "--on-save-error", "continue", size=2000), env=env,
             python_code=FAILING_SAVE) as job:
        code = job.wait()
    # THEN training completes, each failed write is an error event, and the last good checkpoint is kept
    assert code == 0, job.stderr()
    events = job.events()
    assert of_type(events, "run_ended")[-1]["status"] == "completed"
    errors = of_type(events, "log", level="error")
    assert len(errors) == 4  # last.pt and best.pt at the ends of epochs 2 and 3
    assert all("the disk is full" in e["message"] and "training goes on (--on-save-error continue)" in e["message"]
               for e in errors)
    assert assert_run_folder_whole(run_dir)["last.pt"]["step"] == STEPS
    assert temp_files(run_dir) == []


@pytest.mark.parametrize("how", ["read-only mount", "permission denied"])
def test_an_unwritable_checkpoint_folder_is_explained(tmp_path, mounts, how):
    # GIVEN a run whose checkpoints/ becomes unwritable after its first checkpoint: a real read-only
    # bind mount; a real chmod 0500 (root ignores permissions, so as root an injected EACCES)
    run_dir = tmp_path / "run"
    checkpoints = run_dir / "checkpoints"
    injected = how == "permission denied" and os.geteuid() == 0
    env = child_env(SCORCH_TEST_SAVE_ERRNO=str(errno.EACCES), SCORCH_TEST_SAVE_OK="1") if injected else child_env()
    args = run_args(run_dir, "--epochs", "1000", size=2000)
    with Job(run_dir, args, env=env, python_code=FAILING_SAVE if injected else None) as job:
        job.wait_for(lambda evs: of_type(evs, "checkpoint_saved", reason="best"), "the first checkpoints")
        # WHEN the next checkpoint is due
        if how == "read-only mount":
            mounts("--bind", str(checkpoints), str(checkpoints))
            mounts("-o", "remount,ro,bind", str(checkpoints))
        elif not injected:
            checkpoints.chmod(0o500)
        code = job.wait()
    if how == "permission denied" and not injected:
        checkpoints.chmod(0o755)
    # THEN the run stops with exit 5 and says which file, why, and what to do
    why = "read-only file system" if how == "read-only mount" else "permission denied"
    assert_stopped_for(job, code, checkpoints / "last.pt", why)
    assert assert_run_folder_whole(run_dir)["last.pt"]["step"] == STEPS


def test_a_disk_that_fills_up_under_the_event_log_stops_cleanly_and_records_the_end(tmp_path, mounts):
    # GIVEN a run on a 4 MiB tmpfs, in a long first epoch (no checkpoint due for a while)
    run_dir = small_disk(mounts, tmp_path / "disk", 4) / "run"
    with Job(run_dir, run_args(run_dir, "--epochs", "2", size=100_000), logs=tmp_path) as job:
        job.wait_step(2)
        # WHEN another program fills the disk, so the event log's next lines do not fit
        with open(run_dir.parent / "filler", "wb", buffering=0) as filler:
            for chunk in (1 << 16, 1 << 12, 1):
                try:
                    while True:
                        filler.write(b"\0" * chunk)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
        code = job.wait()
    # THEN the run stops with exit 5 and a message naming the event log and the cause, no traceback
    err = job.stderr()
    assert code == 5, err
    assert f"could not write {run_dir / 'events.jsonl'}: the disk is full" in err and "Traceback" not in err, err
    # AND the log holds only whole lines (a line that did not fit was taken back) and ends with run_ended,
    # written in the room the run held back (.reserve); run.json says failed, for the same reason
    assert (run_dir / "events.jsonl").read_bytes().endswith(b"\n")
    events = events_log.read_events(str(run_dir / "events.jsonl"))
    assert [e.type for e in events].count("run_ended") == 1 and events[-1].type == "run_ended", events[-3:]
    ended = events[-1]
    assert ended.status == "failed" and ended.reason == f"could not write {run_dir / 'events.jsonl'}: the disk is full", ended
    info = json.loads((run_dir / "run.json").read_text())
    assert (info["state"], info["reason"]) == ("failed", ended.reason), info
    assert run_folder.liveness(str(run_dir)).state == "ended"


@pytest.mark.parametrize("on_error", ["stop", "continue"])
def test_a_checkpoint_that_fails_while_finishing_in_the_background_is_reported(tmp_path, monkeypatch, on_error):
    # GIVEN a disk whose second checkpoint fails only when made durable (fsync, rename), which an
    # epoch-end checkpoint does on a background thread while the next epoch trains
    commit, commits = ckpt.Pending.commit, []

    def failing_commit(pending, **kwargs):
        if pending.path.endswith(".pt"):
            commits.append(pending.path)
            if len(commits) == 2:
                pending.discard()
                raise OSError(errno.EIO, os.strerror(errno.EIO))
        return commit(pending, **kwargs)

    monkeypatch.setattr(ckpt.Pending, "commit", failing_commit)
    run_dir = tmp_path / "run"
    # WHEN a 3-epoch run reaches the end of epoch 2
    code = train(tiny_args(run_dir, "--epochs", "3", "--no-telemetry", "--no-tensorboard", "--on-save-error", on_error))
    events = read_events(run_dir)
    ended = of_type(events, "run_ended")[-1]
    failed = f"could not write checkpoint {run_dir / 'checkpoints' / 'last.pt'}: {os.strerror(errno.EIO)}"
    if on_error == "stop":
        # THEN the run stops with exit 5, naming the file, the cause and the flag, before its next checkpoint
        assert code == 5 and ended["status"] == "failed" and failed in ended["reason"], ended
        assert "--on-save-error continue" in ended["reason"]
        assert len(commits) == 2
        assert ckpt.load(str(run_dir / "checkpoints" / "last.pt"))["epoch"] == 1
    else:
        # THEN training goes on, one error per name of that checkpoint, and the next epoch's checkpoint lands
        assert code == 0 and ended["status"] == "completed", ended
        errors = [e["message"] for e in of_type(events, "log", level="error")]
        assert errors and all("training goes on" in m for m in errors) and failed in errors[0], errors
        assert ckpt.load(str(run_dir / "checkpoints" / "last.pt"))["epoch"] == 3
    # AND every checkpoint announced was in place before run_ended, and no temporary file is left
    saved = [i for i, e in enumerate(events) if e["type"] == "checkpoint_saved"]
    assert saved and max(saved) < events.index(ended)
    assert temp_files(run_dir) == []
