"""A real OpenSSH server on loopback for tests: its own keys, config and port, stopped by its pid.

    with Sshd(tmp_path) as server:
        server.options  ->  the --ssh-option values that reach it (port, key, no host-key prompts)
        server.destination  ->  "USER@127.0.0.1"
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def available() -> bool:
    return os.path.exists(SSHD) and shutil.which("ssh") is not None and shutil.which("ssh-keygen") is not None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Sshd:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = _free_port()
        self.user = getpass.getuser()
        self.destination = f"{self.user}@127.0.0.1"
        self.proc: subprocess.Popen | None = None
        key = folder / "client_key"
        self.options = [f"Port={self.port}", f"IdentityFile={key}", "IdentitiesOnly=yes", "BatchMode=yes",
                        "StrictHostKeyChecking=no", f"UserKnownHostsFile={os.devnull}", "LogLevel=ERROR"]

    def start(self) -> Sshd:
        folder = self.folder
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("host_key", "client_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / name)], check=True)
        authorized = folder / "authorized_keys"
        authorized.write_text((folder / "client_key.pub").read_text())
        authorized.chmod(0o600)
        config = folder / "sshd_config"
        config.write_text("\n".join([
            f"Port {self.port}", "ListenAddress 127.0.0.1", f"HostKey {folder / 'host_key'}",
            f"AuthorizedKeysFile {authorized}", f"PidFile {folder / 'sshd.pid'}", "StrictModes no", "UsePAM no",
            "PermitRootLogin yes", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "AllowTcpForwarding yes", ""]))
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation folder
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=subprocess.DEVNULL,
                                     stderr=open(folder / "sshd.log", "wb"))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (folder / "sshd.log").read_text()
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.1)
        raise AssertionError("sshd did not start listening")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> Sshd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
