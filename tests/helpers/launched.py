"""Jobs under a launcher (mpirun, torchrun): the launcher and its ranks in a session of their own, a rank's
process found by the variable its launcher gives it, and every process of the job ended together."""

from __future__ import annotations

import os
import signal
import subprocess

import psutil
import pytest

TORCHRUN_RANK = "RANK"  # what torchrun (and scorch's torch.distributed engine) sets in each worker
MPIRUN_RANK = "OMPI_COMM_WORLD_RANK"  # what OpenMPI's mpirun sets


def rank_process(launcher_pid: int, rank: int, variable: str) -> psutil.Process:
    """The scorch-train process of `rank` among the launcher's descendants: the one whose `variable` says so."""
    for child in psutil.Process(launcher_pid).children(recursive=True):
        try:
            if child.environ().get(variable) == str(rank) and "scorch.cli" in child.cmdline():
                return child
        except psutil.Error:
            continue
    raise AssertionError(f"no rank {rank} among the job's processes")


class LaunchedJob:
    """A launcher command, its output (stdout and stderr together) kept for `wait`."""

    def __init__(self, cmd: list[str], rank_variable: str, env: dict, cwd: str | None = None,
                 timeout: float = 150) -> None:
        self.rank_variable = rank_variable
        self.timeout = timeout
        self.proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)

    def rank(self, rank: int) -> psutil.Process:
        return rank_process(self.proc.pid, rank, self.rank_variable)

    def wait(self, timeout: float | None = None) -> tuple[int, str]:
        timeout = self.timeout if timeout is None else timeout
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            out, _ = self.proc.communicate()
            pytest.fail(f"job still running after {timeout} s:\n{out[-3000:]}")
        return self.proc.returncode, out

    def kill(self) -> None:
        """The launcher and every rank (torchrun may start its workers in sessions of their own)."""
        try:
            ranks = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.Error:
            ranks = []
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for rank in ranks:
            try:
                rank.kill()
            except psutil.Error:
                pass
        if self.proc.returncode is None:
            self.proc.communicate()
