"""scorch-tui's command line: fast help, clear refusals, the right source for each target, and --ssh."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.tui import FakeRun, ScriptedRun
from scorch_tui import ssh as ssh_module
from scorch_tui.cli import Plan, endpoint_source, run_dir_source, ssh_plan, tui_main
from scorch_tui.sources import DEAD, FOLLOWING, LIVE, CommandAck, ConnectionChanged, LiveSource, ReplaySource, SourceError
from scorch_tui.ssh import Ssh, parse_endpoint, remote_path

from scorch.errors import ScorchError
from scorch.telemetry.protocol import RunStarted

ROOT = Path(__file__).resolve().parents[2]
FAKE_SSH = Path(__file__).with_name("fake_ssh.py")


def test_help_prints_the_usage_with_the_keys_and_the_ways_in():
    # GIVEN a fresh interpreter (what a user's shell starts)
    done = subprocess.run([sys.executable, "-m", "scorch_tui", "--help"], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)
    # THEN it prints the usage with the keys and the ways in. It is fast because that path imports neither
    # Textual nor torch (the next test); a wall-clock bound here would fail on a loaded machine, not on a slow --help.
    assert done.returncode == 0
    assert "RUN_DIR | RUNS_FOLDER | tcp://HOST:PORT" in done.stdout and "--ssh" in done.stdout
    assert "c checkpoint" in done.stdout and "q quit (the job goes on)" in done.stdout


def test_the_command_line_path_leaves_textual_and_torch_unimported():
    code = ("import sys; from scorch_tui.cli import build_parser; build_parser().parse_args(['runs']); "
            "print(sorted(m for m in ('textual', 'torch', 'zmq') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert done.stdout.strip() == "[]"


def test_the_dashboard_never_imports_torch(finished_run: Path):
    # GIVEN a fresh interpreter that imports every dashboard module and replays a real run in the app
    code = f"""
import asyncio, pkgutil, sys, importlib
import scorch_tui, scorch_tui.widgets, scorch_tui.screens
for pkg in (scorch_tui, scorch_tui.widgets, scorch_tui.screens):
    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name != "__main__":
            importlib.import_module(pkg.__name__ + "." + info.name)
from scorch_tui.app import ScorchApp
from scorch_tui.sources import ReplaySource
async def main():
    app = ScorchApp(ReplaySource({str(finished_run)!r}))
    async with app.run_test() as pilot:
        await pilot.pause(0.5)
asyncio.run(main())
print("torch" in sys.modules, "textual" in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    # THEN torch was never imported (textual was: the app really ran)
    assert done.stdout.split() == ["False", "True"]


@pytest.mark.parametrize(("argv", "message"), [
    (["{tmp}/missing"], "missing: no such folder; give a run folder, a folder of runs, or tcp://HOST:PORT (or --wait"),
    (["{tmp}/file.txt"], "file.txt is a file; give a run folder"),
    (["{tmp}/empty"], "empty holds no scorch runs (a run folder holds run.json)"),
    (["tcp://nowhere"], "tcp://nowhere: not a tcp://HOST:PORT endpoint"),
    (["tcp://127.0.0.1:{port}"], "cannot reach a run at tcp://127.0.0.1:"),
    (["--token-file", "{tmp}/no-token", "{tmp}/empty"], "--token-file {tmp}/no-token: cannot read it"),
    (["--ssh", "me@host"], "--ssh needs the run folder on that host"),
    (["--replay", "tcp://127.0.0.1:5555"], "--replay reads a run folder"),
])
def test_bad_input_gets_one_clear_line_and_a_non_zero_exit(tmp_path, capsys, argv, message):
    # GIVEN a file, an empty folder, a port nothing listens on
    (tmp_path / "file.txt").write_text("hello")
    (tmp_path / "empty").mkdir()
    port = ssh_module.free_port()
    argv = [arg.format(tmp=tmp_path, port=port) for arg in argv]
    # WHEN scorch-tui is pointed at them
    code = tui_main(argv)
    # THEN it exits 2 with one line that says what is wrong and how to fix it, and no traceback
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("scorch-tui: error: ")
    assert message.format(tmp=tmp_path) in err
    assert "Traceback" not in err


def test_the_default_is_the_runs_folder_here(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert tui_main([]) == 2
    assert "./runs (the default): no such folder" in capsys.readouterr().err


# -- which source a run folder gets ----------------------------------------------------------------


def make_run(path: Path, **info) -> Path:
    path.mkdir(parents=True)
    run = ScriptedRun()
    (path / "events.jsonl").write_text("".join(e.to_json() + "\n" for e in run.through(1)))
    (path / "run.json").write_text(json.dumps({"name": path.name, "hosts": [os.uname().nodename], **info}))
    return path


def first_state(source) -> str:
    items = source.read(0.0)
    source.close()
    return next(item.state for item in items if isinstance(item, ConnectionChanged))


def test_a_finished_run_is_replayed(tmp_path):
    source = run_dir_source(str(make_run(tmp_path / "r", state="completed", pid=1)), None, False, None)
    assert isinstance(source, ReplaySource) and not source.follow


def test_a_running_run_whose_process_is_gone_is_replayed_and_says_so(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    source = run_dir_source(str(make_run(tmp_path / "r", state="running", pid=dead.pid)), None, False, None)
    assert isinstance(source, ReplaySource)
    assert first_state(source) == DEAD


def test_a_running_run_without_telemetry_is_followed(tmp_path):
    source = run_dir_source(str(make_run(tmp_path / "r", state="running", pid=os.getpid())), None, False, None)
    assert isinstance(source, ReplaySource) and first_state(source) == FOLLOWING


def test_a_running_run_with_telemetry_is_watched_live_unless_replay_is_asked(tmp_path):
    run = make_run(tmp_path / "r", state="running", pid=os.getpid(),
                   telemetry={"publish": "tcp://127.0.0.1:1", "control": "tcp://127.0.0.1:2"})
    source = run_dir_source(str(run), None, False, None)
    assert isinstance(source, LiveSource)
    source.close()
    assert isinstance(run_dir_source(str(run), None, True, None), ReplaySource)


def test_an_endpoint_is_the_bind_address_stream_on_port_control_on_the_next(tmp_path):
    # GIVEN a job started with --bind 127.0.0.1:PORT (stream on PORT, control on PORT+1)
    for _ in range(20):
        port = ssh_module.free_port()
        try:
            job = FakeRun(tmp_path / f"run-{port}", bind=f"127.0.0.1:{port}")
            break
        except ScorchError:  # PORT+1 was taken: try another pair
            continue
    try:
        for event in ScriptedRun().through(1):
            job.emit(event)
        # WHEN scorch-tui is given tcp://127.0.0.1:PORT
        source = endpoint_source(f"tcp://127.0.0.1:{port}", None, None)
        # THEN it reaches the run (read-only without a token) and sees it live
        assert source.commands_off.startswith("read-only: no token")
        items = []
        deadline = time.monotonic() + 10
        while not any(isinstance(i, RunStarted) for i in items) and time.monotonic() < deadline:
            items += source.read(0.1)
        source.close()
        assert any(isinstance(i, ConnectionChanged) and i.state == LIVE for i in items)
        assert any(isinstance(i, RunStarted) for i in items)
    finally:
        job.close()


# -- ssh -------------------------------------------------------------------------------------------


def test_ssh_commands_are_built_for_the_remote_shell():
    ssh = Ssh("me@gpu-node", ["Port=2222"])
    assert ssh.cat_command("~/proj/runs/my run/run.json") == [
        "ssh", "-o", "Port=2222", "me@gpu-node", "cat", "--", "~/'proj/runs/my run/run.json'"]
    assert ssh.tunnel_command([(50001, "127.0.0.1", 41234), (50002, "127.0.0.1", 41235)]) == [
        "ssh", "-N", "-o", "ExitOnForwardFailure=yes", "-o", "ServerAliveInterval=15", "-o", "Port=2222",
        "-L", "127.0.0.1:50001:127.0.0.1:41234", "-L", "127.0.0.1:50002:127.0.0.1:41235", "me@gpu-node"]
    assert remote_path("/runs/a;rm -rf x") == "'/runs/a;rm -rf x'"
    assert parse_endpoint("tcp://127.0.0.1:5555") == ("127.0.0.1", 5555)
    with pytest.raises(SourceError):
        Ssh("-oProxyCommand=evil")


@pytest.fixture
def fake_ssh(monkeypatch):
    """ssh replaced by tests/tui/fake_ssh.py: the 'remote host' is this machine."""
    class FakeSsh(Ssh):
        def __init__(self, destination, options=(), program=""):
            super().__init__(destination, options, program=[sys.executable, str(FAKE_SSH)])

    monkeypatch.setattr(ssh_module, "Ssh", FakeSsh)


@pytest.mark.slow
def test_ssh_tunnels_to_a_live_run_and_commands_go_through(tmp_path, fake_ssh):
    # GIVEN a job running 'on the remote host' with its ports on that host's loopback
    job = FakeRun(tmp_path / "remote-run")
    for event in ScriptedRun().through(1, 30):
        job.emit(event)
    plan = Plan()
    try:
        # WHEN scorch-tui --ssh me@host REMOTE_RUN_DIR plans the connection
        plan = ssh_plan("me@host", str(tmp_path / "remote-run"), [], None, False)
        source = plan.source
        assert isinstance(source, LiveSource) and not source.commands_off  # the token came over ssh
        items = []
        deadline = time.monotonic() + 20
        while not any(isinstance(i, ConnectionChanged) and i.state == LIVE for i in items) and time.monotonic() < deadline:
            items += source.read(0.1)
        # THEN the run is live through the tunnel, and a command reaches the job
        assert any(isinstance(i, ConnectionChanged) and i.state == LIVE for i in items)
        source.send("checkpoint")
        acks = []
        while not acks and time.monotonic() < deadline:
            acks = [i for i in source.read(0.1) if isinstance(i, CommandAck)]
        assert acks and acks[0].status == "accepted"
        assert [r.command for r in job.control.take()] == ["checkpoint"]
        source.close()
    finally:
        plan.close()  # the tunnel goes; the job is untouched
        job.close()


def test_ssh_copies_a_finished_run_and_replays_it(tmp_path, fake_ssh):
    remote = make_run(tmp_path / "remote-run", state="completed", pid=1)
    plan = ssh_plan("me@host", str(remote), [], None, False)
    try:
        assert isinstance(plan.source, ReplaySource) and plan.source.label == f"me@host:{remote}"
        copied = Path(plan.source.run_dir)
        assert (copied / "events.jsonl").read_bytes() == (remote / "events.jsonl").read_bytes()
    finally:
        plan.close()
    assert not copied.exists()


def test_ssh_to_a_folder_that_is_not_a_run_says_so(tmp_path, fake_ssh):
    with pytest.raises(SourceError, match="cannot read .*run.json"):
        ssh_plan("me@host", str(tmp_path), [], None, False)
