"""--ssh against a real OpenSSH server on loopback: the tunnel heals, a resumed run is followed.

The 'remote' run is a real publisher (FakeRun) on this machine; scorch-tui
reaches it only through `ssh -N -L ...` to a real sshd started by the test.
"""

from __future__ import annotations

import signal
from pathlib import Path

import psutil
import pytest
import sshd
from helpers.tui import FakeRun, ScriptedRun, read_until
from scorch_tui.cli import ssh_plan
from scorch_tui.sources import DEAD, LIVE, TUNNEL_LOST, CommandAck, ConnectionChanged, LiveSource

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not sshd.available(), reason="needs openssh-server and ssh")]


@pytest.fixture
def server(tmp_path: Path):
    with sshd.Sshd(tmp_path / "sshd") as running:
        yield running


def states(items: list) -> list[ConnectionChanged]:
    return [i for i in items if isinstance(i, ConnectionChanged)]


def reached(state: str):  # type: ignore[no-untyped-def]
    return lambda items: any(c.state == state for c in states(items))


def live_again_after(state: str):  # type: ignore[no-untyped-def]
    def seen(items: list) -> bool:
        shown = [c.state for c in states(items)]
        return state in shown and LIVE in shown[shown.index(state):]
    return seen


def checkpoint_accepted(source: LiveSource) -> CommandAck:
    source.send("checkpoint")
    items = read_until(source, lambda items: any(isinstance(i, CommandAck) for i in items))
    return next(i for i in items if isinstance(i, CommandAck))


def tunnel_process(port: int) -> psutil.Process:
    """Our `ssh -N ... -L` to the test's sshd."""
    for child in psutil.Process().children(recursive=True):
        try:
            line = child.cmdline()
        except psutil.Error:
            continue
        if line and line[0].endswith("ssh") and "-N" in line and f"Port={port}" in line:
            return child
    raise AssertionError("no ssh tunnel process")


def test_a_killed_tunnel_is_reopened_and_blamed_not_the_run(tmp_path: Path, server: sshd.Sshd):
    # GIVEN a run 'on the remote host', watched through a real ssh tunnel
    job = FakeRun(tmp_path / "remote-run")
    for event in ScriptedRun().through(1, 30):
        job.emit(event)
    plan = ssh_plan(server.destination, str(job.folder.path), server.options, None, False)
    source = plan.source
    try:
        assert isinstance(source, LiveSource) and not source.commands_off  # the token came over ssh
        assert source.via == f"ssh {server.destination}"  # the header says what the view goes through
        read_until(source, reached(LIVE))
        # WHEN the tunnel's ssh process dies
        tunnel = tunnel_process(server.port)
        tunnel.send_signal(signal.SIGKILL)
        tunnel.wait(10)
        items = read_until(source, live_again_after(TUNNEL_LOST))
        # THEN the dashboard said the tunnel went, not the run, and never called the run dead
        lost = next(c for c in states(items) if c.state == TUNNEL_LOST)
        assert "SSH tunnel" in lost.detail and "reopening" in lost.detail, lost
        assert DEAD not in [c.state for c in states(items)]
        # AND it reopened the tunnel and is LIVE again, commands included
        assert tunnel_process(server.port).pid != tunnel.pid
        assert checkpoint_accepted(source).status == "accepted"
        assert [r.command for r in job.control.take()] == ["checkpoint"]
    finally:
        source.close()
        plan.close()
        job.close()


def test_a_run_resumed_on_new_ports_with_a_new_token_is_followed_through_ssh(tmp_path: Path, server: sshd.Sshd):
    # GIVEN a remote run watched through ssh
    run_dir = tmp_path / "remote-run"
    job = FakeRun(run_dir)
    for event in ScriptedRun().through(1, 30):
        job.emit(event)
    plan = ssh_plan(server.destination, str(run_dir), server.options, None, False)
    source = plan.source
    try:
        read_until(source, reached(LIVE))
        # WHEN the job's process goes and the run is resumed (new ports, new token in the run folder)
        job.close()
        read_until(source, lambda items: any(c.state != LIVE for c in states(items)))
        old_token = (run_dir / ".token").read_text()
        job = FakeRun(run_dir)  # a resumed job: its log numbers it on
        assert (run_dir / ".token").read_text() != old_token
        # THEN the dashboard follows it, and commands carry the new token
        read_until(source, reached(LIVE))
        assert checkpoint_accepted(source).status == "accepted"
    finally:
        source.close()
        plan.close()
        job.close()
