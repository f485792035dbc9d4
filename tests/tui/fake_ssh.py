"""A stand-in for the system's ssh, for tests: `host` is this machine.

    fake_ssh.py [-o OPT]... DEST CMD...          runs CMD with sh here
    fake_ssh.py -N [-o OPT]... -L A:L:H:P... DEST forwards A:L to H:P until terminated

It takes the same arguments scorch-tui builds for the real ssh, so the whole
--ssh path (remote cat, tunnel, ZeroMQ through it) runs without a remote host.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading


def pump(a: socket.socket, b: socket.socket) -> None:
    try:
        while True:
            data = a.recv(65536)
            if not data:
                break
            b.sendall(data)
    except OSError:
        pass
    finally:
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def forward(listener: socket.socket, host: str, port: int) -> None:
    while True:
        client, _ = listener.accept()
        try:
            upstream = socket.create_connection((host, port))
        except OSError:
            client.close()
            continue
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=pump, args=(a, b), daemon=True).start()


def main(argv: list[str]) -> int:
    forwards, words, tunnel = [], [], False
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "-o":
            i += 2
            continue
        if arg == "-N":
            tunnel = True
        elif arg == "-L":
            forwards.append(argv[i + 1])
            i += 1
        else:
            words.append(arg)
        i += 1
    command = words[1:]  # words[0] is the destination: always this machine
    if not tunnel:
        return subprocess.run(["sh", "-c", " ".join(command)]).returncode
    for spec in forwards:
        bind, local, host, port = spec.split(":")
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((bind, int(local)))
        listener.listen()
        threading.Thread(target=forward, args=(listener, host, int(port)), daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    threading.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
