"""One writer per run folder, on real processes: a `--resume` of a live run and a second run racing
into the same folder are refused with exit 2 naming the holder, the live run's files untouched; a
killed run is dead everywhere (scorch-ctl, the dashboard's run list) and resumes."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.faults import Job, child_env, events_of, of_type, run_args, wait_until
from scorch_tui.runs import list_runs

from scorch import run_folder


def scorch_ctl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scorch.ctl", *args], capture_output=True, text=True, env=child_env(),
                          timeout=120)


def contents(path: Path) -> dict[str, bytes]:
    """Every file of the run folder that only its start writes, by name."""
    return {name: (path / name).read_bytes() for name in ("run.json", ".token") if (path / name).exists()}


def one_writer_log(run_dir: Path) -> list[dict]:
    """events.jsonl's events, checked to be one process's: seq 1, 2, 3... and one run_started per start."""
    events = events_of(run_dir)
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(seqs) + 1)), "seq numbers used twice or skipped: two writers"
    return events


@pytest.mark.slow
def test_resume_of_a_live_run_is_refused_naming_it_and_the_live_run_goes_on_untouched(tmp_path):
    # GIVEN a live run with telemetry, checkpointing every few steps
    run_dir = tmp_path / "run"
    with Job(run_dir, run_args(run_dir, "--epochs", "100000", "--max-train-iterations", "5", "--telemetry",
                               size=2000)) as live:
        live.wait_for(lambda evs: of_type(evs, "checkpoint_saved"), "a checkpoint")
        before = contents(run_dir)
        # WHEN a second scorch-train resumes the same folder
        with Job(run_dir, ["--resume", str(run_dir), "--headless"], logs=tmp_path) as second:
            code = second.wait()
        # THEN it is refused with exit 2 and one line naming the live process and its host
        err = second.stderr()
        assert code == 2, err
        assert f"pid {live.pid} on host {socket.gethostname()}" in err and "Traceback" not in err, err
        assert err.count("\n") == 1, err
        # AND a fresh run into the same folder is refused the same way, naming the live process (not told to --resume it)
        with Job(run_dir, run_args(run_dir, "--epochs", "1", size=1000), logs=tmp_path) as fresh:
            code = fresh.wait()
        err = fresh.stderr()
        assert code == 2 and f"is in use by scorch-train pid {live.pid} on host" in err and err.count("\n") == 1, err
        # AND the live run's files are as it wrote them: same run.json and token, one writer's log
        assert contents(run_dir) == before
        epochs = [e["epoch"] for e in of_type(one_writer_log(run_dir), "checkpoint_saved")]
        assert epochs == sorted(epochs), "last.pt went back: a second writer"
        assert len(of_type(events_of(run_dir), "run_started")) == 1
        # AND scorch-ctl stop reaches the live run, which ends stopped
        done = scorch_ctl(str(run_dir), "stop")
        assert done.returncode == 0, done.stderr
        assert live.wait() == 0, live.stderr()
    ended = of_type(one_writer_log(run_dir), "run_ended")
    assert [e["status"] for e in ended] == ["stopped"]


START_LINE = str(Path(__file__).with_name("start_line_dataset.py"))  # two processes released together


def race(tmp_path: Path, run_dir: Path, trial: int = 0, resume: bool = False) -> tuple[list[int], list[str]]:
    """Two runs (fresh, or resuming the finished run in `run_dir`) released into the same folder at the same
    instant: their exit codes and stderr."""
    go = tmp_path / f"go-{trial}"
    dataset = START_LINE
    if resume:
        args = ["--resume", str(run_dir), "--headless", "--epochs", "40", "--dataset", dataset]
    else:
        args = run_args(run_dir, "--epochs", "40", size=1000)  # seconds of training: the loser comes while it runs
        args[args.index("--dataset") + 1] = dataset
    jobs = [Job(run_dir, args, env=child_env(SCORCH_TEST_GO=str(go)), logs=tmp_path) for _ in range(2)]
    try:
        for job in jobs:
            job.start()
        wait_until(lambda: len(list(tmp_path.glob(f"go-{trial}.ready.*"))) == 2 or not all(j.alive() for j in jobs),
                   "both runs at the start line", timeout=300)
        go.write_text("")
        codes = [job.wait() for job in jobs]
        return codes, [job.stderr() for job in jobs]
    finally:
        for job in jobs:
            job.kill()


@pytest.mark.slow
@pytest.mark.parametrize("resume", [False, True], ids=["fresh", "resume"])
def test_two_runs_racing_into_one_folder_one_wins_and_the_other_exits_2(tmp_path, resume):
    # GIVEN two runs started into the same --run-dir (fresh, or both resuming it), released at the same instant
    run_dir = tmp_path / "run"
    if resume:
        with Job(run_dir, run_args(run_dir, "--epochs", "1", size=1000), logs=tmp_path) as first:
            assert first.wait() == 0, first.stderr()
    codes, errs = race(tmp_path, run_dir, resume=resume)
    # THEN one trains to the end, the other is refused with exit 2 and one line that says why
    assert sorted(codes) == [0, 2], errs
    loser = errs[codes.index(2)]
    assert ("is in use by scorch-train pid" in loser or "already holds a run" in loser) and "Traceback" not in loser, loser
    # AND the folder was written by one process only: one start and one end for each process that trained
    events = one_writer_log(run_dir)
    assert len(of_type(events, "run_started")) == 1 + resume
    assert [e["status"] for e in of_type(events, "run_ended")] == ["completed"] * (1 + resume)


@pytest.mark.slow
def test_a_killed_run_reads_as_dead_everywhere_and_resumes(tmp_path):
    # GIVEN a live run with telemetry
    run_dir = tmp_path / "run"
    with Job(run_dir, run_args(run_dir, "--epochs", "100000", "--max-train-iterations", "5", "--telemetry",
                               size=2000)) as job:
        job.wait_for(lambda evs: of_type(evs, "checkpoint_saved"), "a checkpoint")
        assert run_folder.liveness(str(run_dir)).state == "live"
        # WHEN it is killed with SIGKILL (run.json still says running)
        job.send(signal.SIGKILL)
        job.wait()
    assert json.loads((run_dir / "run.json").read_text())["state"] == "running"
    # THEN scorch-ctl status says dead, and why; a command is refused as for an ended run
    done = scorch_ctl(str(run_dir), "status")
    status = json.loads(done.stdout)
    assert done.returncode == 0 and status["state"] == "dead" and str(job.pid) in status["reason"], done
    done = scorch_ctl(str(run_dir), "checkpoint")
    assert done.returncode == 3 and "is dead" in done.stderr, done
    # AND the dashboard's run list shows its process gone
    [entry] = list_runs(str(tmp_path))
    assert entry.liveness == "dead" and str(job.pid) in entry.dead_reason
    # AND --resume takes the folder (the kernel freed the lock) and runs it on
    epoch = max(e["epoch"] for e in of_type(events_of(run_dir), "checkpoint_saved"))
    with Job(run_dir, ["--resume", str(run_dir), "--headless", "--epochs", str(epoch + 1)], logs=tmp_path) as resumed:
        assert resumed.wait() == 0, resumed.stderr()
    assert run_folder.liveness(str(run_dir)).state == "ended"


@pytest.mark.slow
def test_a_fresh_lease_from_another_host_refuses_and_a_stale_one_is_taken_over(tmp_path):
    # GIVEN a finished run whose folder (a shared file system) another host's run has just taken:
    # its lock is not visible here, its lease is
    run_dir = tmp_path / "run"
    with Job(run_dir, run_args(run_dir, "--epochs", "1", size=1000)) as job:
        assert job.wait() == 0, job.stderr()
    lease = {"host": "node-elsewhere", "pid": 4242, "started": time.time() - 100, "renewed": time.time()}
    (run_dir / "lease.json").write_text(json.dumps(lease))
    info = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps(dict(info, state="running", hosts=["node-elsewhere"], pid=4242)))
    assert run_folder.liveness(str(run_dir)).state == "live"
    # WHEN it is resumed here
    with Job(run_dir, ["--resume", str(run_dir), "--headless", "--epochs", "2"], logs=tmp_path) as second:
        code = second.wait()
    # THEN it is refused naming that host
    assert code == 2 and "pid 4242 on host node-elsewhere" in second.stderr(), second.stderr()
    # AND once that lease is stale (its holder died there), the run is dead and resumes here
    lease["renewed"] = time.time() - run_folder.LEASE_STALE_SECONDS - 5
    (run_dir / "lease.json").write_text(json.dumps(lease))
    assert run_folder.liveness(str(run_dir)).state == "dead"
    with Job(run_dir, ["--resume", str(run_dir), "--headless", "--epochs", "2"], logs=tmp_path) as third:
        assert third.wait() == 0, third.stderr()
    assert json.loads((run_dir / "lease.json").read_text())["host"] == socket.gethostname()


@pytest.mark.slow
def test_a_resume_whose_checkpoint_was_replaced_before_it_took_the_folder_is_refused(tmp_path):
    # GIVEN a finished run, and a --resume of it that has read last.pt (epoch 1) and is held at the start line,
    # just before it takes the run folder (the drill's two resumes released together, the loser a little slow)
    run_dir = tmp_path / "run"
    with Job(run_dir, run_args(run_dir, "--epochs", "1", size=1000), logs=tmp_path) as first:
        assert first.wait() == 0, first.stderr()
    go = tmp_path / "go"
    late = Job(run_dir, ["--resume", str(run_dir), "--headless", "--epochs", "3", "--dataset", START_LINE],
               env=child_env(SCORCH_TEST_GO=str(go)), logs=tmp_path)
    try:
        late.start()
        wait_until(lambda: list(tmp_path.glob("go.ready.*")) or not late.alive(), "the late resume at the start line",
                   timeout=300)
        # WHEN another resume takes the folder first and trains it to the end (epoch 3), then the late one goes on
        with Job(run_dir, ["--resume", str(run_dir), "--headless", "--epochs", "3"], logs=tmp_path) as other:
            assert other.wait() == 0, other.stderr()
        go.write_text("")
        code = late.wait()
    finally:
        late.kill()
    # THEN the late one is refused (exit 2, one line saying the folder changed and who wrote it), writing nothing:
    # it does not train epochs 2 and 3 again from its stale epoch-1 state over the other's
    err = late.stderr()
    assert code == 2 and "changed since this process read" in err and f"pid {other.pid}" in err, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    events = one_writer_log(run_dir)
    assert [e["pid"] for e in of_type(events, "run_started")] == [first.pid, other.pid]
    assert [e["epoch"] for e in of_type(events, "checkpoint_saved") if e["path"].endswith("last.pt")] == [1, 2, 3]
