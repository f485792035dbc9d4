"""Real torchrun jobs for what grows with the number of ranks: the agreement, validation, the per-rank channel.

Validation is gathered to rank 0 only (rank 1 never holds the whole set, nor
calls Socket.metrics) and gives the metrics one process gets; a SIGSTOPped rank
of 4 is named by rank 0 (a `log` event, `scorch-ctl status`) while the others
wait for it in a collective; control requests and a signal on a rank other
than 0 reach every rank through the fixed-size agreement.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from helpers.launched import TORCHRUN_RANK, LaunchedJob
from helpers.runs import EXAMPLES, example_args, read_events, scorch_env, train

pytestmark = pytest.mark.slow

EVEN = '{"size": 640}'
LONG = '{"size": 100000}'  # an epoch of thousands of steps a rank: time to act mid-epoch
QUIET = ("--no-tensorboard",)


def torchrun(ranks: int, *args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks),
            "-m", "scorch.cli", *args]


class TorchJob(LaunchedJob):
    """A torchrun job in its own session (so that every rank can be ended together)."""

    def __init__(self, cmd: list[str], cwd: str | None = None) -> None:
        super().__init__(cmd, TORCHRUN_RANK, dict(scorch_env(), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1"), cwd=cwd,
                         timeout=240)


def wait_for(what: str, check, job: TorchJob, timeout: float = 180):
    """Until `check()` returns something true; fails early when the job has ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        if job.proc.poll() is not None:
            pytest.fail(f"the job ended before {what}:\n{job.proc.communicate()[0][-3000:]}")
        time.sleep(0.2)
    pytest.fail(f"no {what} within {timeout} s")


def weight_difference(run_a: Path, run_b: Path) -> float:
    """The largest difference between the two runs' last.pt weights."""
    a, b = (torch.load(run / "checkpoints/last.pt", weights_only=False)["model_state"] for run in (run_a, run_b))
    return max((a[k] - b[k]).abs().max().item() for k in a)


def events_of(run_dir: Path) -> list[dict]:
    return read_events(run_dir) if (run_dir / "events.jsonl").exists() else []


# Two-input model whose Socket.metrics notes, per call, which rank called it and how many samples it saw.
COUNTING_MODEL = textwrap.dedent('''
    import os
    import sys

    sys.path.insert(0, {examples!r})
    from two_inputs.model import Network  # noqa: F401
    from two_inputs.model import Socket as Base


    class Socket(Base):
        def metrics(self, outputs, targets):
            with open(os.path.join({notes!r}, "rank-" + os.environ.get("RANK", "0")), "a") as fh:
                fh.write(f"{{len(outputs[0])}}\\n")
            return super().metrics(outputs, targets)
''')


def test_validation_is_gathered_to_rank_zero_only(tmp_path):
    # GIVEN the two-input model, with a Socket.metrics that notes who calls it with how many samples
    notes = tmp_path / "notes"
    notes.mkdir()
    model = tmp_path / "model.py"
    model.write_text(COUNTING_MODEL.format(examples=str(EXAMPLES), notes=str(notes)))

    def args(run_dir: Path, *extra: str) -> list[str]:
        argv = example_args("two_inputs", run_dir, "--dataset-args", EVEN, "--seed", "1", "--no-shuffle", "--epochs", "1",
                            "--no-telemetry", *QUIET, *extra)
        argv[argv.index("--model") + 1] = str(model)
        return argv

    # AND the reference: one process, batch 32
    assert train(args(tmp_path / "one", "--batch-size", "32")) == 0
    one = [int(n) for n in (notes / "rank-0").read_text().split()]
    (notes / "rank-0").unlink()
    # WHEN 2 ranks of batch 16 train and validate under torchrun
    job = TorchJob(torchrun(2, *args(tmp_path / "two", "--batch-size", "16")))
    code, out = job.wait()
    assert code == 0, out[-3000:]
    # THEN rank 0 alone computed the metrics, over the whole validation set; rank 1 never held it
    assert sorted(p.name for p in notes.iterdir()) == ["rank-0"], "a rank other than 0 computed the metrics"
    assert [int(n) for n in (notes / "rank-0").read_text().split()] == one
    # AND the metrics are those of one process
    two_metrics = [e for e in read_events(tmp_path / "two") if e["type"] == "epoch_end"][0]["metrics"]
    one_metrics = [e for e in read_events(tmp_path / "one") if e["type"] == "epoch_end"][0]["metrics"]
    assert two_metrics["main"] == one_metrics["main"]
    assert two_metrics["mse"] == pytest.approx(one_metrics["mse"], rel=1e-5)
    assert two_metrics["loss"] == pytest.approx(one_metrics["loss"], rel=1e-5)


def scorch_ctl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scorch.ctl", *args], env=scorch_env(), capture_output=True, text=True,
                          timeout=60)


def test_a_stopped_rank_is_named_by_rank_zero(tmp_path):
    # GIVEN a long epoch under way on 4 ranks (telemetry on)
    run_dir = tmp_path / "run"
    job = TorchJob(torchrun(4, *example_args("two_inputs", run_dir, "--dataset-args", LONG, "--batch-size", "16",
                                             "--epochs", "1", *QUIET)))
    try:
        wait_for("every rank reporting", lambda: any(e["type"] == "system" and len(e["ranks"]) == 4 and all(
            r["state"] == "live" and r.get("pid") for r in e["ranks"]) for e in events_of(run_dir)), job)
        # WHEN rank 2 is stopped (SIGSTOP: alive, silent; the others soon wait for it in a collective)
        stopped = job.rank(2)
        stopped.suspend()
        when = time.time()

        def named() -> dict | None:
            return next((e for e in events_of(run_dir) if e["type"] == "log" and e.get("rank") == 2
                         and "has sent nothing" in e["message"]), None)

        event = wait_for("log event naming rank 2", named, job, timeout=90)
        # THEN rank 0 names it within 15 s, with its pid
        assert event["level"] == "error" and f"pid {stopped.pid}" in event["message"]
        assert event["time"] - when < 15, f"named {event['time'] - when:.1f} s after the SIGSTOP"
        # AND scorch-ctl status says so too, once the next `system` event is out
        def status_names_it() -> dict | None:
            done = scorch_ctl(str(run_dir), "status")
            live = json.loads(done.stdout).get("live") or {} if done.returncode == 0 else {}
            return live if live.get("silent_ranks") == [2] else None

        live = wait_for("scorch-ctl status naming rank 2", status_names_it, job, timeout=60)
        assert [r["state"] for r in live["ranks"]] == ["live", "live", "silent", "live"]
        # WHEN it goes on again THEN rank 0 says so, and the job stops cleanly on request
        stopped.resume()
        wait_for("rank 2 reporting again", lambda: any(e["type"] == "log" and e.get("rank") == 2 and "reports again"
                                                       in e["message"] for e in events_of(run_dir)), job, timeout=60)
        assert scorch_ctl(str(run_dir), "stop").returncode == 0
        code, out = job.wait()
    finally:
        job.kill()
    assert code == 0, out[-3000:]
    ended = read_events(run_dir)[-1]
    assert ended["type"] == "run_ended" and ended["status"] == "stopped"


def test_a_signal_on_rank_one_and_a_request_reach_every_rank(tmp_path):
    # GIVEN a long epoch under way on 2 ranks
    run_dir = tmp_path / "run"
    job = TorchJob(torchrun(2, *example_args("two_inputs", run_dir, "--dataset-args", LONG, "--batch-size", "16",
                                             "--epochs", "1", *QUIET)))
    try:
        wait_for("step events", lambda: any(e["type"] == "step" for e in events_of(run_dir)), job)
        # WHEN a checkpoint is asked of rank 0, and it is applied
        assert scorch_ctl(str(run_dir), "checkpoint", "--wait", "--wait-timeout", "120").returncode == 0
        # AND rank 1 alone gets SIGTERM (a preemption notice)
        job.rank(1).send_signal(signal.SIGTERM)
        code, out = job.wait()
    finally:
        job.kill()
    # THEN every rank stopped at the same step: preempted, a checkpoint for the request and one for the signal
    assert code == 0, out[-3000:]
    events = read_events(run_dir)
    assert [e["reason"] for e in events if e["type"] == "checkpoint_saved"] == ["request", "signal"]
    applied = [e for e in events if e["type"] == "command" and e["status"] == "applied"]
    assert [(e["command"], e["id"]) for e in applied][-1] == ("stop", "signal on another rank")
    assert events[-1]["type"] == "run_ended" and events[-1]["status"] == "preempted"


# The two-input data, each item slow while the flag file exists: a first run lasts until the test has acted
# (a signal, a kill); the next one (flag gone) is quick.
SLOW_WHILE_FLAGGED = textwrap.dedent('''
    import os
    import sys
    import time

    sys.path.insert(0, {examples!r})
    from two_inputs.dataset import DataSet as Base, DataSetIndex  # noqa: F401


    class DataSet(Base):
        def __getitem__(self, i):
            if os.path.exists({flag!r}):
                time.sleep(0.02)
            return super().__getitem__(i)
''')


def test_torchrun_elastic_restart_resumes_from_the_last_checkpoint(tmp_path):
    # GIVEN torchrun with --max-restarts 1, 2 ranks, slow data (while the flag exists), no --run-dir
    flag = tmp_path / "slow"
    flag.touch()
    dataset = tmp_path / "dataset.py"
    dataset.write_text(SLOW_WHILE_FLAGGED.format(examples=str(EXAMPLES), flag=str(flag)))

    def args(folder: Path, *extra: str) -> list[str]:
        argv = example_args("two_inputs", folder, "--dataset-args", '{"size": 1280}', "--seed", "1", "--no-shuffle",
                            "--epochs", "3", *QUIET, "--no-telemetry", *extra)
        argv[argv.index("--dataset") + 1] = str(dataset)
        return argv

    argv = args(tmp_path, "--batch-size", "16")
    del argv[argv.index("--run-dir") : argv.index("--run-dir") + 2]
    cmd = torchrun(2, *argv)
    cmd[cmd.index("--standalone") + 1 : cmd.index("--standalone") + 1] = ["--max-restarts", "1"]
    job = TorchJob(cmd, cwd=str(tmp_path))
    runs = tmp_path / "runs"

    def run_dir() -> Path | None:  # the default name lasts across restarts: runs/model-torchrun-<rendezvous id>
        found = list(runs.glob("model-torchrun-*")) if runs.exists() else []
        return found[0] if found else None

    try:
        # WHEN rank 1 is killed in epoch 2, after epoch 1's checkpoint
        def in_epoch_two() -> bool:
            folder = run_dir()
            history = events_of(folder) if folder else []
            return any(e["type"] == "checkpoint_saved" for e in history) and any(
                e["type"] == "step" and e["epoch"] == 1 for e in history)

        wait_for("a step of epoch 2", in_epoch_two, job)
        job.rank(1).kill()
        flag.unlink()  # the restarted group goes at full speed
        code, out = job.wait()
    finally:
        job.kill()
    # THEN torchrun restarted the group, which resumed by itself from that checkpoint and completed
    assert code == 0, out[-3000:]
    history = read_events(run_dir())
    starts = [e for e in history if e["type"] == "run_started"]
    ends = [e["status"] for e in history if e["type"] == "run_ended"]
    assert len(starts) == 2 and starts[1]["resumed_from"].endswith("last.pt") and starts[1]["start_epoch"] == 1, ends
    assert ends == ["failed", "completed"]
    # AND the weights are those of an uninterrupted run (one process, twice the batch)
    assert train(args(tmp_path / "reference", "--batch-size", "32")) == 0
    assert weight_difference(run_dir(), tmp_path / "reference") < 1e-4
