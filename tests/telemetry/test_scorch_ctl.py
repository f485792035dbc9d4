"""scorch-ctl against a live synthetic run: status JSON, exit codes, one-line errors, keygen."""

from __future__ import annotations

import json
import os
import socket
import time

import pytest
from helpers.telemetry import FakeRun

from scorch import ctl
from scorch.telemetry.protocol import EpochEnd, RunEnded


@pytest.fixture
def run(tmp_path):
    synthetic = FakeRun(tmp_path / "run")
    synthetic.start(epochs=5)
    yield synthetic
    synthetic.close()


def ctl_run(capsys, *argv: str) -> tuple[int, str, str]:
    code = ctl.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_clean_line(err: str) -> None:
    assert err.startswith("scorch-ctl: error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_status_prints_the_run_and_its_live_state_as_json(run, capsys):
    # GIVEN a run one epoch in, with steps under way
    run.steps(30)
    run.emit(EpochEnd(epoch=0, step=30, train_loss=0.25, metrics={"main": 0.75}))
    run.steps(3)
    last = run.emit(EpochEnd(epoch=1, step=33, train_loss=0.2, metrics={"main": 0.8}))
    run.wait_published(last.seq)
    # WHEN scorch-ctl asks for the status
    code, out, err = ctl_run(capsys, run.folder.path, "status")
    # THEN it prints JSON with run.json's facts and the live state, and exits 0
    assert code == 0 and err == ""
    status = json.loads(out)
    assert status["state"] == "running" and status["pid"] == os.getpid()
    assert status["live"]["last_seq"] == last.seq and status["live"]["epochs"] == 5
    assert status["live"]["last_epoch"] == {"epoch": 2, "train_loss": 0.2, "metrics": {"main": 0.8}, "best": {}}
    assert status["live"]["progress"]["step"] == 3
    assert "token" not in out and run.publisher.token not in out


def test_an_accepted_command_exits_0_and_reaches_the_trainer(run, capsys):
    code, out, err = ctl_run(capsys, run.folder.path, "stop", "--after-epoch")
    assert code == 0 and "stop after this epoch accepted" in out
    [request] = run.control.take()
    assert request.command == "stop" and request.after_epoch and request.source == "request"


def test_a_wrong_token_is_refused_with_exit_1(run, capsys, tmp_path):
    wrong = tmp_path / "wrong-token"
    wrong.write_text("not-it\n")
    code, out, err = ctl_run(capsys, run.folder.path, "checkpoint", "--token-file", str(wrong))
    assert code == ctl.EXIT_REFUSED and "refused: bad signature (wrong token" in err
    assert_one_clean_line(err)
    assert run.control.take() == []


def test_the_token_comes_from_a_file_or_the_environment_and_on_the_command_line_it_warns(run, capsys, monkeypatch):
    token = run.publisher.token
    os.remove(run.folder.token_path)  # not readable here: the token must come from elsewhere
    # WHEN it is in $SCORCH_TOKEN: accepted, nothing said
    monkeypatch.setenv("SCORCH_TOKEN", token)
    code, out, err = ctl_run(capsys, run.folder.path, "checkpoint")
    assert code == 0 and err == ""
    monkeypatch.delenv("SCORCH_TOKEN")
    # WHEN it is given with --token: accepted, with a warning that `ps` shows it
    code, out, err = ctl_run(capsys, run.folder.path, "checkpoint", "--token", token)
    assert code == 0 and "visible to every user" in err and "--token-file" in err
    assert [r.command for r in run.control.take()] == ["checkpoint", "checkpoint"]


def test_no_readable_token_is_exit_2_and_nothing_is_sent(run, capsys):
    os.remove(run.folder.token_path)
    code, out, err = ctl_run(capsys, run.folder.path, "checkpoint")
    assert code == ctl.EXIT_USAGE and ".token" in err and "--token-file" in err and "SCORCH_TOKEN" in err
    assert_one_clean_line(err)
    assert not any(e["type"] == "command" for e in run.logged())


def test_a_finished_run_is_exit_3(run, capsys):
    run.wait_published(run.emit(RunEnded(status="completed")).seq)
    run.folder.write_info(state="completed")
    code, out, err = ctl_run(capsys, run.folder.path, "stop")
    assert code == ctl.EXIT_ENDED and "has ended (state: completed)" in err
    assert_one_clean_line(err)
    # AND status of a finished run still prints what run.json knows
    code, out, err = ctl_run(capsys, run.folder.path, "status")
    assert code == 0 and json.loads(out)["state"] == "completed" and json.loads(out)["live"] is None


def _running_folder(tmp_path, pid: int):
    """run.json of a "running" run of process `pid` whose endpoints nobody listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    folder = tmp_path / "crashed"
    folder.mkdir()
    (folder / ".token").write_text("secret")
    (folder / "run.json").write_text(json.dumps({
        "state": "running", "pid": pid, "hosts": [socket.gethostname()],
        "telemetry": {"publish": f"tcp://127.0.0.1:{port}", "control": f"tcp://127.0.0.1:{port}"}}))
    return folder


def test_nobody_answering_is_exit_4_within_the_timeout(tmp_path, capsys):
    # GIVEN a "running" run whose process is alive (this one) but whose endpoints nobody listens on
    folder = _running_folder(tmp_path, os.getpid())
    # WHEN a command and a status are sent with a short timeout
    start = time.monotonic()
    code, out, err = ctl_run(capsys, str(folder), "checkpoint", "--timeout", "0.5")
    status_code, status_out, status_err = ctl_run(capsys, str(folder), "status", "--timeout", "0.5")
    # THEN each gives up promptly with exit 4 and says why
    assert time.monotonic() - start < 5
    assert code == ctl.EXIT_NO_ANSWER and "no answer" in err
    assert_one_clean_line(err)
    assert status_code == ctl.EXIT_NO_ANSWER and json.loads(status_out)["live"] is None


def test_a_run_whose_process_is_gone_is_dead_not_silent(tmp_path, capsys):
    # GIVEN run.json of a "running" run whose process is gone
    folder = _running_folder(tmp_path, 2**22 + 12345)
    # WHEN a command and a status are sent
    code, out, err = ctl_run(capsys, str(folder), "checkpoint", "--timeout", "0.5")
    status_code, status_out, _ = ctl_run(capsys, str(folder), "status", "--timeout", "0.5")
    # THEN the command is refused at once as for an ended run, and status says dead and why
    assert code == ctl.EXIT_ENDED and "is dead" in err and "is gone" in err
    assert_one_clean_line(err)
    status = json.loads(status_out)
    assert status_code == 0 and status["state"] == "dead" and "is gone" in status["reason"] and status["live"] is None


def test_not_a_run_folder_is_exit_2(tmp_path, capsys):
    code, out, err = ctl_run(capsys, str(tmp_path / "nothing"), "status")
    assert code == ctl.EXIT_USAGE and "run.json not found" in err
    assert_one_clean_line(err)


def test_keygen_makes_private_keys_and_will_not_overwrite(tmp_path, capsys):
    keys = tmp_path / "keys"
    code, out, err = ctl_run(capsys, "keygen", str(keys))
    assert code == 0 and "--curve-keys" in out
    for name in ("server", "client"):
        assert (keys / f"{name}.key").exists()
        assert os.stat(keys / f"{name}.key_secret").st_mode & 0o777 == 0o600
    code, out, err = ctl_run(capsys, "keygen", str(keys))
    assert code == ctl.EXIT_USAGE and "already holds keys" in err
