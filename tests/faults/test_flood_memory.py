"""Bounded memory under hostile load: a live run flooded through real ZeroMQ sockets (50,000 hostile control
messages, 500 subscribers churning, a hello storm from connections that never read) comes back to within
10 MiB of its RSS before each flood, and still answers and obeys valid clients."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from helpers.faults import Job, child_env, fault_seed, of_type, run_args

from scorch.telemetry.client import RunClient, read_run_info

HOSTILE = str(Path(__file__).with_name("hostile.py"))
SLACK_MIB = 10.0
SETTLE_SECONDS = 240.0  # a flood's backlog is answered at a tenth of a thread's time: a minute or more when loaded


def rss_mib(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


def hostile(*args: str) -> dict:
    out = subprocess.run([sys.executable, HOSTILE, *args], capture_output=True, text=True, env=child_env(), timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def settled(job: Job, limit: float, what: str) -> float:
    """Wait (polling, generous deadline) until the run's RSS is at most `limit` MiB; the RSS then."""
    deadline, seen = time.monotonic() + SETTLE_SECONDS, []
    while True:
        now = rss_mib(job.pid)
        seen.append(round(now))
        if now <= limit:
            return now
        assert job.alive(), f"the run died after {what}:\n{job.stderr()[-2000:]}"
        assert time.monotonic() < deadline, (f"RSS did not come back to {limit:.0f} MiB within {SETTLE_SECONDS:.0f} s "
                                             f"after {what}: {seen[::10]} MiB")
        time.sleep(1.0)


@pytest.mark.slow
@pytest.mark.timeout(1200)  # three floods, each waited out (SETTLE_SECONDS at most), on a shared 2-core box
def test_a_flood_leaves_the_trainer_within_10_mib_of_its_memory_before(tmp_path):
    seed = fault_seed()
    run_dir = tmp_path / "run"
    with Job(run_dir, run_args(run_dir, "--epochs", "1000", "--telemetry", size=40_000)) as job:
        job.wait_step(1)
        telemetry = read_run_info(str(run_dir))["telemetry"]
        # GIVEN a run whose hello snapshot has some history, and its RSS once it has settled into training
        first = max(e["seq"] for e in job.events())
        job.wait_for(lambda evs: max(e["seq"] for e in evs) > first + 40, "some history")
        before = rss_mib(job.pid)
        # WHEN 50,000 hostile control messages arrive as fast as a client can send them
        sent = hostile("flood", telemetry["control"], "600", str(seed), "0", "50000")
        assert sent["sent"] == 50_000, sent
        # THEN (each time) the run's RSS comes back to within 10 MiB of its level before that flood
        after_flood = settled(job, before + SLACK_MIB, f"50,000 hostile messages (seed {seed})")
        # AND 500 subscribers that never read join and leave, four times over
        assert hostile("subscribers", telemetry["publish"], "500", "4")["opened"] == 2000
        after_churn = settled(job, after_flood + SLACK_MIB, "500 churning subscribers")
        # AND a hello storm: 200 connections ask for 50 snapshots each and never read them
        assert hostile("hellos", telemetry["control"], "200", "50")["sent"] > 1000
        after_storm = settled(job, after_churn + SLACK_MIB, "a hello storm")
        print(f"RSS MiB: before {before:.1f}, after the flood {after_flood:.1f}, the churn {after_churn:.1f}, "
              f"the storm {after_storm:.1f}")
        # AND a valid client is still answered, and a valid stop obeyed
        client = RunClient.from_run_dir(str(run_dir), timeout=30)
        try:
            assert client.hello().state == "running"
            assert client.command("stop").status == "accepted"
        finally:
            client.close()
        assert job.wait() == 0, job.stderr()
    assert of_type(job.events(), "run_ended")[-1]["status"] == "stopped"
