"""Crash safety: `kill -9` at any instant leaves every checkpoint loadable, an event log that reads,
and a run folder that resumes."""

from __future__ import annotations

import random
import signal
import time

import pytest
from helpers.faults import Job, assert_run_folder_whole, fault_seed, of_type, run_args, slow_model, temp_files, wait_until

from scorch import events_log


@pytest.mark.slow
def test_kill_9_at_random_instants_never_loses_a_checkpoint_and_the_run_resumes(tmp_path):
    seed = fault_seed()
    rng = random.Random(seed)
    # GIVEN a run that checkpoints many times a second: 5-step epochs, last/best/2 kept, 2 MiB each
    run_dir = tmp_path / "run"
    args = run_args(run_dir, "--epochs", "100000", "--max-train-iterations", "5", "--keep", "2",
                    "--model-args", '{"ballast_mb": 2}', size=2000, model=slow_model(tmp_path))
    seen = 0
    for trial, aim in enumerate(("anywhere", "mid-write", "mid-write")):
        with Job(run_dir, args) as job:
            # WHEN it is killed with SIGKILL: at a random instant, or just as a checkpoint write is under way
            job.wait_for(lambda evs, seen=seen: [e for e in of_type(evs, "checkpoint_saved") if e["seq"] > seen],
                         "a checkpoint from this process")
            if aim == "anywhere":
                time.sleep(rng.uniform(0.0, 0.5))
            else:
                wait_until(lambda: temp_files(run_dir), "a checkpoint write")
                time.sleep(rng.uniform(0.0, 0.005))
            job.send(signal.SIGKILL)
            assert job.wait() == -signal.SIGKILL
        # THEN last.pt, best.pt and the kept ones all load, and events.jsonl reads (a torn last line skipped)
        loaded = assert_run_folder_whole(run_dir)
        assert {"last.pt", "best.pt"} <= set(loaded), f"seed {seed}, trial {trial}: {sorted(loaded)}"
        seen = events_log.read_events(str(run_dir / "events.jsonl"))[-1].seq
        # AND the next process resumes from the folder
        args = ["--resume", str(run_dir), "--headless"]
    epochs = loaded["last.pt"]["epoch"] + 2
    with Job(run_dir, [*args, "--epochs", str(epochs)]) as job:
        code = job.wait()
    assert code == 0, f"seed {seed}: {job.stderr()}"
    # AND the log, torn tails cut on each resume, reads whole with strictly growing seq
    events = events_log.read_events(str(run_dir / "events.jsonl"))
    assert [e.seq for e in events] == sorted({e.seq for e in events})
    assert events[-1].type == "run_ended" and events[-1].status == "completed" and events[-1].epoch == epochs
    assert len(of_type(job.events(), "run_started")) == 4
