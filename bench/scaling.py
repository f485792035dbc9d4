"""Data-parallel scaling: training samples/s on 1 and N ranks, and the efficiency.

    python bench/scaling.py                      # 1 rank, then 2 under mpirun (Horovod) and under torchrun
    python bench/scaling.py --ranks 1 2 4        # more ranks (one core each: needs that many cores)
    python bench/scaling.py --agreement          # what the ranks' agreement costs every 1, 8, 32 steps
    python bench/scaling.py --collectives        # bytes and us per agreement and per validation at 2-16 ranks

The workload is compute-bound: the CNN of examples/mnist (two 3x3
convolutions of 32 and 64 channels on 28x28 images, 50 k parameters: 200 KB of
gradients a step, ~4 M multiply-adds a sample) on MNIST-sized synthetic images
(no download), batch 64 a rank (weak scaling: N ranks train N times the
samples a step). Every rank gets
OMP_NUM_THREADS=1, so N ranks use N cores and the comparison is fair. samples/s
is read from the run's own `step` events, from the first to the last: start-up
(imports, MPI, Horovod) and the end of the run are left out. Every
configuration runs `--rounds` times, the order rotating, and the table shows
the median, so a busy machine slows every configuration alike.

`--agreement` measures what the ranks' agreement (scorch.agreement.SYNC_SECONDS)
costs: the tiny two-input network's training step (width 32, batch 16: so
short that per-step costs show) on 2 ranks under mpirun, with the agreement's
collective every 1, 8, 32 steps or never, the strides taking turns in blocks
(see `agreement_worker`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "examples" / "two_inputs"
CNN = ROOT / "examples" / "mnist" / "model.py"

# MNIST-sized images from a fixed seed (1,024 distinct ones, repeated): the CNN's work without the download.
SYNTHETIC_IMAGES = '''"""Synthetic 1x28x28 images in 10 classes for bench/scaling.py."""
import torch


class DataSetIndex:
    def __init__(self, path, size=4096):
        g = torch.Generator().manual_seed(0)
        self.size = size
        self.images = torch.rand(1024, 1, 28, 28, generator=g)
        self.labels = torch.randint(0, 10, (1024,), generator=g)


class DataSet:
    def __init__(self, index, mode="train"):
        self.index = index
        self.length = index.size if mode == "train" else 256

    def __len__(self):
        return self.length

    def __getitem__(self, i):
        return [self.index.images[i % 1024]], [self.index.labels[i % 1024]]
'''

def scorch_args(run_dir: str, workload: str, ranks: int, batch: int, steps: int) -> list[str]:
    """One epoch of `steps` training batches a rank; no validation, test inference or TensorBoard to time."""
    size = steps * batch * ranks
    if workload == "cnn":
        dataset = os.path.join(os.path.dirname(run_dir), "synthetic_images.py")
        Path(dataset).write_text(SYNTHETIC_IMAGES)
        files = ["--model", str(CNN), "--dataset", dataset, "--dataset-path", os.path.dirname(run_dir)]
    else:  # the tiny two-input network: its examples keep 80 % of the data to train
        size = int(size / 0.8) + 10
        files = ["--model", str(TINY / "model.py"), "--dataset", str(TINY / "dataset.py"), "--dataset-path", str(TINY)]
    return [*files, "--dataset-args", json.dumps({"size": size}),
            "--batch-size", str(batch), "--epochs", "1", "--max-train-iterations", str(steps),
            "--max-valid-iterations", "0", "--max-test-iterations", "0", "--seed", "1", "--device", "cpu",
            "--no-tensorboard", "--no-telemetry", "--headless", "--run-dir", run_dir]


def command(launcher: str, ranks: int, args: list[str]) -> list[str]:
    program = ["-m", "scorch.cli"]
    if ranks == 1 and launcher == "none":
        return [sys.executable, *program, *args]
    if launcher == "mpirun":
        root = ["--allow-run-as-root"] if os.geteuid() == 0 else []
        return ["mpirun", *root, "--oversubscribe", "--bind-to", "none", "-np", str(ranks), "-x", "OMP_NUM_THREADS",
                sys.executable, *program, *args]
    if launcher == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks), *program, *args]
    raise ValueError(launcher)


def samples_per_second(run_dir: str) -> float:
    """Training throughput between the run's first and last `step` events (all ranks together)."""
    steps = []
    with open(os.path.join(run_dir, "events.jsonl")) as fh:
        for line in fh:
            event = json.loads(line)
            if event["type"] == "run_started":
                batch, ranks = event["batch_size"], event["world_size"]
            elif event["type"] == "step":
                steps.append((event["step"], event["time"]))
    (first, start), (last, end) = steps[0], steps[-1]
    if last <= first:
        raise RuntimeError(f"{run_dir}: too few step events to time; raise --steps")
    return (last - first) * batch * ranks / (end - start)


def measure(launcher: str, ranks: int, workload: str, batch: int, steps: int) -> float:
    with tempfile.TemporaryDirectory(prefix="scorch-scaling-") as tmp:
        run_dir = os.path.join(tmp, "run")
        # PYTHONFAULTHANDLER: a rank that aborts (SIGABRT) or crashes prints every thread's Python stack first
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONFAULTHANDLER="1",
                   PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        cmd = command(launcher, ranks, scorch_args(run_dir, workload, ranks, batch, steps))
        done = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=1800)
        if done.returncode != 0:
            raise RuntimeError(failure(launcher, cmd, done.returncode, done.stdout))
        return samples_per_second(run_dir)


# The lines of a failed run that say why, above the launcher's own report (torchrun's traceback fills the tail).
WHY = ("terminate called", "what():", "Fatal Python error", "Aborted", "Segmentation fault", "error:", "exitcode", "Signal ")


def failure(launcher: str, cmd: list[str], code: int, output: str) -> str:
    """What to say about a run that failed: the lines that tell why, and where its whole output was kept."""
    kept = Path(f"scaling-failure-{launcher}-{time.strftime('%Y%m%d-%H%M%S')}.log").resolve()
    kept.write_text(" ".join(cmd) + "\n\n" + output)
    why = [line for line in output.splitlines() if any(mark in line for mark in WHY)][:20]
    return f"{' '.join(cmd[:8])} ... exited {code}; its whole output is in {kept}:\n" + "\n".join(why or output.splitlines()[-20:])


def rounds(configs: list, rounds: int, run) -> dict:
    """Every configuration `rounds` times, the order rotating; each configuration's list of results."""
    results: dict = {config: [] for config in configs}
    for r in range(rounds):
        for config in configs[r % len(configs):] + configs[: r % len(configs)]:
            results[config].append(run(config))
            print(f"  round {r + 1}: {config}: {results[config][-1]:,.0f} samples/s", file=sys.stderr, flush=True)
    return results


def scaling(args: argparse.Namespace) -> None:
    configs = [("none", 1)] if 1 in args.ranks else []
    configs += [(launcher, n) for n in args.ranks if n > 1 for launcher in args.launchers]
    results = rounds(configs, args.rounds, lambda c: measure(c[0], c[1], "cnn", args.batch, args.steps))
    base = statistics.median(results[("none", 1)]) if ("none", 1) in results else None
    best_base = max(results[("none", 1)]) if base else None
    print(f"\nexamples/mnist CNN on synthetic 28x28 images, batch {args.batch} a rank, {args.steps} steps a rank, "
          f"OMP_NUM_THREADS=1 a rank; {args.rounds} rounds: median (and best)")
    print(f"{'ranks':>5}  {'launcher (engine)':<20} {'samples/s':>16}  {'speed-up':>8}  {'efficiency':>14}")
    for (launcher, n), rates in results.items():
        rate, best = statistics.median(rates), max(rates)
        engine = {"none": "one process", "mpirun": "mpirun (horovod)", "torchrun": "torchrun (torch)"}[launcher]
        speedup = f"{rate / base:.2f}x" if base else "-"
        efficiency = f"{100 * rate / (n * base):.0f} % ({100 * best / (n * best_base):.0f} %)" if base else "-"
        print(f"{n:>5}  {engine:<20} {f'{rate:,.0f} ({best:,.0f})':>16}  {speedup:>8}  {efficiency:>14}")


def agreement(args: argparse.Namespace) -> None:
    """Runs `agreement_worker` on 2 ranks under mpirun and prints its table."""
    root = ["--allow-run-as-root"] if os.geteuid() == 0 else []
    cmd = ["mpirun", *root, "--oversubscribe", "--bind-to", "none", "-np", "2", "-x", "OMP_NUM_THREADS",
           sys.executable, __file__, "--agreement-worker", "--blocks", str(args.blocks)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=1800)
    print(done.stdout)
    if done.returncode != 0:
        sys.exit(f"scaling.py: mpirun exited {done.returncode}")


def agreement_worker(blocks: int, block: int = 32) -> None:
    """The training step of the tiny two-input network (batch 16, gradients averaged by Horovod), with
    the agreement's collective (`allgather_object` of a tiny object, as `Agreement.agree` sends) every
    1, 8, 32 steps or never. The strides take turns in blocks of 32 steps, many times, inside the same
    two processes: a busy machine slows every stride alike, and the medians compare like with like."""
    import torch

    from scorch import dist, user_code

    torch.set_num_threads(1)
    engine = dist.create("auto")
    model = user_code.load_model(str(TINY / "model.py"), {})
    network, socket = model.network, model.socket
    optimizer = engine.wrap_optimizer(socket.optimizer, list(network.named_parameters()))
    engine.broadcast_state(network, socket.optimizer)
    g = torch.Generator().manual_seed(engine.rank)
    inputs = [torch.randn(16, 16, generator=g), torch.randn(16, 5, 8, generator=g)]
    targets = [torch.randint(0, 4, (16,), generator=g), torch.randn(16, generator=g)]
    strides = [0, 1, 8, 32]
    seconds: dict[int, list[float]] = {stride: [] for stride in strides}
    for b in range(blocks + 2):  # the first two rounds warm up
        for stride in strides[b % 4:] + strides[: b % 4]:
            engine.barrier()
            start = time.perf_counter()
            for step in range(1, block + 1):
                loss = socket.criterion(network(inputs), targets)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                if stride and step % stride == 0:
                    engine.allgather_object(([], None, None))  # no requests, no figures, no NaN: the usual case
            if b >= 2:
                seconds[stride].append((time.perf_counter() - start) / block)
    engine.barrier()
    start = time.perf_counter()
    for _ in range(200):
        engine.allgather_object(([], None, None))
    alone = (time.perf_counter() - start) / 200
    if engine.rank != 0:
        return
    base = statistics.median(seconds[0])
    print(f"agreement stride, 2 ranks under mpirun (Horovod {engine.name}), two_inputs width 32, batch 16 a rank; "
          f"{blocks} blocks of {block} steps a stride, strides interleaved; medians")
    print(f"{'every':>8}  {'step (us)':>9}  {'cost a step (us)':>16}  {'slower':>7}")
    for stride in strides:
        step = statistics.median(seconds[stride])
        label = "never" if stride == 0 else f"{stride} step{'s' if stride > 1 else ''}"
        print(f"{label:>8}  {1e6 * step:>9,.0f}  {1e6 * (step - base):>16,.0f}  {100 * (step / base - 1):>6.1f}%")
    print(f"one allgather_object of the agreement, alone: {1e6 * alone:,.0f} us")


def collectives(args: argparse.Namespace) -> None:
    """Runs `collectives_worker` under torchrun (gloo) at each rank count and prints one table."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    rows = []
    for n in args.ranks:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(n), __file__,
               "--collectives-worker", "--repeats", str(args.repeats)]
        done = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=1800)
        found = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode != 0 or not found:
            sys.exit(f"scaling.py: torchrun with {n} ranks exited {done.returncode}:\n{done.stdout[-2000:]}")
        rows.append(json.loads(found[-1]))
        print(f"  {n} ranks done", file=sys.stderr, flush=True)
    load = os.getloadavg()[0]
    print(f"\nCollectives around the steps, torchrun (gloo, CPU), {os.cpu_count()} cores (load {load:.0f}), ranks "
          "oversubscribed; "
          f"median of {args.repeats} agreements, 5 validations of {VALID_SET} samples (two_inputs-sized outputs), "
          "before (allgather_object) -> now")
    print(f"{'ranks':>5}  {'agreement B/rank':>17}  {'agreement B/job':>17}  {'agreement us':>15}  "
          f"{'valid B on rank 1':>19}  {'valid B/job':>19}  {'valid ms':>13}")
    for r in rows:
        n = r["ranks"]
        print(f"{n:>5}  {r['agree_old_bytes']:>8,} -> {r['agree_new_bytes']:>4,}  "
              f"{n * r['agree_old_bytes']:>8,} -> {n * r['agree_new_bytes']:>5,}  "
              f"{r['agree_old_us']:>6,.0f} -> {r['agree_new_us']:>5,.0f}  "
              f"{r['valid_old_bytes']:>9,} -> {r['valid_new_bytes']:>5,}  "
              f"{r['valid_old_job']:>9,} -> {r['valid_new_job']:>7,}  "
              f"{r['valid_old_ms']:>5,.0f} -> {r['valid_new_ms']:>4,.0f}")
    print("B/rank: payload bytes a rank receives; B/job: all ranks together. Before: every rank received every rank's "
          "pickled tuple (N x) and every rank's validation outputs (the whole set). Now: one allreduce of 7 int64s; "
          "validation batches go to rank 0 alone, 16 batches a gather, the metrics come back in one small broadcast.")


VALID_SET = 1024  # validation samples in --collectives


def collectives_worker(repeats: int) -> None:
    """One rank of --collectives: the agreement and whole-set validation, as before and as now, with the real
    engine and payloads of the real size (the agreement's tuple and tensor; two_inputs' outputs and targets)."""
    import math
    import pickle

    import torch

    from scorch import dist
    from scorch.agreement import SLOTS
    from scorch.trainer import GATHER_BATCHES

    engine = dist.create("auto")
    n, rank = engine.size, engine.rank

    def median_us(work, times: int) -> float:
        spent = []
        for _ in range(times):
            engine.barrier()
            start = time.perf_counter()
            work()
            spent.append(time.perf_counter() - start)
        return 1e6 * statistics.median(spent)

    # The agreement: before, (requests, figures, NaN, pace) pickled and allgathered (figures every ~2 s: here None,
    # the usual case, so "before" is its cheapest); now one allreduce(max) of the request and steering slots, the NaN key, the stride.
    old_tuple = ([], None, None, 0.0123)
    slots = torch.zeros(SLOTS, dtype=torch.int64)
    agree_old_us = median_us(lambda: engine.allgather_object(old_tuple), repeats)
    agree_new_us = median_us(lambda: engine.allreduce(slots, "max"), repeats)
    agree_old_bytes = n * len(pickle.dumps(old_tuple))  # each rank receives every rank's pickle
    agree_new_bytes = slots.numel() * slots.element_size()  # each rank receives the reduced tensor

    # Validation: this rank's share of VALID_SET, in batches of 16, two outputs and two targets a sample.
    g = torch.Generator().manual_seed(rank)
    mine = list(range(rank, VALID_SET, n))
    batches = [mine[i : i + 16] for i in range(0, len(mine), 16)]

    def piece(indices: list) -> tuple:
        b = len(indices)
        return (indices, [torch.randn(b, 4, generator=g), torch.randn(b, generator=g)],
                [torch.randint(0, 4, (b,), generator=g), torch.randn(b, generator=g)], 1.0, b)

    pieces = [piece(indices) for indices in batches]
    whole_share = (mine, [torch.cat([p[1][0] for p in pieces]), torch.cat([p[1][1] for p in pieces])],
                   [torch.cat([p[2][0] for p in pieces]), torch.cat([p[2][1] for p in pieces])], 1.0, len(mine))
    metrics = {"main": 0.5, "mse": 1.25, "loss": 2.5}
    rounds = math.ceil(math.ceil(math.ceil(VALID_SET / n) / 16) / GATHER_BATCHES)  # as Trainer._evaluate_gathered

    def gathered() -> None:
        for i in range(rounds):
            engine.gather_object(pieces[i * GATHER_BATCHES : (i + 1) * GATHER_BATCHES])
        engine.broadcast_object(metrics if rank == 0 else None)

    valid_old_ms = median_us(lambda: engine.allgather_object(whole_share), 5) / 1000
    valid_new_ms = median_us(gathered, 5) / 1000
    share_bytes = engine.allgather_object(len(pickle.dumps(whole_share)))
    piece_bytes = engine.allgather_object(sum(len(pickle.dumps(pieces[i : i + GATHER_BATCHES]))
                                              for i in range(0, len(pieces), GATHER_BATCHES)))
    if rank != 0:
        return
    metrics_bytes = len(pickle.dumps((metrics, None)))
    print(json.dumps({
        "ranks": n, "agree_old_bytes": agree_old_bytes, "agree_new_bytes": agree_new_bytes,
        "agree_old_us": agree_old_us, "agree_new_us": agree_new_us,
        "valid_old_bytes": sum(share_bytes), "valid_new_bytes": metrics_bytes,
        "valid_old_job": n * sum(share_bytes), "valid_new_job": sum(piece_bytes[1:]) + (n - 1) * metrics_bytes,
        "valid_old_ms": valid_old_ms, "valid_new_ms": valid_new_ms}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2], help="rank counts to run (default: 1 2)")
    parser.add_argument("--launchers", nargs="+", default=["mpirun", "torchrun"], choices=["mpirun", "torchrun"],
                        help="how to start several ranks (default: both)")
    parser.add_argument("--batch", type=int, default=64, help="batch size a rank (default: 64)")
    parser.add_argument("--steps", type=int, default=150, help="training steps a rank (default: 150)")
    parser.add_argument("--blocks", type=int, default=60, help="--agreement: blocks of 32 steps a stride (default: 60)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of every configuration (default: 3)")
    parser.add_argument("--agreement", action="store_true", help="measure the agreement stride instead")
    parser.add_argument("--agreement-worker", action="store_true", help=argparse.SUPPRESS)  # one rank of --agreement
    parser.add_argument("--collectives", action="store_true",
                        help="bytes and us per agreement and per validation, before and now (--ranks default 2 4 8 16)")
    parser.add_argument("--repeats", type=int, default=100, help="--collectives: agreements timed (default: 100)")
    parser.add_argument("--collectives-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.agreement_worker:
        return agreement_worker(args.blocks)
    if args.collectives_worker:
        return collectives_worker(args.repeats)
    if args.collectives:
        if args.ranks == [1, 2]:
            args.ranks = [2, 4, 8, 16]
        started = time.time()
        collectives(args)
        print(f"({time.time() - started:.0f} s)")
        return
    needs = ["mpirun"] if args.agreement or "mpirun" in args.launchers else []
    missing = [tool for tool in needs if shutil.which(tool) is None]
    if missing:
        sys.exit(f"scaling.py: {', '.join(missing)} not found; install OpenMPI and Horovod: bash scripts/install-horovod.sh")
    started = time.time()
    agreement(args) if args.agreement else scaling(args)
    print(f"({time.time() - started:.0f} s)")


if __name__ == "__main__":
    main()
