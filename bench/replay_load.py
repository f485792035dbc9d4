"""How a long replay opens in a real terminal: first frame, keys while loading, time to the whole run. Not a test.

    python bench/replay_load.py                  # a 226,000-line events.jsonl (about 14 h of a 2-rank run), 120x40
    python bench/replay_load.py --lines 50000 --rounds 3 --size 80x24

Writes a finished run folder with tests/helpers/long_log.py (the mix of a real long run: step events every
0.25 s, system events of both ranks every 2 s, epoch ends, checkpoints), opens `scorch-tui RUN_DIR` in a
tmux server of its own and reads the screen with `capture-pane` every 50 ms:

  first frame    from launching scorch-tui to the first screen with the header drawn; "cpu" beside it is
                 the CPU time scorch-tui had used by then (user + system, psutil): on a busy machine the
                 wall time waits for the CPU, this is what an idle machine would take
  first data     ... to the first screen showing the run's name (events are on screen)
  loaded         ... to the screen showing the run's end ("run ended: completed") with no LOADING left
  key latency    while loading, `?` is pressed once a second: time until the help box is on screen
                 (then esc closes it); median and worst
  headers        what the header said during the load, by kind: a "RUNNING" or an "ETA" there is a lie
                 (the run has ended); "LOADING n %" is the truth

Each round is a fresh process (the page cache holds the log after the first round: the bench reads it once
before timing, so every round reads from memory). `--before REV` times that git revision too, in alternating
rounds (a busy machine slows both alike): its scorch/ and tui/ are checked out into a temporary folder and put
first on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import psutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

from helpers.long_log import write_long_run  # noqa: E402
from helpers.tmux import Tmux  # noqa: E402

POLL = 0.05


def header_kind(header: str) -> str:
    if "LOADING" in header:
        return "LOADING"
    if "RUNNING" in header or "ETA" in header:
        return "RUNNING/ETA (a lie)"
    if "COMPLETED" in header:
        return "COMPLETED"
    return "other"


def one_round(run_dir: str, width: int, height: int, keys: bool, timeout: float, tree: str | None) -> dict:
    tmux = Tmux(width, height)
    name = os.path.basename(run_dir)
    headers: dict[str, int] = {}
    latencies: list[float] = []
    first = data = loaded = first_cpu = loaded_cpu = None
    try:
        start = time.monotonic()
        env = ["env", f"PYTHONPATH={tree}"] if tree else []
        tmux.start([*env, sys.executable, "-m", "scorch_tui", run_dir])
        next_key = start + 1.0
        while time.monotonic() - start < timeout:
            screen = tmux.screen()
            now = time.monotonic() - start
            lines = screen.splitlines()
            head = lines[0] if lines else ""
            if first is None and "elapsed" in head:
                first, first_cpu = now, cpu_seconds(tmux)
            if data is None and name in head:
                data = now
            if first is not None:
                kind = header_kind(head)
                headers[kind] = headers.get(kind, 0) + 1
            if "run ended: completed" in screen and "LOADING" not in head and "COMPLETED" in head:
                loaded, loaded_cpu = now, cpu_seconds(tmux)
                break
            if keys and first is not None and time.monotonic() >= next_key:
                latencies.append(press_help(tmux, timeout))
                next_key = time.monotonic() + 1.0
                continue
            time.sleep(POLL)
    finally:
        tmux.close()
    return {"first": first, "data": data, "loaded": loaded, "latencies": latencies, "headers": headers,
            "first_cpu": first_cpu, "loaded_cpu": loaded_cpu}


def cpu_seconds(tmux: Tmux) -> float | None:
    """User + system CPU seconds of the process in the pane (scorch-tui: `env` execs it), threads included."""
    pid = tmux.run("display-message", "-p", "-t", tmux.session, "#{pane_pid}", check=False).stdout.strip()
    try:
        times = psutil.Process(int(pid)).cpu_times()
    except (ValueError, psutil.Error):
        return None
    return times.user + times.system


def press_help(tmux: Tmux, timeout: float) -> float:
    """Press ? and time until the help box shows; close it again with esc (and wait until it has gone)."""
    pressed = time.monotonic()
    tmux.keys("?")
    tmux.wait_for(lambda s: "this help" in s, "the help box", timeout=timeout, every=0.02)
    took = time.monotonic() - pressed
    tmux.keys("Escape")
    tmux.wait_for(lambda s: "this help" not in s, "the help box to close", timeout=timeout, every=0.02)
    return took


def fmt(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=226_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", default="120x40")
    parser.add_argument("--no-keys", action="store_true", help="do not press ? while loading")
    parser.add_argument("--timeout", type=float, default=180.0)
    parser.add_argument("--before", metavar="REV", help="also time this git revision, in alternating rounds")
    args = parser.parse_args()
    width, height = (int(n) for n in re.split("x", args.size))
    with tempfile.TemporaryDirectory(prefix="scorch-replay-bench-") as tmp:
        run_dir = os.path.join(tmp, "20241027-033320-char_transformer")
        lines = write_long_run(run_dir, args.lines)
        variants: list[tuple[str, str | None]] = [("now", None)]
        if args.before:
            variants.insert(0, (args.before, checkout(args.before, os.path.join(tmp, "before"))))
        with open(os.path.join(run_dir, "events.jsonl"), "rb") as fh:
            size = len(fh.read())  # into the page cache: every round reads from memory
        print(f"{lines:,} lines, {size / 2**20:.1f} MiB, {args.size}, load average {os.getloadavg()[0]:.2f}")
        print(f"{'version':>10} {'round':>5} {'first frame s':>13} {'(cpu)':>6} {'first data s':>12} {'loaded s':>9} "
              f"{'(cpu)':>6} {'keys':>5} "
              f"{'key median s':>12} {'key worst s':>11}  headers during the load")
        for number in range(1, args.rounds + 1):
            for label, tree in variants:
                r = one_round(run_dir, width, height, not args.no_keys, args.timeout, tree)
                lat = r["latencies"]
                print(f"{label[:10]:>10} {number:>5} {fmt(r['first']):>13} {fmt(r['first_cpu']):>6} "
                      f"{fmt(r['data']):>12} {fmt(r['loaded']):>9} {fmt(r['loaded_cpu']):>6} {len(lat):>5} "
                      f"{fmt(statistics.median(lat) if lat else None):>12} {fmt(max(lat) if lat else None):>11}  "
                      + ", ".join(f"{k} x{v}" for k, v in sorted(r["headers"].items())), flush=True)


def checkout(rev: str, folder: str) -> str:
    """scorch/ and tui/ of `rev` in `folder`, importable as scorch and scorch_tui (PYTHONPATH beats the install)."""
    os.makedirs(folder)
    archive = subprocess.run(["git", "-C", ROOT, "archive", rev, "scorch", "tui"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", folder], input=archive, check=True)
    os.rename(os.path.join(folder, "tui"), os.path.join(folder, "scorch_tui"))
    return folder


if __name__ == "__main__":
    main()
