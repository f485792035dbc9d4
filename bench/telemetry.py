"""What live telemetry costs, and how far it scales. Prints a table; not a test.

    python bench/telemetry.py            # full: 1,000,000-step snapshot, 200,000-event stream
    python bench/telemetry.py --quick    # a tenth of everything

Measured on real loopback sockets with the real Publisher (no torch here):

  publish cost     time the training thread spends handing one event to the
                   publisher (`Publisher.event`: a deque append), and the whole
                   `emit` path a trainer pays (number it, write the events.jsonl
                   line, hand it over)
  stream           events/s the publisher thread sends, and events/s a separate
                   subscriber process (RunClient.recv: decode, seq order, holes
                   filled by replay) keeps up with, fed as fast as the emitter can
  snapshot         a run of N step events (one per step: the worst case) plus an
                   epoch_end every 1,000 steps: the `hello` reply's size, the time
                   to build it, and a client's hello round trip
  replay           RunClient.replay_all of the whole events.jsonl (the exact
                   history a late joiner can fetch): events/s

Training speed with telemetry on vs off is measured by bench/overhead.py
(scorch-quiet vs scorch-live with a subscriber attached).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from scorch import events_log  # noqa: E402
from scorch.emitter import Emitter  # noqa: E402
from scorch.run_folder import RunFolder  # noqa: E402
from scorch.telemetry.client import RunClient  # noqa: E402
from scorch.telemetry.control import Control  # noqa: E402
from scorch.telemetry.protocol import EpochEnd, Event, RunEnded, RunStarted, Step  # noqa: E402
from scorch.telemetry.publisher import History, Publisher  # noqa: E402

SUBSCRIBER = """
import json, sys, time
sys.path.insert(0, {root!r})
from scorch.telemetry.client import RunClient
client = RunClient.from_run_dir({run_dir!r}, timeout=10)
client.subscribe()
client.hello()
print("ready", flush=True)
count, first, last = 0, None, None
while True:
    event = client.recv(30)
    if event is None:
        break
    now = time.perf_counter()
    first = first or now
    last = now
    count += 1
    if event.type == "run_ended":
        break
print(json.dumps({{"count": count, "elapsed": (last or 0) - (first or 0), "gaps": client.gaps}}), flush=True)
client.close()
"""


class Run:
    """A run folder with events.jsonl and a Publisher, numbered by the trainer's own Emitter."""

    def __init__(self, path: str, queue_size: int) -> None:
        self.folder = RunFolder(path)
        self.folder.create(reuse=False)
        self.folder.write_info(state="running")
        self.log = events_log.Writer(self.folder.events_path)
        self.emitter = Emitter([self.log])
        self.publisher = Publisher(self.folder, Control(), self.emit, queue_size=queue_size)
        self.emitter.callbacks.append(self.publisher)

    def emit(self, event: Event) -> None:
        self.emitter.emit(event)

    def wait_published(self, timeout: float = 600) -> float:
        start = time.perf_counter()
        while self.publisher.history.last_seq < self.emitter.seq and time.perf_counter() - start < timeout:
            time.sleep(0.005)
        return time.perf_counter()

    def close(self) -> None:
        self.emitter.close()


def step(i: int) -> Step:
    return Step(epoch=i // 1000, step=i, epoch_step=i % 1000, steps_in_epoch=1000, loss=1.0 / (1 + i), rate=5000.0, lr=0.01)


def bench_publish_cost(tmp: str, n: int) -> list[tuple[str, str]]:
    run = Run(os.path.join(tmp, "cost"), queue_size=n + 10)
    try:
        events = [step(i).stamped(i + 1) for i in range(n)]
        event = run.publisher.event
        start = time.perf_counter_ns()
        for ev in events:
            event(ev)
        handoff = (time.perf_counter_ns() - start) / n / 1000
        run.emitter.seq = n
        run.wait_published()
        samples = []
        for ev in events[: n // 10]:
            t0 = time.perf_counter_ns()
            event(ev)
            samples.append(time.perf_counter_ns() - t0)
        samples.sort()
        run.wait_published()
        start = time.perf_counter_ns()
        for i in range(n // 10):
            run.emit(step(i))
        whole = (time.perf_counter_ns() - start) / (n // 10) / 1000
    finally:
        run.close()
    log = events_log.Writer(os.path.join(tmp, "no-publisher.jsonl"))
    try:
        start = time.perf_counter_ns()
        for i in range(n // 10):
            log.event(step(i).stamped(i + 1))
        alone = (time.perf_counter_ns() - start) / (n // 10) / 1000
    finally:
        log.close()
    return [
        ("Publisher.event (training thread), mean", f"{handoff:.2f} µs"),
        ("Publisher.event, p99 (timed one by one)", f"{samples[int(len(samples) * 0.99)] / 1000:.2f} µs"),
        ("whole emit: number + events.jsonl line + hand-off", f"{whole:.2f} µs"),
        ("  the same without a publisher (number + events.jsonl)", f"{alone:.2f} µs"),
    ]


def bench_frozen(tmp: str, n: int) -> list[tuple[str, str]]:
    """What a whole emit costs with two frozen subscribers holding their buffers full (one that never reads, one
    whose process is stopped), beside the same emits with none, in turns (the rounds alternate, best of five each);
    the none-vs-none pair is the control: how far it strays from 1.00x is this machine's noise."""
    import zmq

    run = Run(os.path.join(tmp, "frozen"), queue_size=n + 10)
    frozen = zmq.Context.instance().socket(zmq.SUB)
    frozen.setsockopt(zmq.LINGER, 0)
    frozen.setsockopt(zmq.RCVHWM, 10)
    frozen.connect(run.publisher.publish_endpoint)
    stopped = subprocess.Popen([sys.executable, "-c", (
        "import time, zmq\n"
        "s = zmq.Context().socket(zmq.SUB); s.setsockopt(zmq.SUBSCRIBE, b''); s.setsockopt(zmq.RCVHWM, 10)\n"
        f"s.connect({run.publisher.publish_endpoint!r}); s.recv_multipart(); print('ready', flush=True); time.sleep(600)\n")],
        stdout=subprocess.PIPE)
    costs: dict[str, list[float]] = {"none": [], "none again": [], "frozen": []}
    try:
        stopped.stdout.readline()
        os.kill(stopped.pid, 19)  # SIGSTOP: it holds its buffers and never reads

        def burst(label: str, subscribed: bool) -> None:
            frozen.setsockopt(zmq.SUBSCRIBE if subscribed else zmq.UNSUBSCRIBE, b"")
            start = time.perf_counter_ns()
            for i in range(n):
                run.emit(step(i))
            costs[label].append((time.perf_counter_ns() - start) / n / 1000)
            run.wait_published()

        for _ in range(5):
            burst("none", False)
            burst("frozen", True)
            burst("none again", False)
    finally:
        os.kill(stopped.pid, 18)
        stopped.kill()
        stopped.wait()
        stopped.stdout.close()
        frozen.close()
        run.close()
    best = {label: min(values) for label, values in costs.items()}
    return [("whole emit, no frozen subscriber (best of 5)", f"{best['none']:.2f} µs"),
            ("  the same again: the control", f"{best['none again']:.2f} µs ({best['none again'] / best['none']:.2f}x)"),
            ("  with two frozen subscribers", f"{best['frozen']:.2f} µs ({best['frozen'] / best['none']:.2f}x)")]


def bench_stream(tmp: str, n: int) -> list[tuple[str, str]]:
    run = Run(os.path.join(tmp, "stream"), queue_size=n + 10)
    sub = subprocess.Popen([sys.executable, "-c", SUBSCRIBER.format(root=ROOT, run_dir=run.folder.path)],
                           stdout=subprocess.PIPE, text=True)
    try:
        assert sub.stdout.readline().strip() == "ready"
        run.emit(RunStarted(name="bench"))
        start = time.perf_counter()
        for i in range(n):
            run.emit(step(i))
        run.emit(RunEnded(status="completed"))
        emitted = time.perf_counter()
        published = run.wait_published()
        result = json.loads(sub.stdout.readline())
    finally:
        sub.kill()
        sub.wait()
        sub.stdout.close()
        run.close()
    return [
        ("events emitted (training thread, incl. events.jsonl)", f"{(n + 2) / (emitted - start):,.0f} /s"),
        ("events published (publisher thread)", f"{(n + 2) / (published - start):,.0f} /s"),
        ("events a RunClient subscriber received, in order", f"{result['count']:,} of {n + 2:,} "
         f"({result['count'] / max(result['elapsed'], 1e-9):,.0f} /s, {result['gaps']} unfilled holes)"),
    ]


def bench_snapshot(tmp: str, n: int) -> list[tuple[str, str]]:
    history = History()
    start = time.perf_counter()
    history.add(RunStarted(name="bench", epochs=n // 1000).stamped(1), RunStarted(name="bench").stamped(1).to_json())
    seq = 1
    for i in range(n):
        seq += 1
        ev = step(i).stamped(seq)
        history.add(ev, ev.to_json())
        if i % 1000 == 999:
            seq += 1
            end = EpochEnd(epoch=i // 1000, step=i, train_loss=0.1, metrics={"main": 0.9, "loss": 0.1}).stamped(seq)
            history.add(end, end.to_json())
    fed = time.perf_counter() - start
    start = time.perf_counter()
    reply = history.snapshot(0)
    build_ms = (time.perf_counter() - start) * 1000
    run = Run(os.path.join(tmp, "snapshot"), queue_size=100)
    run.publisher.history = history  # as if the run had streamed them all
    client = RunClient(run.publisher.control_endpoint, run.publisher.publish_endpoint, timeout=30)
    try:
        start = time.perf_counter()
        snapshot = client.hello()
        hello_ms = (time.perf_counter() - start) * 1000
    finally:
        client.close()
        run.close()
    kinds = {}
    for ev in snapshot.history:
        kinds[ev.type] = kinds.get(ev.type, 0) + 1
    return [
        (f"publisher thread per event (encode + history), {n:,} steps", f"{fed / (n + n // 1000) * 1e6:.2f} µs"),
        ("snapshot events (step / epoch_end / other)",
         f"{kinds.get('step', 0):,} / {kinds.get('epoch_end', 0):,} / {sum(kinds.values()) - kinds.get('step', 0) - kinds.get('epoch_end', 0)}"),
        ("snapshot size", f"{len(reply) / 1024:,.0f} KiB"),
        ("snapshot build time", f"{build_ms:.1f} ms"),
        ("hello round trip (build + send + client decode)", f"{hello_ms:.1f} ms"),
    ]


def bench_replay(tmp: str, n: int) -> list[tuple[str, str]]:
    run = Run(os.path.join(tmp, "replay"), queue_size=n + 10)
    client = RunClient(run.publisher.control_endpoint, run.publisher.publish_endpoint, timeout=30)
    try:
        for i in range(n):
            run.emit(step(i))
        run.wait_published()
        start = time.perf_counter()
        events = client.replay_all()
        elapsed = time.perf_counter() - start
    finally:
        client.close()
        run.close()
    assert len(events) == n
    return [(f"replay_all of {n:,} logged events", f"{n / elapsed:,.0f} events/s ({elapsed:.2f} s)")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the sizes")
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="scorch-bench-telemetry-") as tmp:
        for title, fn, n in (("publish cost", bench_publish_cost, 200_000 // scale),
                             ("frozen subscribers", bench_frozen, 20_000 // scale),
                             ("stream", bench_stream, 200_000 // scale),
                             ("snapshot", bench_snapshot, 1_000_000 // scale),
                             ("replay", bench_replay, 200_000 // scale)):
            rows.append((f"-- {title}", ""))
            rows += fn(tmp, n)
    width = max(len(name) for name, _ in rows)
    print(f"scorch telemetry bench (python {sys.version.split()[0]}, {os.cpu_count()} CPUs)")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
