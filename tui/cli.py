"""scorch-tui: open the dashboard on a run, a folder of runs, or an endpoint. `main()` returns the exit code.

    scorch-tui                        the runs in ./runs (a picker)
    scorch-tui runs/RUN               one run: live if it is running, else a replay of its event log
    scorch-tui tcp://HOST:PORT        a run started with --bind HOST:PORT (stream on PORT, control on PORT+1)
    scorch-tui --ssh user@host RUN    a run on another machine, through an SSH tunnel

This module imports only argparse until the arguments are parsed, so --help is instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scorch_tui.runs import RunEntry
    from scorch_tui.sources import Source

EXIT_USAGE = 2
DEFAULT_TARGET = "runs"

EPILOG = """\
keys: c checkpoint · s stop (y to confirm) · q quit (the job goes on) · ? help · ctrl+p palette

examples:
  scorch-tui                                   pick a run from ./runs
  scorch-tui runs/20250101-120000-model        watch one run (live or finished)
  scorch-tui --ssh me@gpu-node ~/proj/runs/X   watch a run on another machine (SSH tunnel)
  scorch-tui tcp://127.0.0.1:5555              a run started with --bind 127.0.0.1:5555
  scorch-tui --wait runs/next                  wait for a run that has not started yet, then watch it
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scorch-tui",
        description="Watch scorch-train runs in the terminal and steer them: checkpoint now, stop. "
        "Live over ZeroMQ (also through SSH), or replayed from a finished run's event log.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("target", nargs="?", default=None, metavar="RUN_DIR | RUNS_FOLDER | tcp://HOST:PORT",
                        help=f"what to open (default: ./{DEFAULT_TARGET}; with --ssh: the run folder on that host)")
    parser.add_argument("--token-file", metavar="FILE",
                        help="the run's control token (default: RUN_DIR/.token); without one the dashboard is read-only")
    parser.add_argument("--ssh", metavar="USER@HOST",
                        help="the run is on this machine: read its run.json over ssh and tunnel its ports")
    parser.add_argument("--ssh-option", metavar="OPTION", action="append", default=[],
                        help="extra ssh -o option, e.g. --ssh-option Port=2222 (repeatable)")
    parser.add_argument("--wait", action="store_true",
                        help="RUN_DIR may not exist yet: wait for the run to start there, then watch it")
    parser.add_argument("--replay", action="store_true",
                        help="replay the event log even if the run is still going (no commands)")
    parser.add_argument("--curve-keys", metavar="DIR", default="",
                        help="keys folder from `scorch-ctl keygen` for a run bound beyond 127.0.0.1 with CURVE")
    parser.add_argument("--mouse", action="store_true",
                        help="let the dashboard take the mouse (off by default, so text can be selected over SSH)")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks for errors")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    return parser


@dataclass
class Plan:
    """What to show, and what to undo afterwards (an SSH tunnel, a temporary copy)."""

    source: Source | None = None
    runs_folder: str | None = None
    opener: Callable[[RunEntry], Source] | None = None
    cleanup: list[Callable[[], Any]] = field(default_factory=list)

    def close(self) -> None:
        for undo in reversed(self.cleanup):
            undo()
        self.cleanup.clear()


def tui_main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.version:
        from scorch import __version__

        print(f"scorch-tui {__version__}")
        return 0
    from scorch_tui.sources import SourceError

    plan = None
    try:
        plan = make_plan(args)
        from scorch_tui.app import ScorchApp

        app = ScorchApp(plan.source, runs_folder=plan.runs_folder, opener=plan.opener)
        app.run(mouse=args.mouse)  # mouse capture off unless asked: a terminal's own selection works over SSH
        return 0
    except SourceError as exc:
        print(f"scorch-tui: error: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("scorch-tui: interrupted", file=sys.stderr)
        return 130
    except Exception:
        if args.debug:
            raise
        import traceback

        traceback.print_exc()
        print("scorch-tui: internal error (a scorch bug); please report it with the traceback above", file=sys.stderr)
        return 1
    finally:
        if plan is not None:
            plan.close()


def main() -> None:
    sys.exit(tui_main())


# -- from arguments to a source -------------------------------------------------------------------


def make_plan(args: argparse.Namespace) -> Plan:
    from scorch_tui.sources import SourceError

    token = read_token_file(args.token_file) if args.token_file else None
    keys = CurveKeys.load(args.curve_keys) if args.curve_keys else None
    if args.ssh:
        if args.wait:
            raise SourceError("--wait watches a local run folder; with --ssh, open the dashboard once the run has started")
        if not args.target:
            raise SourceError("--ssh needs the run folder on that host: scorch-tui --ssh USER@HOST RUN_DIR")
        return ssh_plan(args.ssh, args.target, args.ssh_option, token, args.replay)
    target = args.target or DEFAULT_TARGET
    if args.wait:
        if not args.target or target.startswith("tcp://"):
            raise SourceError("--wait needs the run folder the job will write: scorch-tui --wait RUN_DIR")
        from scorch_tui.sources import WaitingSource

        return Plan(source=WaitingSource(target, lambda: run_dir_source(target, token, args.replay, keys)))
    if target.startswith("tcp://"):
        if args.replay:
            raise SourceError("--replay reads a run folder; an endpoint has none: give the run folder instead")
        return Plan(source=endpoint_source(target, token, keys))
    return local_plan(target, token, args.replay, keys)


def read_token_file(path: str) -> str:
    from scorch_tui.sources import SourceError

    try:
        with open(path) as fh:
            token = fh.read().strip()
    except OSError as exc:
        raise SourceError(f"--token-file {path}: cannot read it ({exc.strerror})") from None
    if not token:
        raise SourceError(f"--token-file {path} is empty; copy the run's RUN_DIR/.token")
    return token


@dataclass
class CurveKeys:
    """From `scorch-ctl keygen DIR`: the server's public key and, when present, our client pair."""

    server: bytes | None
    client: tuple[bytes, bytes] | None

    @classmethod
    def load(cls, folder: str) -> CurveKeys:
        import os

        import zmq.auth
        from scorch_tui.sources import SourceError

        server = client = None
        try:
            if os.path.exists(os.path.join(folder, "server.key")):
                server, _ = zmq.auth.load_certificate(os.path.join(folder, "server.key"))
            if os.path.exists(os.path.join(folder, "client.key_secret")):
                public, secret = zmq.auth.load_certificate(os.path.join(folder, "client.key_secret"))
                client = (public, secret) if secret else None
        except (OSError, ValueError) as exc:
            raise SourceError(f"--curve-keys {folder}: cannot read the keys ({exc})") from None
        if server is None and client is None:
            raise SourceError(f"--curve-keys {folder}: no server.key or client.key_secret there; "
                              f"make them with `scorch-ctl keygen {folder}`")
        return cls(server, client)


def local_plan(target: str, token: str | None, replay: bool, keys: CurveKeys | None) -> Plan:
    import os

    from scorch_tui.runs import is_run_dir, list_runs
    from scorch_tui.sources import SourceError

    if not os.path.exists(target):
        hint = " (the default)" if target == DEFAULT_TARGET else ""
        shown = f"./{target}" if target == DEFAULT_TARGET else target
        raise SourceError(f"{shown}{hint}: no such folder; give a run folder, a folder of runs, or tcp://HOST:PORT "
                          f"(or --wait {target} to wait for a run to start there)")
    if not os.path.isdir(target):
        raise SourceError(f"{target} is a file; give a run folder (it holds run.json), a folder of runs, or tcp://HOST:PORT")
    if is_run_dir(target):
        return Plan(source=run_dir_source(target, token, replay, keys))
    if not list_runs(target):
        raise SourceError(f"{target} holds no scorch runs (a run folder holds run.json); start one with "
                          f"scorch-train ... --run-dir {os.path.join(target, 'NAME')}")
    return Plan(runs_folder=target, opener=lambda entry: run_dir_source(entry.path, token, replay, keys))


def run_dir_source(path: str, token: str | None, replay: bool, keys: CurveKeys | None) -> Source:
    """Live when the run is running and publishing; a replay of its event log otherwise."""
    import os

    from scorch_tui.sources import LiveSource, ReplaySource, read_json

    from scorch.run_folder import why_dead

    info = read_json(os.path.join(path, "run.json"))
    if replay or info.get("state", "running") != "running":
        return ReplaySource(path)
    dead = why_dead(info, path)
    if dead:  # the same words the live view and the picker use
        return ReplaySource(path, dead=dead)
    config = info.get("config") if isinstance(info.get("config"), dict) else {}
    if not isinstance(info.get("telemetry"), dict) and not config.get("telemetry", False):
        return ReplaySource(path, follow=True)  # --no-telemetry: its event log is all there is
    # Live; a run still starting (config written, endpoints not yet) is waited for by the live source.
    return LiveSource.from_run_dir(path, token=token, client_keys=keys.client if keys else None)


def endpoint_source(endpoint: str, token: str | None, keys: CurveKeys | None) -> Source:
    """tcp://HOST:PORT as given to --bind: the stream on PORT, control on PORT+1. Checked before the screen opens."""
    from scorch_tui.sources import CLIENT_TIMEOUT, LiveSource, SourceError
    from scorch_tui.ssh import parse_endpoint

    from scorch.telemetry.client import ClientError, RunClient

    host, port = parse_endpoint(endpoint)
    if port >= 65535:
        raise SourceError(f"{endpoint}: the control port is PORT+1, so PORT must be below 65535")
    shown = f"[{host}]" if ":" in host else host
    publish, control = f"tcp://{shown}:{port}", f"tcp://{shown}:{port + 1}"
    options: dict[str, Any] = {}
    if keys is not None:
        options = {"server_key": keys.server, "client_keys": keys.client}
    probe = RunClient(control, publish, timeout=CLIENT_TIMEOUT, **options)
    try:
        probe.hello()
    except ClientError as exc:
        raise SourceError(f"cannot reach a run at {endpoint}: {exc.message}") from None
    finally:
        probe.close()
    return LiveSource.from_endpoints(control, publish, token, label=endpoint, **options)


def ssh_plan(destination: str, run_dir: str, options: list[str], token: str | None, replay: bool) -> Plan:
    """Read the remote run.json; tunnel a running run's ports, or copy a finished run's log and replay it."""
    import json
    import shutil
    import tempfile

    from scorch_tui.sources import DEAD_AFTER, LiveSource, ReplaySource, SourceError
    from scorch_tui.ssh import Ssh, SshRun, local_copy

    ssh = Ssh(destination, options)
    plan = Plan()
    try:
        try:
            info = json.loads(ssh.cat(f"{run_dir.rstrip('/')}/run.json"))
        except ValueError:
            raise SourceError(f"--ssh {destination}: {run_dir}/run.json is not JSON; is {run_dir} a scorch run folder?") from None
        telemetry = info.get("telemetry") if isinstance(info, dict) else None
        label = f"{destination}:{run_dir}"
        if replay or info.get("state", "running") != "running" or not isinstance(telemetry, dict):
            folder = tempfile.mkdtemp(prefix="scorch-tui-")
            plan.cleanup.append(lambda: shutil.rmtree(folder, ignore_errors=True))
            local_copy(ssh, run_dir, folder)
            source = ReplaySource(folder)
            source.label, source.via = label, f"ssh {destination}"
            plan.source = source
            return plan
        remote = SshRun(ssh, run_dir, token, info)
        remote.open()  # the tunnel opens (or the error is said) before the screen does
        plan.cleanup.append(ssh.close)
        plan.source = LiveSource(
            remote.connect, label, "" if remote.token else
            f"read-only: no token (cannot read {run_dir}/.token on {destination}; pass --token-file)",
            link=remote.link_lost, dead_after=DEAD_AFTER)
        plan.source.via = f"ssh {destination}"
        return plan
    except BaseException:
        plan.close()
        ssh.close()
        raise


if __name__ == "__main__":
    main()
