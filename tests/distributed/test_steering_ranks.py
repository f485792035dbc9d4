"""Steering a real 2-rank torchrun job with scorch-ctl: an lr scale and a pause are applied by both ranks at the
same step (each rank's Socket records the rate it trains at, batch by batch; the per-rank channel reports both
ranks paused at one step), the paused ranks burn no CPU, and after kill -9 and --resume the scale and the pause still hold."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from helpers.runs import EXAMPLES, read_events, scorch_env, wait_until

from scorch import ctl

pytestmark = pytest.mark.slow

# The two-input example's Socket, writing the rate of every training batch to a file of its rank and process.
RECORDING_MODEL = '''
import importlib.util, os, time

spec = importlib.util.spec_from_file_location("base_model", {path!r})
base = importlib.util.module_from_spec(spec)
spec.loader.exec_module(base)
Network = base.Network


class Socket(base.Socket):
    def __init__(self, model):
        super().__init__(model)
        name = "rank%s-%d.txt" % (os.environ.get("RANK", "0"), os.getpid())
        self.record = open(os.path.join({folder!r}, name), "a", buffering=1)

    def criterion(self, outputs, targets):
        if self.model.training:  # training batches only (not the sanity pass or validation)
            self.record.write("%r %r\\n" % (self.optimizer.param_groups[0]["lr"], time.time()))
        return super().criterion(outputs, targets)
'''


def torchrun(*args: str) -> subprocess.Popen:
    env = scorch_env()
    env["OMP_NUM_THREADS"] = "1"  # two ranks on two cores, beside other tests
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "scorch.cli",
           *args]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def records(folder: Path, rank: int) -> list[list[tuple[float, float]]]:
    """Per process of `rank`, oldest first: (lr, time) of each training batch."""
    files = sorted(folder.glob(f"rank{rank}-*.txt"), key=lambda p: p.stat().st_ctime)
    return [[tuple(map(float, line.split())) for line in f.read_text().splitlines() if line.count(" ") == 1]
            for f in files]  # type: ignore[misc]


def steer(run_dir: Path, *words: str) -> None:
    code = ctl.main([str(run_dir), *words, "--wait", "--wait-timeout", "120", "--timeout", "30"])
    assert code == 0, f"scorch-ctl {' '.join(words)} exited {code}"


def applied(run_dir: Path, command: str) -> dict:
    return wait_until(lambda: next((e for e in read_events(run_dir) if e["type"] == "command" and e["command"] == command
                                    and e["status"] == "applied"), None), f"{command} applied", timeout=120)


def rank_processes(job: subprocess.Popen) -> list[psutil.Process]:
    return [p for p in psutil.Process(job.pid).children(recursive=True) if "scorch.cli" in " ".join(p.cmdline())]


def kill(job: subprocess.Popen) -> None:
    """kill -9 of the launcher and every rank: torchrun starts each worker in a session of its own."""
    try:
        members = [psutil.Process(job.pid), *psutil.Process(job.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        members = []
    for process in members:
        try:
            process.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(members, timeout=30)
    job.communicate()


def test_lr_scale_and_pause_apply_at_one_step_on_two_ranks_and_survive_kill_and_resume(tmp_path):
    folder = tmp_path / "records"
    folder.mkdir()
    model = tmp_path / "model.py"
    model.write_text(RECORDING_MODEL.format(path=str(EXAMPLES / "two_inputs/model.py"), folder=str(folder)))
    run_dir = tmp_path / "run"
    data = EXAMPLES / "two_inputs"
    args = ["--model", str(model), "--dataset", str(data / "dataset.py"), "--dataset-path", str(data),
            "--dataset-args", '{"size": 200000}', "--seed", "1", "--batch-size", "16", "--epochs", "1",
            "--no-tensorboard", "--headless"]
    # GIVEN a 2-rank torchrun job training a long epoch (~5000 steps a rank)
    job = torchrun(*args, "--run-dir", str(run_dir))
    try:
        wait_until(lambda: (run_dir / "events.jsonl").exists() and any(e["type"] == "step" for e in read_events(run_dir)),
                   "training steps", timeout=180)
        # WHEN scorch-ctl halves the learning rate, mid-epoch
        steer(run_dir, "lr", "x0.5")
        lr_step = int(applied(run_dir, "lr")["reason"].split("step ")[1].split(":")[0])
        # THEN each rank trained at 0.05 up to that step and at 0.025 from the next batch on: the same step on both
        wait_until(lambda: all(len(records(folder, r)[0]) > lr_step + 5 for r in (0, 1)), "steps after the change")
        for rank in (0, 1):
            rates = [lr for lr, _ in records(folder, rank)[0]]
            assert rates[:lr_step] == [0.05] * lr_step and rates[lr_step] == pytest.approx(0.025), rank
        # WHEN it pauses: every rank holds at one step, reported as paused by the per-rank channel, using no CPU
        steer(run_dir, "pause")
        pause_step = int(applied(run_dir, "pause")["reason"].split("step ")[1].split(":")[0])
        paused = wait_until(lambda: next((e for e in read_events(run_dir) if e["type"] == "system" and len(e["ranks"]) == 2
                                          and all(r.get("phase") == "paused" for r in e["ranks"])), None),
                            "both ranks reported paused", timeout=60)
        assert [r["step"] for r in paused["ranks"]] == [pause_step, pause_step]
        ranks = rank_processes(job)
        assert len(ranks) == 2
        before = [sum(p.cpu_times()[:2]) for p in ranks]
        counted = [len(records(folder, r)[0]) for r in (0, 1)]
        time.sleep(4.0)  # a measurement window, not a wait for an event
        spent = [sum(p.cpu_times()[:2]) - b for p, b in zip(ranks, before)]
        assert [len(records(folder, r)[0]) for r in (0, 1)] == counted == [pause_step, pause_step]
        assert max(spent) < 0.2 * 4.0, f"paused ranks used {spent} s of CPU in 4 s"
        # AND a checkpoint taken now keeps the scale; then the job is killed outright
        steer(run_dir, "checkpoint")
        kill(job)
        # WHEN it is resumed under torchrun
        job = torchrun("--resume", str(run_dir), "--headless", "--no-tensorboard")
        # THEN it starts paused, as its checkpoint was: both ranks hold before their first step, and it says so
        wait_until(lambda: any(e["type"] == "log" and "resumed paused" in e["message"] for e in read_events(run_dir)),
                   "the resumed-paused note", timeout=180)
        started = [e for e in read_events(run_dir) if e["type"] == "run_started"][-1]
        assert started["steering"]["lr_scale"] == 0.5 and started["steering"]["paused"] is True
        time.sleep(3.0)  # a window for steps that must not come
        assert [sum(len(r) for r in records(folder, rank)[1:]) for rank in (0, 1)] == [0, 0]
        # WHEN it is resumed from the pause
        steer(run_dir, "resume")
        wait_until(lambda: len(records(folder, 0)) == 2 and len(records(folder, 0)[1]) > 5
                   and len(records(folder, 1)) == 2 and len(records(folder, 1)[1]) > 5, "the resumed job's steps", timeout=180)
        # THEN both ranks train at the scaled rate
        for rank in (0, 1):
            rates = [lr for lr, _ in records(folder, rank)[1]]
            assert rates == [pytest.approx(0.025)] * len(rates), rank
        steer(run_dir, "stop")
        assert job.wait(timeout=120) == 0
    finally:
        kill(job)
