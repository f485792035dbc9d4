"""Real multi-process runs: mpirun -np 2 (Horovod), one horovodrun --gloo, one torchrun.

Two ranks on the two-input example: one writer, the same weights as one rank
with twice the batch, resume, early stop, SIGTERM on one rank, a rank killed,
a NaN on one rank. Each launch costs ~15 s on two cores (every rank imports
torch and Horovod), so one 2-rank run is shared by the tests that only read it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers.launched import MPIRUN_RANK, LaunchedJob
from helpers.runs import EXAMPLES, example_args, read_events, scorch_env, train

pytestmark = pytest.mark.slow

MPIRUN, HOROVODRUN = shutil.which("mpirun"), shutil.which("horovodrun")
# The Horovod tests need both; the torchrun test needs neither, so it runs (and is not skipped) without them.
needs_horovod = pytest.mark.skipif(MPIRUN is None or importlib.util.find_spec("horovod") is None,
                                   reason="needs OpenMPI's mpirun and Horovod: bash scripts/install-horovod.sh")

# 640 samples: 512 to train, a multiple of 32, so 2 ranks x 16 and 1 rank x 32 take the same steps
# (an uneven set is padded with a few repeated samples so that every rank takes as many steps).
EVEN = '{"size": 640}'
LONG = '{"size": 100000}'  # an epoch of ~2500 steps a rank: time to act mid-epoch
QUIET = ("--no-tensorboard", "--no-telemetry")


def run_args(run_dir: Path, *extra: str, data: str = EVEN) -> list[str]:
    return example_args("two_inputs", run_dir, "--dataset-args", data, "--seed", "1", "--no-shuffle", *extra)


def mpirun(*args: str) -> list[str]:
    root = ["--allow-run-as-root"] if os.geteuid() == 0 else []
    return [MPIRUN, *root, "--oversubscribe", "--bind-to", "none", "-np", "2", sys.executable, "-m", "scorch.cli", *args]


def job_env() -> dict:
    env = scorch_env()
    env["OMP_NUM_THREADS"] = "1"  # two ranks on two cores, beside other tests
    return env


class Job(LaunchedJob):
    """An mpirun job and its ranks in their own session, so that all of them can be ended together."""

    def __init__(self, cmd: list[str]) -> None:
        super().__init__(cmd, MPIRUN_RANK, job_env())


def launch(cmd: list[str], timeout: float = 150) -> tuple[int, str]:
    job = Job(cmd)
    try:
        return job.wait(timeout)
    finally:
        job.kill()


def wait_for_steps(job: Job, run_dir: Path, timeout: float = 60) -> None:
    """Until rank 0 has logged training steps (so every rank is mid-epoch: they step together)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = run_dir / "events.jsonl"
        if events.exists() and any(e["type"] == "step" for e in read_events(run_dir)):
            return
        assert job.proc.poll() is None, job.proc.communicate()[0][-3000:]
        time.sleep(0.2)
    pytest.fail("no step event")


def weights(path: Path) -> dict:
    return torch.load(path, weights_only=False)


def max_difference(a: dict, b: dict) -> float:
    return max((a["model_state"][k] - b["model_state"][k]).abs().max().item() for k in a["model_state"])


@pytest.fixture(scope="module")
def one_rank(tmp_path_factory) -> Path:
    """The reference: one process, batch 32, two epochs, both epochs' checkpoints kept."""
    run_dir = tmp_path_factory.mktemp("one") / "run"
    assert train(run_args(run_dir, "--batch-size", "32", "--epochs", "2", "--keep", "2", *QUIET)) == 0
    return run_dir


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> Path:
    """mpirun -np 2, batch 16 a rank, one epoch (telemetry on: rank 0 publishes)."""
    run_dir = tmp_path_factory.mktemp("two") / "run"
    code, out = launch(mpirun(*run_args(run_dir, "--batch-size", "16", "--epochs", "1", "--no-tensorboard")))
    assert code == 0, out[-3000:]
    return run_dir


@needs_horovod
def test_two_ranks_have_one_writer(two_ranks):
    # GIVEN a finished 2-rank run under mpirun
    # THEN there is one run folder, one event log numbered without gaps or repeats, one set of checkpoints
    assert sorted(p.name for p in two_ranks.parent.iterdir()) == ["run"]
    assert sorted(p.name for p in (two_ranks / "checkpoints").iterdir()) == ["best.pt", "best.pt.sha256", "last.pt", "last.pt.sha256"]
    events = read_events(two_ranks)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert [e["type"] for e in events].count("run_started") == 1
    assert events[-1]["type"] == "run_ended" and events[-1]["status"] == "completed"
    # AND run.json records both ranks
    info = json.loads((two_ranks / "run.json").read_text())
    assert info["world_size"] == 2 and len(info["hosts"]) == 2 and info["backend"] == "horovod"
    assert info["state"] == "completed"


@needs_horovod
def test_two_ranks_of_16_train_like_one_rank_of_32(two_ranks, one_rank):
    # GIVEN the same data in the same order: 2 ranks x batch 16 and 1 rank x batch 32
    two, one = weights(two_ranks / "checkpoints/last.pt"), weights(one_rank / "checkpoints/epoch-1.pt")
    # THEN after an epoch the weights are the same
    assert max_difference(one, two) < 1e-4
    # AND the validation metrics are those of the whole validation set, not of one rank's half
    assert two["metrics"]["main"] == one["metrics"]["main"]
    assert two["metrics"]["mse"] == pytest.approx(one["metrics"]["mse"], rel=1e-5)
    assert two["metrics"]["loss"] == pytest.approx(one["metrics"]["loss"], rel=1e-5)


@needs_horovod
def test_resume_under_mpirun_continues_the_run(two_ranks, one_rank, tmp_path):
    # GIVEN the 1-epoch 2-rank run, copied
    run_dir = tmp_path / "run"
    shutil.copytree(two_ranks, run_dir)
    # WHEN it is resumed under mpirun to 2 epochs
    code, out = launch(mpirun("--resume", str(run_dir), "--epochs", "2", "--headless", *QUIET))
    assert code == 0, out[-3000:]
    # THEN it matches one rank trained 2 epochs straight, and the log goes on in the same file
    assert max_difference(weights(one_rank / "checkpoints/last.pt"), weights(run_dir / "checkpoints/last.pt")) < 1e-4
    events = read_events(run_dir)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    started = [e for e in events if e["type"] == "run_started"]
    assert len(started) == 2 and started[1]["resumed_from"].endswith("last.pt") and started[1]["world_size"] == 2


@needs_horovod
@pytest.mark.skipif(HOROVODRUN is None, reason="horovodrun not installed: bash scripts/install-horovod.sh")
def test_early_stop_ends_every_rank_under_horovodrun(tmp_path):
    # GIVEN horovodrun --gloo with 2 ranks, and an early stop that no metric can escape
    run_dir = tmp_path / "run"
    cmd = [HOROVODRUN, "--gloo", "-np", "2", "-H", "localhost:2", sys.executable, "-m", "scorch.cli",
           *run_args(run_dir, "--batch-size", "16", "--epochs", "6", "--early-stop-patience", "1", "--min-delta", "10", *QUIET)]
    # WHEN it runs
    code, out = launch(cmd)
    # THEN every rank ends after epoch 2, cleanly, with a checkpoint of that epoch
    assert code == 0, out[-3000:]
    ended = read_events(run_dir)[-1]
    assert ended["type"] == "run_ended" and ended["status"] == "early_stopped" and ended["epoch"] == 2
    assert weights(run_dir / "checkpoints/last.pt")["epoch"] == 2
    assert json.loads((run_dir / "run.json").read_text())["backend"] == "horovod"


def test_torchrun_trains_like_one_rank(one_rank, tmp_path):
    # GIVEN torchrun with 2 processes (torch.distributed, gloo), batch 16 a rank
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "scorch.cli",
           *run_args(run_dir, "--batch-size", "16", "--epochs", "1", *QUIET)]
    code, out = launch(cmd)
    assert code == 0, out[-3000:]
    # THEN one writer recorded 2 ranks, and the weights equal one rank's with batch 32
    info = json.loads((run_dir / "run.json").read_text())
    assert info["backend"] == "torch" and info["world_size"] == 2
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.pt", "best.pt.sha256", "last.pt", "last.pt.sha256"]
    assert max_difference(weights(one_rank / "checkpoints/epoch-1.pt"), weights(run_dir / "checkpoints/last.pt")) < 1e-4


@needs_horovod
def test_sigterm_to_one_rank_preempts_every_rank(tmp_path):
    # GIVEN a long 2-rank epoch under way
    run_dir = tmp_path / "run"
    job = Job(mpirun(*run_args(run_dir, "--batch-size", "16", "--epochs", "1", *QUIET, data=LONG)))
    try:
        wait_for_steps(job, run_dir)
        # WHEN rank 1 alone gets SIGTERM (a preemption notice)
        job.rank(1).send_signal(signal.SIGTERM)
        code, out = job.wait(timeout=60)
    finally:
        job.kill()
    # THEN every rank stops at the same step, cleanly: status preempted, a checkpoint saved for the signal
    assert code == 0, out[-3000:]
    events = read_events(run_dir)
    ended = events[-1]
    assert ended["type"] == "run_ended" and ended["status"] == "preempted"
    saved = [e for e in events if e["type"] == "checkpoint_saved"]
    assert [e["reason"] for e in saved] == ["signal"]
    state = weights(run_dir / "checkpoints/last.pt")
    assert 0 < state["epoch_step"] < 2500 and state["step"] == ended["step"]


@needs_horovod
def test_a_killed_rank_ends_the_job_promptly(tmp_path):
    # GIVEN a long 2-rank epoch under way
    run_dir = tmp_path / "run"
    job = Job(mpirun(*run_args(run_dir, "--batch-size", "16", "--epochs", "1", *QUIET, data=LONG)))
    try:
        wait_for_steps(job, run_dir)
        # WHEN rank 1 is killed outright
        job.rank(1).kill()
        killed = time.monotonic()
        code, out = job.wait(timeout=60)
        took = time.monotonic() - killed
    finally:
        job.kill()
    # THEN the whole job ends, non-zero, within 30 s (no rank left waiting in a collective)
    assert code != 0, out[-3000:]
    assert took < 30


NAN_DATASET = '''
import importlib.util

spec = importlib.util.spec_from_file_location("two_inputs_data", {path!r})
base = importlib.util.module_from_spec(spec)
spec.loader.exec_module(base)
DataSet = base.DataSet


class DataSetIndex(base.DataSetIndex):
    """The two-input data with one poisoned training sample: #33, the 17th of rank 1 (its step 2)."""

    def __init__(self, path, **kwargs):
        super().__init__(path, **kwargs)
        self.parts["train"][0][33, 0] = float("nan")
'''


@needs_horovod
def test_a_nan_on_one_rank_stops_every_rank_naming_it(tmp_path):
    # GIVEN a training sample that makes rank 1's loss NaN at step 2 (rank 0's only later, through the averaged gradient)
    dataset = tmp_path / "dataset.py"
    dataset.write_text(NAN_DATASET.format(path=str(EXAMPLES / "two_inputs/dataset.py")))
    run_dir = tmp_path / "run"
    args = run_args(run_dir, "--batch-size", "16", "--epochs", "3", *QUIET)
    args[args.index("--dataset") + 1] = str(dataset)
    # WHEN 2 ranks train
    code, out = launch(mpirun(*args))
    # THEN all ranks stop with the NaN exit code; rank 0 logs why, naming the first NaN: rank 1's step 2
    assert code == 4, out[-3000:]
    ended = read_events(run_dir)[-1]
    assert ended["type"] == "run_ended" and ended["status"] == "failed"
    assert "loss became nan at epoch 1, step 2 on rank 1" in ended["reason"]
    assert not (run_dir / "checkpoints/last.pt").exists()
