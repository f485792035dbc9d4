"""Watch a run on another machine through the system's ssh: read its run.json, tunnel its two ports.

    ssh USER@HOST cat -- RUN_DIR/run.json                      where the run listens (remote loopback ports)
    ssh USER@HOST cat -- RUN_DIR/.token                        the control secret (else read-only)
    ssh -N -o ExitOnForwardFailure=yes -L L1:127.0.0.1:P1 -L L2:127.0.0.1:P2 USER@HOST

then the dashboard talks to tcp://127.0.0.1:L1 (stream) and :L2 (control) as
if the run were local. Authentication is ssh's business (keys, agent,
~/.ssh/config with ProxyJump, ControlMaster...): nothing here sees a password.
A finished run is copied (run.json and the event log) and replayed locally.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from scorch_tui.sources import CLIENT_TIMEOUT, SourceError

if TYPE_CHECKING:
    from scorch.telemetry.client import RunClient

from scorch import events_log

CAT_TIMEOUT = 60.0  # seconds for one remote `cat` (the event log of a long run can be large)
TUNNEL_TIMEOUT = 20.0  # seconds for ssh to authenticate and open the forwards


def remote_path(path: str) -> str:
    """`path` quoted for the remote shell; a leading ~/ still expands to the remote home."""
    if path == "~":
        return "~"
    if path.startswith("~/"):
        return "~/" + shlex.quote(path[2:])
    return shlex.quote(path)


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    """tcp://HOST:PORT -> (host, port); SourceError for anything else."""
    parts = urlsplit(endpoint)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != "tcp" or not parts.hostname or port is None or not 0 < port < 65536:
        raise SourceError(f"{endpoint}: not a tcp://HOST:PORT endpoint")
    return parts.hostname, port


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Ssh:
    """Commands to one destination (`user@host`, or a Host alias from ~/.ssh/config)."""

    def __init__(self, destination: str, options: Sequence[str] = (), program: str | Sequence[str] = "ssh") -> None:
        if not destination or destination.startswith("-"):
            raise SourceError(f"--ssh {destination!r}: give a destination such as user@host")
        self.destination = destination
        self.options = [arg for option in options for arg in ("-o", option)]
        self.program = [program] if isinstance(program, str) else list(program)  # tests run a stand-in
        self._tunnel: subprocess.Popen | None = None

    def command(self, *remote: str) -> list[str]:
        """ssh [options] DESTINATION REMOTE...: the remote words are already quoted for its shell."""
        return [*self.program, *self.options, self.destination, *remote]

    def cat_command(self, path: str) -> list[str]:
        return self.command("cat", "--", remote_path(path))

    def tunnel_command(self, forwards: Sequence[tuple[int, str, int]]) -> list[str]:
        """ssh -N that forwards each local port to (remote host, remote port) as the remote sees them."""
        command = [*self.program, "-N", "-o", "ExitOnForwardFailure=yes", "-o", "ServerAliveInterval=15", *self.options]
        for local, host, port in forwards:
            command += ["-L", f"127.0.0.1:{local}:{host}:{port}"]
        return [*command, self.destination]

    def cat(self, path: str) -> bytes:
        """The remote file's bytes; SourceError with ssh's own words when it fails."""
        try:
            done = subprocess.run(self.cat_command(path), stdin=subprocess.DEVNULL, capture_output=True,
                                  timeout=CAT_TIMEOUT, check=False)
        except FileNotFoundError:
            raise SourceError(f"--ssh: cannot run {self.program[0]!r}; install an OpenSSH client") from None
        except subprocess.TimeoutExpired:
            raise SourceError(f"--ssh {self.destination}: no answer within {CAT_TIMEOUT:g} s reading {path}") from None
        if done.returncode != 0:
            why = done.stderr.decode(errors="replace").strip().splitlines()
            raise SourceError(f"--ssh {self.destination}: cannot read {path}: {why[-1] if why else f'ssh exit {done.returncode}'}")
        return done.stdout

    def open_tunnel(self, remote: Sequence[tuple[str, int]], timeout: float = TUNNEL_TIMEOUT) -> list[int]:
        """Forward a free local port to each remote (host, port); returns the local ports once they answer."""
        forwards = [(free_port(), host, port) for host, port in remote]
        try:
            self._tunnel = subprocess.Popen(self.tunnel_command(forwards), stdin=subprocess.DEVNULL,
                                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        except FileNotFoundError:
            raise SourceError(f"--ssh: cannot run {self.program[0]!r}; install an OpenSSH client") from None
        deadline = time.monotonic() + timeout
        waiting = [local for local, _, _ in forwards]
        while waiting:
            if self._tunnel.poll() is not None:
                why = (self._tunnel.stderr.read() if self._tunnel.stderr else b"").decode(errors="replace").strip().splitlines()
                self.close()
                raise SourceError(f"--ssh {self.destination}: the tunnel closed: {why[-1] if why else 'no reason given'}")
            if time.monotonic() > deadline:
                self.close()
                raise SourceError(f"--ssh {self.destination}: the tunnel did not open within {timeout:g} s")
            waiting = [port for port in waiting if not _answers(port)]
            if waiting:
                time.sleep(0.1)
        return [local for local, _, _ in forwards]

    def tunnel_lost(self) -> str:
        """Why the tunnel is gone ("" while its ssh runs): ssh's last words, or its exit status."""
        tunnel = self._tunnel
        if tunnel is None or tunnel.poll() is None:
            return ""
        why = (tunnel.stderr.read() if tunnel.stderr else b"").decode(errors="replace").strip().splitlines()
        return why[-1] if why else f"ssh exited with status {tunnel.returncode}"

    @property
    def tunnel_open(self) -> bool:
        return self._tunnel is not None and self._tunnel.poll() is None

    def close(self) -> None:
        """End the tunnel (the job is not touched: only our ssh goes away)."""
        tunnel, self._tunnel = self._tunnel, None
        if tunnel is None:
            return
        if tunnel.poll() is None:
            tunnel.terminate()
            try:
                tunnel.wait(5)
            except subprocess.TimeoutExpired:
                tunnel.kill()
                tunnel.wait()
        if tunnel.stderr is not None:
            tunnel.stderr.close()


class SshRun:
    """A running run on another machine, through a tunnel that is reopened whenever a connection is needed
    and it is gone (ssh died, the network dropped, the laptop slept).

    `connect` is LiveSource's way in: each call after the first reads the remote
    run.json (and .token) again, so a run resumed there on new ports with a new
    token is followed; `link_lost` tells LiveSource that the tunnel, not the
    run, went away.
    """

    def __init__(self, ssh: Ssh, run_dir: str, token: str | None, info: dict) -> None:
        self.ssh = ssh
        self.run_dir = run_dir.rstrip("/")
        self.given_token = token  # --token-file wins over the remote .token
        self.info = info  # the remote run.json as last read
        self.token = self._read_token()
        self._ports: tuple = ()  # (remote publish, remote control) the tunnel forwards
        self._local: list[int] = []
        self._lost = ""  # why the last tunnel went, until a new one is open
        self._fresh = True  # `info` was just read: the first connect need not read it again

    @property
    def telemetry(self) -> dict:
        telemetry = self.info.get("telemetry")
        return telemetry if isinstance(telemetry, dict) else {}

    def _read_token(self) -> str | None:
        if self.given_token is not None:
            return self.given_token
        try:
            return self.ssh.cat(f"{self.run_dir}/.token").decode().strip() or None
        except SourceError:
            return None

    def link_lost(self) -> str:
        """"" while the tunnel's ssh runs, else what happened to it (shown as TUNNEL LOST, not blamed on the run)."""
        if self.ssh.tunnel_open or not self._ports:
            return ""
        self._lost = self._lost or self.ssh.tunnel_lost()
        return f"the SSH tunnel to {self.ssh.destination} closed ({self._lost}); reopening it"

    def open(self) -> None:
        """The tunnel to the ports in `info`, opened unless it is open to those already; SourceError if it fails."""
        publish = parse_endpoint(str(self.telemetry.get("publish", "")))
        control = parse_endpoint(str(self.telemetry.get("control", "")))
        if (publish, control) != self._ports or not self.ssh.tunnel_open:
            self.ssh.close()
            self._local = self.ssh.open_tunnel([(_loopback(publish[0]), publish[1]), (_loopback(control[0]), control[1])])
            self._ports, self._lost = (publish, control), ""

    def connect(self) -> RunClient:
        """A client through the tunnel, (re)opening it first where needed. ClientError says why not."""
        from scorch.telemetry.client import ClientError, RunClient

        try:
            if not self._fresh:  # a reconnect: the run may have moved (resumed on new ports, new token)
                self.info = json.loads(self.ssh.cat(f"{self.run_dir}/run.json"))
                self.token = self._read_token()
            self._fresh = False
            self.open()
        except SourceError as exc:
            raise ClientError(exc.message) from None
        except ValueError:
            raise ClientError(f"--ssh {self.ssh.destination}: {self.run_dir}/run.json is not JSON right now") from None
        key = self.telemetry.get("curve_server_key")
        local_publish, local_control = self._local
        return RunClient(f"tcp://127.0.0.1:{local_control}", f"tcp://127.0.0.1:{local_publish}", token=self.token,
                         server_key=key.encode() if isinstance(key, str) and key else None, timeout=CLIENT_TIMEOUT)


def _loopback(host: str) -> str:
    """Where the remote end of the tunnel connects: a wildcard bind is reachable on its loopback."""
    return "127.0.0.1" if host in ("*", "0.0.0.0", "::", "[::]") else host


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def local_copy(ssh: Ssh, run_dir: str, into: str) -> None:
    """Copy a remote run's run.json and event log into the local folder `into` (for replay)."""
    remote = run_dir.rstrip("/")
    for there, here in ((f"{remote}/run.json", os.path.join(into, "run.json")),
                        (events_log.path(remote), events_log.path(into))):
        try:
            data = ssh.cat(there)
        except SourceError:
            if here.endswith("run.json"):
                raise
            data = b""
        with open(here, "wb") as fh:
            fh.write(data)
