"""What an epoch-end checkpoint costs the training loop: plain torch.save against scorch's.

    python bench/checkpoint_cost.py             # both workloads of bench/overhead.py, 21 repeats
    python bench/checkpoint_cost.py --repeats 51

Time spent in the loop (the calling thread) for the checkpoints of one epoch, `last.pt` alone
(an epoch that did not improve) and `last.pt` + `best.pt` (one that did), on the job of each
bench/overhead.py workload:

  plain torch.save      what the hand-written loop does: torch.save per file, not durable
  atomic, in the loop   scorch's atomic_save per file (temp file, fsync, rename, fsync the
                        folder), all in the loop: what scorch did before the background half
  scorch Trainer.save   what scorch does now: the state written once to a temporary file in
                        the loop, best.pt a link to it, the fsync, rename and links on a
                        background thread (which each repeat waits for, outside the clock)

The three take turns in every repeat; the table shows medians in milliseconds.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def load_overhead():
    spec = importlib.util.spec_from_file_location("scorch_bench_overhead", os.path.join(ROOT, "bench", "overhead.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def measure(name: str, repeats: int, work: str) -> dict[str, list[float]]:
    import torch

    from scorch import checkpoint as ckpt

    overhead = load_overhead()
    job = overhead.workload(name)
    trainer = overhead._scorch_trainer(job, os.path.join(work, name), telemetry=False, tensorboard=False)
    setup = overhead.plain_setup(job)
    plain_dir = os.path.join(work, name + "-plain")
    os.makedirs(plain_dir)
    network, optimizer = setup.network, setup.socket.optimizer

    def plain(files: tuple[str, ...]) -> None:
        state = {"epoch": 1, "model_state": network.state_dict(), "optimizer_state": optimizer.state_dict(), "metrics": {}}
        for file in files:
            torch.save(state, os.path.join(plain_dir, file))

    def atomic(files: tuple[str, ...]) -> None:
        for file in files:
            ckpt.atomic_save(trainer.state_dict(), os.path.join(trainer.run.checkpoints, "atomic-" + file))

    def scorch(files: tuple[str, ...]) -> None:
        trainer.save([(file, "epoch") for file in files], background=True)

    times: dict[str, list[float]] = {}
    try:
        for _ in range(repeats):
            for files in (("last.pt",), ("last.pt", "best.pt")):
                for label, fn in (("plain torch.save", plain), ("atomic, in the loop", atomic), ("scorch Trainer.save", scorch)):
                    start = time.perf_counter()
                    fn(files)
                    times.setdefault(f"{label}|{len(files)}", []).append(time.perf_counter() - start)
                    trainer.settle_saves()
    finally:
        trainer.close()
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=21, help="repeats of every variant (default 21)")
    parser.add_argument("--workloads", default="tiny,cnn", help="comma-separated: tiny, cnn (default both)")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    print(f"{args.repeats} repeats, medians in ms of the calling thread's time\n")
    print("| workload | checkpoints | plain torch.save | atomic, in the loop | scorch Trainer.save |")
    print("|---|---|--:|--:|--:|")
    with tempfile.TemporaryDirectory(prefix="scorch-ckpt-bench-") as work:
        for name in args.workloads.split(","):
            times = measure(name.strip(), args.repeats, work)
            for count, files in ((1, "last.pt"), (2, "last.pt + best.pt")):
                cells = [f"{statistics.median(times[f'{label}|{count}']) * 1e3:.2f}"
                         for label in ("plain torch.save", "atomic, in the loop", "scorch Trainer.save")]
                print(f"| {name} | {files} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
