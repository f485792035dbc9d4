"""Preemption and Ctrl-C on real processes: SIGTERM/SIGUSR1 checkpoint and end `preempted`, resume
continues bit for bit, a second SIGTERM exits at once, SIGINT asks once."""

from __future__ import annotations

import json
import random
import signal
import time

import pytest
from helpers.faults import (
    Job,
    assert_run_folder_whole,
    child_env,
    events_of,
    fault_seed,
    of_type,
    run_args,
    same_weights,
    slow_model,
    temp_files,
    wait_until,
)

from scorch import checkpoint as ckpt

EPOCHS = 4
SIZE = 10_000  # 8000 training samples: 250 steps an epoch at batch 32
# Two signals sent closer together than Python runs its handlers coalesce into one (as two SIGTERMs
# a cluster sends within a millisecond would). The held write runs Python every 50 ms, so within
# this long the first signal has surely been handled.
HANDLED = 1.0


def preempt_at_random_step(job: Job, sig: int, rng: random.Random, after: int, before: int) -> int:
    """Wait for a random step in [after, before), send `sig`; returns the step it was sent at."""
    target = rng.randrange(after, before)
    job.wait_step(target)
    job.send(sig)
    return target


@pytest.mark.slow
def test_sigterm_then_sigusr1_checkpoint_end_preempted_and_resume_exactly(tmp_path):
    seed = fault_seed()
    rng = random.Random(seed)
    total = EPOCHS * SIZE * 8 // 10 // 32
    # GIVEN a straight seeded run to compare with (running alongside)
    straight = Job(tmp_path / "straight", run_args(tmp_path / "straight", "--epochs", str(EPOCHS), size=SIZE)).start()
    chain = tmp_path / "chain"
    try:
        # WHEN the same run gets SIGTERM at a random step, is resumed, gets SIGUSR1 at a later random step, is resumed
        stops = []
        args = run_args(chain, "--epochs", str(EPOCHS), size=SIZE)
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            with Job(chain, args) as job:
                start = max([e["step"] for e in of_type(job.events(), "run_ended")], default=0)
                sent = preempt_at_random_step(job, sig, rng, start + 5, start + (total - start) // 3)
                code = job.wait()
                # THEN each ends at once with exit 0, a checkpoint with reason "signal" and run_ended "preempted"
                assert code == 0, f"seed {seed}: exit {code}; stderr:\n{job.stderr()}"
                ended = of_type(job.events(), "run_ended")[-1]
                assert ended["status"] == "preempted" and ended["reason"] == "preemption signal", ended
                saved = of_type(job.events(), "checkpoint_saved", reason="signal")[-1]
                assert saved["step"] == ended["step"] >= sent and saved["path"].endswith("last.pt")
                applied = of_type(job.events(), "command", status="applied")[-1]
                assert applied["command"] == "stop" and applied["id"] == sig.name
                assert ckpt.load(saved["path"])["step"] == ended["step"]
                stops.append(ended["step"])
            args = ["--resume", str(chain), "--headless"]
        with Job(chain, args) as job:
            assert job.wait() == 0, job.stderr()
        assert straight.wait() == 0, straight.stderr()
    finally:
        straight.kill()
    # THEN the twice-preempted run ends with exactly the weights of the straight run
    assert stops[0] < stops[1] < total, f"seed {seed}: stops at {stops}"
    resumed, reference = assert_run_folder_whole(chain)["last.pt"], assert_run_folder_whole(tmp_path / "straight")["last.pt"]
    assert resumed["step"] == reference["step"] == total
    assert same_weights(resumed, reference), f"seed {seed}: preempted at steps {stops}, weights differ from a straight run"
    assert of_type(events_of(chain), "run_ended")[-1]["status"] == "completed"


def test_second_sigterm_during_the_checkpoint_exits_at_once_and_keeps_the_previous(tmp_path):
    # GIVEN a run whose checkpoint writes can be held open, with one checkpoint already saved
    run_dir, flag = tmp_path / "run", tmp_path / "hold-saves"
    args = run_args(run_dir, "--epochs", "100", size=2000, model=slow_model(tmp_path))
    with Job(run_dir, args, env=child_env(SCORCH_TEST_SLOW_SAVE=str(flag))) as job:
        job.wait_for(lambda evs: of_type(evs, "checkpoint_saved", reason="epoch"), "the first checkpoint")
        # WHEN SIGTERM arrives, and again while the preemption checkpoint is being written
        flag.touch()
        job.send(signal.SIGTERM)
        wait_until(lambda: temp_files(run_dir), "the preemption checkpoint's write to begin")
        time.sleep(HANDLED)
        sent = time.monotonic()
        job.send(signal.SIGTERM)
        code = job.wait(timeout=30)
        took = time.monotonic() - sent
        # THEN the process ends at once, killed by that signal, saying so
        assert code == -signal.SIGTERM, job.stderr()
        assert took < 10, f"took {took:.1f} s to exit after the second SIGTERM"
        assert "second SIGTERM: exiting now; the last checkpoint is intact" in job.stderr()
        # AND last.pt is a whole checkpoint the run announced before, and the event log reads
        loaded = assert_run_folder_whole(run_dir)
        announced = {e["step"] for e in of_type(job.events(), "checkpoint_saved") if e["path"].endswith("last.pt")}
        assert loaded["last.pt"]["step"] in announced
        # AND its last words were said on the way out: run_ended in the log, the same in run.json
        ended = job.events()[-1]
        assert ended["type"] == "run_ended" and ended["status"] == "preempted", ended
        assert ended["reason"].startswith("second SIGTERM: exited at once"), ended
        info = json.loads((run_dir / "run.json").read_text())
        assert (info["state"], info["reason"]) == ("preempted", ended["reason"]), info


def test_sigint_once_stops_cleanly_with_a_checkpoint(tmp_path):
    # GIVEN a training run
    run_dir = tmp_path / "run"
    with Job(run_dir, run_args(run_dir, "--epochs", "100", size=2000)) as job:
        job.wait_step(3)
        # WHEN Ctrl-C is pressed once
        job.send(signal.SIGINT)
        code = job.wait()
    # THEN it checkpoints, ends "stopped" (as the dashboard's stop does) and exits 0
    assert code == 0, job.stderr()
    ended = of_type(job.events(), "run_ended")[-1]
    assert ended["status"] == "stopped" and ended["reason"] == "interrupted (Ctrl-C)"
    saved = of_type(job.events(), "checkpoint_saved", reason="interrupt")[-1]
    assert saved["step"] == ended["step"]
    assert assert_run_folder_whole(run_dir)["last.pt"]["step"] == ended["step"]


def test_second_sigint_during_the_checkpoint_interrupts_and_keeps_the_previous(tmp_path):
    # GIVEN a run whose checkpoint writes can be held open, with one checkpoint already saved
    run_dir, flag = tmp_path / "run", tmp_path / "hold-saves"
    args = run_args(run_dir, "--epochs", "100", size=2000, model=slow_model(tmp_path))
    with Job(run_dir, args, env=child_env(SCORCH_TEST_SLOW_SAVE=str(flag))) as job:
        job.wait_for(lambda evs: of_type(evs, "checkpoint_saved", reason="epoch"), "the first checkpoint")
        # WHEN Ctrl-C is pressed, and again while the stop's checkpoint is being written
        flag.touch()
        job.send(signal.SIGINT)
        wait_until(lambda: temp_files(run_dir), "the stop's checkpoint write to begin")
        time.sleep(HANDLED)
        job.send(signal.SIGINT)
        code = job.wait(timeout=30)
    # THEN it exits 130 at once, the half-written file is removed and the previous checkpoint loads
    assert code == 130, job.stderr()
    assert "scorch-train: interrupted" in job.stderr() and "Traceback" not in job.stderr()
    assert temp_files(run_dir) == []
    loaded = assert_run_folder_whole(run_dir)
    announced = {e["step"] for e in of_type(job.events(), "checkpoint_saved") if e["path"].endswith("last.pt")}
    assert loaded["last.pt"]["step"] in announced
