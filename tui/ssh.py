"""Watch a run on another machine through the system's ssh: read its run.json, tunnel its two ports.

    ssh USER@HOST cat -- RUN_DIR/run.json                      where the run listens (remote loopback ports)
    ssh USER@HOST cat -- RUN_DIR/.token                        the control secret (else read-only)
    ssh -N -o ExitOnForwardFailure=yes -L L1:127.0.0.1:P1 -L L2:127.0.0.1:P2 USER@HOST

then the dashboard talks to tcp://127.0.0.1:L1 (stream) and :L2 (control) as
if the run were local. Authentication is ssh's business (keys, agent,
~/.ssh/config with ProxyJump, ControlMaster...): nothing here sees a password.
A finished run is copied (run.json and events.jsonl) and replayed locally.
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import time
from collections.abc import Sequence
from urllib.parse import urlsplit

from scorch_tui.sources import SourceError

CAT_TIMEOUT = 60.0  # seconds for one remote `cat` (events.jsonl of a long run can be large)
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


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def local_copy(ssh: Ssh, run_dir: str, into: str) -> None:
    """Copy a remote run's run.json and events.jsonl into the local folder `into` (for replay)."""
    for name in ("run.json", "events.jsonl"):
        try:
            data = ssh.cat(f"{run_dir.rstrip('/')}/{name}")
        except SourceError:
            if name == "run.json":
                raise
            data = b""
        with open(os.path.join(into, name), "wb") as fh:
            fh.write(data)
