"""SLURM for real: a one-node cluster (munged, slurmctld, slurmd) started here, an `sbatch -n 2` job running
`srun scorch-train`, preempted with SIGUSR1 (what `--signal=USR1@N` sends before the time limit), which saves a
checkpoint, requeues itself, and resumes by itself from that checkpoint with the same command.

The daemons run as root with a slurm.conf of their own (free ports, state and logs in the test's folder,
proctrack/linuxproc, task/none) and are stopped by pid. Skipped where slurm-wlm or munge is not installed
(scripts/install.sh --test installs them) or the test does not run as root.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from helpers.runs import EXAMPLES, example_args, read_events, scorch_env, train
from test_scale import SLOW_WHILE_FLAGGED, weight_difference

pytestmark = pytest.mark.slow

DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "srun", "scontrol", "squeue")
missing = [d for d in DAEMONS if shutil.which(d) is None and not os.path.exists(f"/usr/sbin/{d}")]
if missing:
    pytest.skip(f"needs slurm-wlm and munge ({', '.join(missing)} not found): bash scripts/install.sh --test",
                allow_module_level=True)
if os.geteuid() != 0:
    pytest.skip("the test's SLURM cluster runs its daemons as root (SlurmUser=root)", allow_module_level=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sbin(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


class SlurmCluster:
    """munged + slurmctld + slurmd on this host, in `folder`; `stop()` ends them by pid."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.node = socket.gethostname().split(".")[0]
        for sub in ("state", "spool", "log", "munge"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        (folder / "munge").chmod(0o700)
        self.conf = folder / "slurm.conf"
        self.env = dict(scorch_env(), SLURM_CONF=str(self.conf), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        self.pid_files = [folder / "slurmd.pid", folder / "slurmctld.pid", folder / "munge" / "munged.pid"]
        munge = folder / "munge"
        subprocess.run([sbin("mungekey"), "--create", "--keyfile", str(munge / "munge.key")], check=True)
        (munge / "munge.key").chmod(0o600)
        self._daemon(sbin("munged"), "--key-file", str(munge / "munge.key"), "--socket", str(munge / "munge.sock"),
                     "--pid-file", str(munge / "munged.pid"), "--log-file", str(munge / "munged.log"),
                     "--seed-file", str(munge / "seed"), "--force")
        self.conf.write_text(textwrap.dedent(f"""\
            ClusterName=scorchtest
            SlurmctldHost={self.node}(127.0.0.1)
            SlurmctldPort={free_port()}
            SlurmdPort={free_port()}
            SlurmUser=root
            SlurmdUser=root
            AuthType=auth/munge
            CredType=cred/munge
            AuthInfo=socket={munge / 'munge.sock'},cred_expire=10
            ProctrackType=proctrack/linuxproc
            TaskPlugin=task/none
            MpiDefault=none
            StateSaveLocation={folder / 'state'}
            SlurmdSpoolDir={folder / 'spool'}
            SlurmctldPidFile={folder / 'slurmctld.pid'}
            SlurmdPidFile={folder / 'slurmd.pid'}
            SlurmctldLogFile={folder / 'log' / 'slurmctld.log'}
            SlurmdLogFile={folder / 'log' / 'slurmd.log'}
            SchedulerType=sched/builtin
            SchedulerParameters=sched_interval=2
            SelectType=select/cons_tres
            SelectTypeParameters=CR_CPU
            AccountingStorageType=accounting_storage/none
            JobAcctGatherType=jobacct_gather/none
            JobCompType=jobcomp/none
            MailProg=/bin/true
            ReturnToService=2
            JobRequeue=1
            KillWait=5
            NodeName={self.node} NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN
            PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
            """))
        self._daemon(sbin("slurmctld"), "-f", str(self.conf))
        self._daemon(sbin("slurmd"), "-f", str(self.conf), "-N", self.node)
        self.wait_for("the node to be idle", lambda: self.run("sinfo", "-h", "-o", "%T").stdout.strip() == "idle")

    def _daemon(self, *cmd: str) -> None:
        """Start a daemon (it forks into the background and writes its pid file)."""
        done = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            self.stop()
            pytest.fail(f"{cmd[0]} did not start: {done.stderr or done.stdout}")

    def run(self, *cmd: str) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=60)

    def wait_for(self, what: str, check, timeout: float = 120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = check()
            if found:
                return found
            time.sleep(0.5)
        logs = "\n".join(p.read_text()[-1500:] for p in (self.folder / "log").glob("*.log"))
        pytest.fail(f"no {what} within {timeout} s; daemon logs:\n{logs}")

    def job_state(self, job: str) -> str:
        return self.run("squeue", "-h", "-j", job, "-o", "%T").stdout.strip()

    def stop(self) -> None:
        """Jobs first (their steps are not slurmd's children), then the daemons."""
        if self.conf.exists() and (self.folder / "slurmctld.pid").exists():
            self.run("scancel", "--full", "--user", "root")
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and self.run("squeue", "-h").stdout.strip():
                time.sleep(0.5)
        for pid_file in self.pid_files:
            try:
                pid = int(pid_file.read_text())
            except (OSError, ValueError):
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def cluster(tmp_path):
    made = SlurmCluster(tmp_path / "slurm")
    yield made
    made.stop()


DATA = '{"size": 2560}'  # 2048 to train: 64 steps a rank of 16, 64 of 32 for one process


def test_a_preempted_slurm_job_requeues_itself_and_resumes_exactly(cluster, tmp_path):
    # GIVEN slow data (while the flag exists) and a batch script as a user writes it: 2 tasks, srun scorch-train,
    # USR1 before the time limit
    flag = tmp_path / "slow"
    flag.touch()
    dataset = tmp_path / "dataset.py"
    dataset.write_text(SLOW_WHILE_FLAGGED.format(examples=str(EXAMPLES), flag=str(flag)))
    run_dir = tmp_path / "run"

    def args(folder: Path, *extra: str) -> list[str]:
        argv = example_args("two_inputs", folder, "--dataset-args", DATA, "--seed", "1", "--no-shuffle", "--epochs", "2",
                            "--no-tensorboard", *extra)
        argv[argv.index("--dataset") + 1] = str(dataset)
        return argv

    script = tmp_path / "job.sh"
    script.write_text("#!/bin/bash\n#SBATCH --signal=USR1@90\n"
                      f"srun {subprocess.list2cmdline([sys.executable, '-m', 'scorch.cli', *args(run_dir, '--batch-size', '16')])}\n")
    out = tmp_path / "job-%j.out"
    submitted = cluster.run("sbatch", "--parsable", "-n", "2", "-o", str(out), "-D", str(tmp_path), str(script))
    assert submitted.returncode == 0, submitted.stderr
    job = submitted.stdout.strip().split(";")[0]

    def events() -> list[dict]:
        return read_events(run_dir) if (run_dir / "events.jsonl").exists() else []

    def log() -> str:
        path = tmp_path / f"job-{job}.out"
        return path.read_text()[-3000:] if path.exists() else "(no output yet)"

    # WHEN it trains, on 2 ranks with SLURM's rank variables, and SLURM sends the job's tasks SIGUSR1
    cluster.wait_for("step events", lambda: any(e["type"] == "step" for e in events()), timeout=180)
    started = next(e for e in events() if e["type"] == "run_started")
    assert started["world_size"] == 2 and started["backend"] == "torch", log()
    signalled = cluster.run("scancel", "--signal=USR1", job)  # what --signal=USR1@90 does 90 s before the limit
    assert signalled.returncode == 0, signalled.stderr
    # THEN it checkpoints, ends as preempted, and is requeued
    cluster.wait_for("the preemption", lambda: any(e["type"] == "run_ended" for e in events()), timeout=120)
    first_end = next(e for e in events() if e["type"] == "run_ended")
    assert first_end["status"] == "preempted", log()
    saved = [e for e in events() if e["type"] == "checkpoint_saved"]
    assert [e["reason"] for e in saved] == ["signal"]
    flag.unlink()  # the requeued run goes at full speed
    # AND the requeued job (same script, same flags) resumes from that checkpoint and completes
    cluster.wait_for("the requeued run to end", lambda: [e["type"] for e in events()].count("run_ended") == 2, timeout=300)
    cluster.wait_for("the job to leave the queue", lambda: cluster.job_state(job) == "", timeout=120)
    history = events()
    starts = [e for e in history if e["type"] == "run_started"]
    assert len(starts) == 2 and starts[1]["resumed_from"] == saved[0]["path"], log()
    assert history[-1]["type"] == "run_ended" and history[-1]["status"] == "completed", log()
    assert [e["seq"] for e in history] == list(range(1, len(history) + 1))
    info = json.loads((run_dir / "run.json").read_text())
    assert info["state"] == "completed"
    # AND the weights are those of an uninterrupted run (one process, twice the batch)
    assert train(args(tmp_path / "reference", "--batch-size", "32", "--no-telemetry")) == 0
    assert weight_difference(run_dir, tmp_path / "reference") < 1e-4
