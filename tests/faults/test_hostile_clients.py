"""Hostile and broken clients at the control socket of a live run: training goes on at speed, valid
clients are answered, refusals are logged with a limit, and a dashboard that dies mid-command leaves
nothing half done."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.faults import Job, assert_run_folder_whole, child_env, fault_seed, of_type, run_args

from scorch.telemetry.client import read_run_info, read_token
from scorch.telemetry.publisher import REFUSAL_EVENTS_PER_MINUTE

HOSTILE = str(Path(__file__).with_name("hostile.py"))
WINDOW = 3.0  # seconds of training measured with and without the flood
# Messages a second: a flood (a dashboard sends a few a minute), slow enough that the flooder itself does not
# take a core from the trainer on a 2-core box. bench/fault_drill.py also floods as fast as it can.
FLOOD_RATE = 2000


def steps_per_second(events: list[dict], start: float, end: float) -> float:
    """Optimizer steps per second between two wall-clock instants, from the run's own step events."""
    steps = [e for e in of_type(events, "step") if start <= e["time"] <= end]
    assert len(steps) >= 3, f"too few step events between {start} and {end} to measure"
    return (steps[-1]["step"] - steps[0]["step"]) / (steps[-1]["time"] - steps[0]["time"])


def scorch_ctl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scorch.ctl", *args], capture_output=True, text=True, env=child_env(),
                          timeout=60)


def live_run(tmp_path: Path) -> Job:
    run_dir = tmp_path / "run"
    return Job(run_dir, run_args(run_dir, "--epochs", "1000", "--telemetry", size=40_000))


def control_endpoint(job: Job) -> str:
    job.wait_step(1)
    return read_run_info(str(job.run_dir))["telemetry"]["control"]


@pytest.mark.slow
def test_a_flood_of_hostile_messages_neither_slows_training_nor_locks_out_valid_clients(tmp_path):
    seed = fault_seed()
    with live_run(tmp_path) as job:
        control = control_endpoint(job)
        # GIVEN the run's speed over a few seconds without any client
        time.sleep(WINDOW)
        quiet = (time.time() - WINDOW, time.time())
        # WHEN a flood arrives: random bytes, oversized messages, hello floods, wrong tokens, from many connections
        flooder = subprocess.Popen([sys.executable, HOSTILE, "flood", control, str(2 * WINDOW + 4), str(seed),
                                    str(FLOOD_RATE)],
                                   stdout=subprocess.PIPE, text=True, env=child_env())
        try:
            time.sleep(1.0)  # the flooder is up and sending
            during = (time.time(), time.time() + WINDOW)
            time.sleep(WINDOW)
            # THEN a valid scorch-ctl status is answered in the middle of it
            status = scorch_ctl(str(job.run_dir), "status", "--timeout", "20")
            out, _ = flooder.communicate(timeout=60)
        finally:
            if flooder.poll() is None:
                flooder.kill()
                flooder.communicate()
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["state"] == "running"
        sent = json.loads(out)
        assert sent["sent"] > 1000 and sent["kinds"]["wrong_token"] > 100, sent
        # AND the job keeps training (generous bound: this box is shared; the flooder itself takes a core)
        events = job.events()
        base, flooded = steps_per_second(events, *quiet), steps_per_second(events, *during)
        assert flooded > 0.5 * base, f"seed {seed}: {flooded:.0f} steps/s under the flood vs {base:.0f} without"
        # AND refusals are logged with a limit, and the ones beyond it are counted in a log event
        summary = job.wait_for(lambda evs: [e for e in of_type(evs, "log") if "more commands were refused" in e["message"]],
                               "the count of refusals not logged one by one", timeout=30)
        refused = of_type(job.events(), "command", status="refused")
        assert 0 < len(refused) <= REFUSAL_EVENTS_PER_MINUTE, len(refused)
        counted = sum(int(e["message"].split("telemetry: ")[1].split()[0]) for e in summary)
        commands = sent["kinds"]["wrong_token"] + sent["kinds"]["no_token"] + sent["kinds"]["random_json"]
        assert len(refused) + counted <= commands
        # AND no hostile message was taken as a command
        assert of_type(job.events(), "command", status="accepted") == []
        # AND the run still obeys a valid stop
        assert scorch_ctl(str(job.run_dir), "stop", "--timeout", "20").returncode == 0
        assert job.wait() == 0, job.stderr()
    assert of_type(job.events(), "run_ended")[-1]["status"] == "stopped"


@pytest.mark.slow
def test_a_dashboard_killed_right_after_sending_a_command_leaves_nothing_half_done(tmp_path):
    seed = fault_seed()
    rng = random.Random(seed)
    with live_run(tmp_path) as job:
        control, token = control_endpoint(job), read_token(str(job.run_dir))
        # GIVEN dashboards that send `checkpoint` and are killed (SIGKILL) within a few ms of sending
        ids = [f"dying-{i}" for i in range(5)]
        for command_id in ids:
            client = subprocess.Popen([sys.executable, HOSTILE, "command", control, token, "checkpoint", command_id],
                                      stdout=subprocess.PIPE, text=True, env=child_env())
            assert client.stdout.readline().strip() == "sent"
            time.sleep(rng.uniform(0.0, 0.05))
            client.kill()
            client.communicate()
        # WHEN the run has had time to act on what arrived
        now = max(e["step"] for e in of_type(job.events(), "step"))
        job.wait_step(now + 50)
        assert job.alive()
        events = job.events()
        # THEN each command was either not received at all, or accepted, checkpointed and applied, in that order
        for command_id in ids:
            seen = [e for e in events if e.get("id") == command_id]
            if not seen:
                continue  # it died before its message left: nothing happened, which is fine
            assert [e["status"] for e in seen] == ["accepted", "applied"], f"seed {seed}: {seen}"
            accepted, applied = seen[0]["seq"], seen[1]["seq"]
            assert [e for e in of_type(events, "checkpoint_saved", reason="request") if accepted < e["seq"] < applied], \
                f"seed {seed}: {command_id} applied without its checkpoint"
        assert any(e.get("id") in ids for e in events), "no command got through: the test proved nothing"
        # AND the run goes on training, and its checkpoints load
        assert_run_folder_whole(job.run_dir)
        assert scorch_ctl(str(job.run_dir), "stop", "--timeout", "20").returncode == 0
        assert job.wait() == 0, job.stderr()
