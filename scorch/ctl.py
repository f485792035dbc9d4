"""scorch-ctl: the scriptable client of a running job. `main()` returns the exit code.

    scorch-ctl RUN_DIR status                      JSON: run.json facts and the live state
    scorch-ctl RUN_DIR checkpoint [--wait]         save checkpoints/last.pt now; training goes on
    scorch-ctl RUN_DIR stop [--after-epoch] [--wait]
    scorch-ctl RUN_DIR pause | resume [--wait]      hold training at a step boundary, or go on
    scorch-ctl RUN_DIR lr x0.5 | lr x2 | lr 1e-4 | lr reset [--wait]
    scorch-ctl RUN_DIR patience 5 | patience off [--wait]
    scorch-ctl RUN_DIR checkpoint-every 10m | off [--wait]
    scorch-ctl keygen DIR                          CURVE keys for --bind beyond 127.0.0.1

Steering (pause ... checkpoint-every) is applied by every rank at the same step, kept in checkpoints, and
shown in the dashboard's header; scorch/steering.py says what each value means.

Exit codes: 0 done (command accepted), 1 command refused, 2 bad usage or not a
run folder, 3 the run has already ended, 4 no answer within --timeout.
No torch here: answering must be quick.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sys
import time
from typing import Any

from scorch import steering
from scorch.errors import ScorchError
from scorch.run_folder import liveness
from scorch.telemetry.client import ClientError, RunClient, read_run_info, read_token
from scorch.telemetry.protocol import Command, EpochEnd, RunEnded, Step, System

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_ENDED, EXIT_NO_ANSWER = 0, 1, 2, 3, 4
TOKEN_ENV = "SCORCH_TOKEN"  # the token for scorch-ctl, where .token cannot be read (another user, a copy of the folder)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scorch-ctl",
        description="Ask a running scorch-train job for its state, a checkpoint, or a stop; or steer it: pause and "
        "resume, scale the learning rate, change early-stopping patience, checkpoint every N minutes.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="steering (every rank applies it at the same step; checkpoints keep it, a pause too):\n"
        "  pause | resume           hold training at a step boundary (heartbeats go on), or go on\n"
        "  lr x0.5 | lr x2          scale every param group's learning rate (on top of the scheduler's)\n"
        "  lr 1e-4 | lr reset       set the first group's rate (the others keep their ratio), or back to the schedule\n"
        "  patience 5 | patience off early stopping after 5 epochs without improvement, or never\n"
        "  checkpoint-every 10m     checkpoints/last.pt every 10 minutes from now on (s, m, h; a bare number is\n"
        "                           minutes); checkpoint-every off ends it\n\n"
        "examples: scorch-ctl runs/20240101-120000-model status; scorch-ctl RUN_DIR stop --after-epoch;\n"
        "  scorch-ctl RUN_DIR lr x0.5 --wait; scorch-ctl keygen ~/.scorch/keys\n\n"
        "exit codes: 0 done, 1 refused, 2 bad usage or not a run folder, 3 the run has ended, 4 no answer",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the run folder (holds run.json and .token)")
    parser.add_argument("action", choices=("status", "checkpoint", "stop", *steering.COMMANDS), metavar="ACTION",
                        help="status, checkpoint, stop, " + ", ".join(steering.COMMANDS))
    parser.add_argument("value", nargs="?", metavar="VALUE", help="lr, patience and checkpoint-every: the value (see below)")
    parser.add_argument("--after-epoch", action="store_true", help="stop: finish the current epoch first")
    parser.add_argument("--token-file", metavar="FILE",
                        help=f"file holding the control token (default: ${TOKEN_ENV}, else RUN_DIR/.token)")
    parser.add_argument("--token", help=f"the token itself: visible to every user in `ps`; prefer --token-file or ${TOKEN_ENV}")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for an answer (default: %(default)s)")
    parser.add_argument("--wait", action="store_true", help="a command: also wait until the run has applied it (a stop: until the run has ended)")
    parser.add_argument("--wait-timeout", type=float, default=600.0,
                        help="with --wait: give up after this many seconds (default: %(default)s)")
    parser.add_argument("--curve-keys", metavar="DIR", default="",
                        help="keys folder from `scorch-ctl keygen`: use its client key (needed when the run admits "
                        "listed clients only)")
    return parser


def keygen_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scorch-ctl keygen",
                                     description="Make CURVE keys for a run that listens beyond 127.0.0.1.")
    parser.add_argument("dir", metavar="DIR", help="folder to create the keys in (made if missing, mode 0700)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["keygen"]:
            return keygen(keygen_parser().parse_args(argv[1:]).dir)
        args = build_parser().parse_args(argv)
        if args.timeout <= 0:
            raise ScorchError(f"--timeout {args.timeout}: must be more than 0 seconds", EXIT_USAGE)
        _check_value(args)
        if args.action == "status":
            return status(args)
        return send(args)
    except ScorchError as exc:
        print(f"scorch-ctl: error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except ClientError as exc:
        print(f"scorch-ctl: error: {exc.message}", file=sys.stderr)
        return EXIT_NO_ANSWER
    except KeyboardInterrupt:
        print("scorch-ctl: interrupted", file=sys.stderr)
        return 130


def _check_value(args: argparse.Namespace) -> None:
    """A value where the action takes one, none elsewhere, and one the run will understand: said before any
    connection (the run checks it again)."""
    if args.action in steering.COMMANDS:
        try:
            steering.check(args.action, args.value)
        except steering.SteerError as exc:
            raise ScorchError(f"{exc.message} (scorch-ctl --help lists the forms)", EXIT_USAGE) from None
    elif args.value is not None:
        raise ScorchError(f"{args.action} takes no value (got {args.value!r})", EXIT_USAGE)
    if args.after_epoch and args.action != "stop":
        raise ScorchError(f"--after-epoch goes with stop only, not {args.action}", EXIT_USAGE)


def console_main() -> None:
    sys.exit(main())


# -- actions ----------------------------------------------------------------------------------------

def _info(run_dir: str) -> dict:
    try:
        return read_run_info(run_dir)
    except ClientError as exc:
        raise ScorchError(exc.message, EXIT_USAGE) from None


def _client(args: argparse.Namespace, token: str | None) -> RunClient:
    keys = _client_keys(args.curve_keys) if args.curve_keys else None
    try:
        return RunClient.from_run_dir(args.run_dir, token=token, timeout=args.timeout, client_keys=keys)
    except ClientError as exc:
        raise ScorchError(exc.message, EXIT_USAGE) from None


def status(args: argparse.Namespace) -> int:
    """Print run.json's facts and, for a live run, what its publisher says now."""
    info = _info(args.run_dir)
    report: dict[str, Any] = {key: info.get(key) for key in ("name", "state", "reason", "pid", "world_size", "hosts",
                                                               "device", "backend", "started", "ended")}
    report["run_dir"] = os.path.abspath(args.run_dir)
    report["telemetry"] = info.get("telemetry")
    report["steering"] = info.get("steering") or steering.Steering().to_dict()
    report["live"] = None
    code = EXIT_OK
    alive = liveness(args.run_dir, info)
    if alive.state == "dead":  # run.json still says running: the truth is that nothing runs it
        report["state"], report["reason"] = "dead", alive.reason
    if alive.lease:
        report["holder"] = {key: alive.lease.get(key) for key in ("host", "pid", "started", "renewed")}
    if alive.state == "live" and info.get("state") == "running" and isinstance(info.get("telemetry"), dict):
        client = _client(args, token=None)
        try:
            snapshot = client.hello()
            report["live"] = _live(snapshot)
            report["state"] = snapshot.state
        except ClientError as exc:
            print(f"scorch-ctl: error: {exc.message}{_dead_hint(info)}", file=sys.stderr)
            code = EXIT_NO_ANSWER
        finally:
            client.close()
    print(json.dumps(report, indent=2, default=str))
    return code


def _live(snapshot: Any) -> dict:
    live: dict[str, Any] = {"state": snapshot.state, "last_seq": snapshot.last_seq, "dropped": snapshot.dropped}
    latest: dict[str, Any] = {}
    for event in snapshot.history:
        for kind in (Step, EpochEnd, System, RunEnded):
            if isinstance(event, kind):
                latest[kind.type] = event
    if "step" in latest:
        step = latest["step"]
        live["progress"] = {"epoch": step.epoch + 1, "epoch_step": step.epoch_step, "steps_in_epoch": step.steps_in_epoch,
                            "step": step.step, "loss": step.loss, "rate": step.rate}
    if "epoch_end" in latest:
        end = latest["epoch_end"]
        live["last_epoch"] = {"epoch": end.epoch + 1, "train_loss": end.train_loss, "metrics": end.metrics, "best": end.best}
    if "system" in latest:  # per-rank liveness from the per-rank channel (scorch/telemetry/ranks.py)
        live["ranks"] = [{key: entry.get(key) for key in ("rank", "host", "pid", "state", "seen", "step", "phase")}
                         for entry in latest["system"].ranks if isinstance(entry, dict)]
        live["silent_ranks"] = [entry["rank"] for entry in live["ranks"] if entry["state"] == "silent"]
    if snapshot.run is not None:
        live["epochs"] = snapshot.run.epochs
    return live


def send(args: argparse.Namespace) -> int:
    """checkpoint/stop: refuse locally what cannot work, send it, and report the ack."""
    info = _info(args.run_dir)
    state = info.get("state")
    alive = liveness(args.run_dir, info)
    if alive.state == "dead":
        raise ScorchError(f"the run in {args.run_dir} is dead: {alive.reason}; there is nothing to {args.action} "
                          f"(continue it with scorch-train --resume {args.run_dir})", EXIT_ENDED)
    if state != "running":
        raise ScorchError(f"the run in {args.run_dir} has ended (state: {state}); there is nothing to {args.action}", EXIT_ENDED)
    token = _token(args)
    if not token:
        raise ScorchError(f"no token: {os.path.join(args.run_dir, '.token')} is missing or not readable by you; "
                          f"run scorch-ctl as the user who started the run, or pass --token-file (or set ${TOKEN_ENV})",
                          EXIT_USAGE)
    client = _client(args, token)
    try:
        if args.wait:
            client.subscribe()
            client.hello()  # the stream is connected before the command goes out
        try:
            ack = client.command(args.action, after_epoch=args.after_epoch, value=args.value, tool="scorch-ctl")
        except ClientError as exc:
            raise ScorchError(exc.message + _dead_hint(_info(args.run_dir)), EXIT_NO_ANSWER) from None
        what = args.action + (f" {args.value}" if args.value is not None else "")
        if ack.status != "accepted":
            raise ScorchError(f"{what} refused: {ack.reason or 'no reason given'}", EXIT_REFUSED)
        print(f"scorch-ctl: {what}{' after this epoch' if args.after_epoch else ''} accepted (id {ack.id})")
        if args.wait:
            return _wait_applied(client, ack.id, args)
        return EXIT_OK
    finally:
        client.close()


def _token(args: argparse.Namespace) -> str | None:
    """The token from --token-file, --token (with a warning: `ps` shows it), $SCORCH_TOKEN, or RUN_DIR/.token."""
    if args.token_file:
        try:
            with open(args.token_file) as fh:
                return fh.read().strip() or None
        except OSError as exc:
            raise ScorchError(f"--token-file {args.token_file}: cannot read it ({exc.strerror})", EXIT_USAGE) from None
    if args.token is not None:
        print(f"scorch-ctl: warning: --token is visible to every user of this machine in `ps`; use --token-file FILE or "
              f"${TOKEN_ENV} instead", file=sys.stderr)
        return args.token
    return os.environ.get(TOKEN_ENV) or read_token(args.run_dir)


def _wait_applied(client: RunClient, command_id: str, args: argparse.Namespace) -> int:
    deadline = time.monotonic() + args.wait_timeout
    applied = False
    while time.monotonic() < deadline:
        event = client.recv(min(1.0, max(0.0, deadline - time.monotonic())))
        if isinstance(event, Command) and event.id == command_id and event.status in ("applied", "refused"):
            print(f"scorch-ctl: {args.action} {event.status} ({event.reason})")
            if event.status == "refused":
                return EXIT_REFUSED
            applied = True
            if args.action != "stop":  # a stop is done when the run has ended
                return EXIT_OK
        elif isinstance(event, RunEnded):
            print(f"scorch-ctl: run ended: {event.status}{' (' + event.reason + ')' if event.reason else ''}")
            return EXIT_OK if applied or args.action == "stop" else EXIT_REFUSED
        elif event is None and _info(args.run_dir).get("state") != "running":
            state = _info(args.run_dir).get("state")
            print(f"scorch-ctl: run ended: {state}")
            return EXIT_OK if args.action == "stop" else EXIT_REFUSED
    raise ScorchError(f"{args.action} was accepted but not applied within {args.wait_timeout:g} s (--wait-timeout)",
                   EXIT_NO_ANSWER)


def _dead_hint(info: dict) -> str:
    """Why a running run may not answer: its process is gone (checked on this host only)."""
    pid, hosts = info.get("pid"), info.get("hosts") or []
    if not isinstance(pid, int) or (hosts and hosts[0] != socket.gethostname()):
        return ""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return f"; its process {pid} is not running (it crashed or was killed)"
    except OSError:
        return ""
    return ""


# -- keys -----------------------------------------------------------------------------------------

def _client_keys(folder: str) -> tuple[bytes, bytes]:
    import zmq.auth

    path = os.path.join(folder, "client.key_secret")
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise ScorchError(f"--curve-keys {folder}: cannot read client.key_secret ({exc}); make keys with "
                       f"`scorch-ctl keygen {folder}`", EXIT_USAGE) from None
    if not secret:
        raise ScorchError(f"--curve-keys {folder}: client.key_secret holds no secret key", EXIT_USAGE)
    return public, secret


def keygen(folder: str) -> int:
    """Make a server key pair and a client key pair in `folder` (secrets mode 0600)."""
    import zmq.auth

    if os.path.exists(os.path.join(folder, "server.key_secret")):
        raise ScorchError(f"{folder} already holds keys (server.key_secret); remove them first or choose another folder",
                       EXIT_USAGE)
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        for name in ("server", "client"):
            _, secret_path = zmq.auth.create_certificates(folder, name)
            os.chmod(secret_path, 0o600)
        allowed = os.path.join(folder, "authorized_clients")  # only listed clients may watch: this one to begin with
        os.makedirs(allowed, exist_ok=True)
        shutil.copy(os.path.join(folder, "client.key"), os.path.join(allowed, "client.key"))
    except OSError as exc:
        raise ScorchError(f"{folder}: cannot write keys there ({exc.strerror}); choose a writable folder", EXIT_USAGE) from None
    print(f"CURVE keys written to {folder}:\n"
          f"  server.key_secret  stays with the job:  scorch-train ... --bind 0.0.0.0:5555 --curve-keys {folder}\n"
          f"  client.key_secret  for a client:        scorch-ctl RUN_DIR status --curve-keys {folder}\n"
          f"Only clients whose public keys are in {os.path.join(folder, 'authorized_clients')}/ may connect (client.key is "
          "listed); add another client's *.key there to admit it. Commands also need the run's token.")
    return EXIT_OK


if __name__ == "__main__":
    console_main()
