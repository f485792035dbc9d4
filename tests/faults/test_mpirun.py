"""The drill under `mpirun -np 2` (Horovod): a preemption signal to one rank ends every rank `preempted`
with one checkpoint; a rank that stalls is named by the watchdog and the job ends non-zero."""

from __future__ import annotations

import shutil
import signal
import textwrap
import time

import psutil
import pytest
from helpers.faults import EXAMPLES, Job, assert_run_folder_whole, child_env, of_type, run_args, wait_until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("mpirun") is None, reason="needs mpirun (Open MPI) and Horovod: scripts/install-horovod.sh"),
]
MPIRUN = ["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", "2", "-x", "OMP_NUM_THREADS", "-x", "PYTHONPATH"]
JOB_TIMEOUT = 240.0


def rank_process(job: Job, rank: int) -> psutil.Process:
    """The process of `rank` among mpirun's children (found by Open MPI's rank variable)."""
    def find():
        for child in psutil.Process(job.pid).children(recursive=True):
            try:
                if "scorch.cli" in " ".join(child.cmdline()) and child.environ().get("OMPI_COMM_WORLD_RANK") == str(rank):
                    return child
            except psutil.Error:
                continue
        return None

    return wait_until(find, f"rank {rank}'s process")


def test_sigterm_to_one_rank_preempts_every_rank_with_one_checkpoint(tmp_path):
    # GIVEN a two-rank job under mpirun
    run_dir = tmp_path / "run"
    with Job(run_dir, run_args(run_dir, "--epochs", "1000", size=20_000), prefix=MPIRUN) as job:
        job.wait_step(20, timeout=JOB_TIMEOUT)
        # WHEN the cluster sends SIGTERM to rank 1 only
        rank_process(job, 1).send_signal(signal.SIGTERM)
        code = job.wait(timeout=JOB_TIMEOUT)
    # THEN every rank ends cleanly (mpirun exits 0), the run ended "preempted" with one signal checkpoint
    assert code == 0, job.stderr()
    events = job.events()
    ended = of_type(events, "run_ended")
    assert [e["status"] for e in ended] == ["preempted"], ended
    saved = of_type(events, "checkpoint_saved", reason="signal")
    assert len(saved) == 1 and saved[0]["step"] == ended[0]["step"]
    assert assert_run_folder_whole(run_dir)["last.pt"]["step"] == ended[0]["step"]


STALLING_MODEL = textwrap.dedent('''
    import os
    import sys
    import time

    sys.path.insert(0, {examples!r})
    from two_inputs.model import Network as TwoInputs, Socket  # noqa: F401


    class Network(TwoInputs):
        """Rank 1 stops making progress at its 30th forward pass (a hung file system, a dead lock)."""

        calls = 0

        def forward(self, inputs):
            Network.calls += 1
            if self.training and Network.calls == 30 and os.environ.get("OMPI_COMM_WORLD_RANK") == "1":
                open({marker!r}, "w").close()
                time.sleep(10**6)
            return super().forward(inputs)
''')


def test_a_stalled_rank_is_named_and_the_job_ends_non_zero(tmp_path):
    # GIVEN a two-rank job with --stall-timeout 5 whose rank 1 sleeps forever in the middle of an epoch
    run_dir, marker, timeout = tmp_path / "run", tmp_path / "rank-1-stalled", 5
    model = tmp_path / "stalling_model.py"
    model.write_text(STALLING_MODEL.format(examples=str(EXAMPLES), marker=str(marker)))
    args = run_args(run_dir, "--epochs", "1000", "--stall-timeout", str(timeout), size=20_000, model=model)
    with Job(run_dir, args, prefix=MPIRUN, env=child_env()) as job:
        wait_until(marker.exists, "rank 1 to stall", timeout=JOB_TIMEOUT)
        stalled = time.monotonic()
        # WHEN the watchdog's time is up
        code = job.wait(timeout=JOB_TIMEOUT)
        took = time.monotonic() - stalled
    # THEN the job ends non-zero soon after the timeout, naming the stalled rank and where it is stuck
    err = job.stderr()
    assert code != 0, err
    assert took < timeout + 15, f"ended {took:.0f} s after the stall with --stall-timeout {timeout}"
    assert "rank 1 made no progress" in err and "stalling_model.py" in err, err
    ended = of_type(job.events(), "run_ended")
    # AND the event log says the run failed for want of progress (rank 0 writes it: it may only know it was waiting)
    assert ended and ended[-1]["status"] == "failed" and f"(--stall-timeout {timeout})" in ended[-1]["reason"], ended
