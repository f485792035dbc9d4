"""What scorch costs over hand-written PyTorch, and over Lightning, on the same job.

    python bench/overhead.py            # full: tiny model 2,500 steps, CNN 450 steps, 5 rounds
    python bench/overhead.py --quick    # a short run: a few hundred steps, 2 rounds

Every variant runs the same job: the same model file and dataset file, the same
seed and initial weights, the same batches in the same order, and the same
per-epoch work (train, validate over the whole validation set, test inference
through Socket.process when the model has one, checkpoint last.pt and best.pt):

  plain            the loop written by hand in this file (`plain_train`), the reference
  plain-again      the same loop again, the control: how far its ratios stray from 1.000
                   is the run's noise, and a smaller difference from plain is not measured
  scorch-quiet     scorch-train with --no-telemetry --no-tensorboard (events.jsonl and
                   the headless console stay: they cannot be turned off)
  scorch-live      scorch-train with telemetry on (--no-tensorboard) and a live subscriber
                   attached: a separate process using scorch.telemetry.client.RunClient
                   that subscribes, says hello and reads every event until run_ended
  scorch-defaults  (opt-in) scorch-train's defaults: telemetry, TensorBoard, subscriber
  live-torch-collate  (opt-in) scorch-live with torch's default_collate in place of
                   scorch.batches.collate: scorch's loop without its faster collate
  lightning        the same job as a LightningModule (when `lightning` is installed:
                   pip install -e .[bench]); no logger, no progress bar, no model summary
                   or sanity check; the epoch's loss summed on the device as in the plain
                   loop; ModelCheckpoint keeps last and best like scorch

Each run is a fresh process, the variants take turns in every round (the
order rotates), and the table shows medians over rounds, so a busy machine
slows every variant alike. Measured the same way for every variant:

  step ms      median time between two training forward calls (a forward pre-hook
               on the Network): one whole step, data loading and bookkeeping included
  in-loop s    the call that trains, inside the child: the plain epoch loop,
               Trainer.fit() (after scorch's build()), lightning.Trainer.fit()
  best s       the fastest in-loop time over the rounds (x plain: best / plain's best): on a
               busy machine the least disturbed run is the closest to the tool's own cost
  CPU s        the process CPU time (every thread) over that same call: steadier than
               wall time when other jobs share the cores, and it counts the telemetry thread
  whole s      the child process from start to exit, as the parent sees it (minus the
               time scorch-live waits for its subscriber to attach, which is the bench's)
  peak RSS     the child's ru_maxrss from os.wait4
  x plain      median over rounds of (variant / plain of the same round)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = ("plain", "plain-again", "scorch-quiet", "scorch-live", "lightning")
OPTIONAL_VARIANTS = ("scorch-defaults", "live-torch-collate")
SUBSCRIBED = ("scorch-live", "scorch-defaults", "live-torch-collate")  # variants a live subscriber watches
WORKLOADS = ("tiny", "cnn")
ATTACH_TIMEOUT = 60.0  # seconds a scorch-live run waits for its subscriber before giving up


# -- the job ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One training job, the same for every variant."""

    name: str
    model: str
    dataset: str
    dataset_path: str
    dataset_args: dict = field(default_factory=dict)
    model_args: dict = field(default_factory=dict)
    epochs: int = 2
    batch_size: int = 32
    max_train_iterations: int = -1
    seed: int = 1
    shuffle: bool = True
    device: str = "cpu"

    def describe(self) -> str:
        return f"{os.path.relpath(self.model, ROOT)} on {os.path.relpath(self.dataset_path, ROOT)}, batch {self.batch_size}"

    def scorch_argv(self, run_dir: str, telemetry: bool, tensorboard: bool) -> list[str]:
        """scorch-train flags for this job."""
        argv = ["--model", self.model, "--dataset", self.dataset, "--dataset-path", self.dataset_path,
                "--dataset-args", json.dumps(self.dataset_args), "--model-args", json.dumps(self.model_args),
                "--epochs", str(self.epochs), "--batch-size", str(self.batch_size),
                "--max-train-iterations", str(self.max_train_iterations), "--seed", str(self.seed),
                "--device", self.device, "--run-dir", run_dir, "--headless"]
        if not self.shuffle:
            argv.append("--no-shuffle")
        if not telemetry:
            argv.append("--no-telemetry")
        if not tensorboard:
            argv.append("--no-tensorboard")
        return argv


def workload(name: str, quick: bool = False, device: str = "cpu") -> Job:
    """The two jobs of the issue: the tiny two-input model (per-step overhead dominates) and a small CNN."""
    if name == "tiny":
        size = 10_000 if quick else 50_000  # 80 % train: 250 or 1,250 batches of 32 an epoch
        folder = os.path.join(ROOT, "examples", "two_inputs")
        return Job("tiny", os.path.join(folder, "model.py"), os.path.join(folder, "dataset.py"), folder,
                   dataset_args={"size": size}, epochs=2, device=device)
    if name == "cnn":
        folder = os.path.join(ROOT, "examples", "digits")  # 1,437 training images: 45 batches an epoch
        return Job("cnn", os.path.join(ROOT, "bench", "digits_cnn.py"), os.path.join(folder, "dataset.py"), folder,
                   epochs=2 if quick else 10, device=device)
    raise SystemExit(f"overhead.py: unknown workload {name!r}; pick from {', '.join(WORKLOADS)}")


# -- the hand-written loop (also used by tests/test_overhead_equivalence.py) ---------------------


def _import_file(path: str, name: str) -> Any:
    import importlib.util

    folder = os.path.dirname(os.path.abspath(path))
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class EpochOrder:
    """The sample order of one epoch: a permutation fixed by (seed, epoch), drawn as scorch draws it.

    `set_epoch` is the hook Lightning (and a hand-written loop) calls each epoch.
    """

    def __init__(self, length: int, seed: int, shuffle: bool) -> None:
        self.length, self.seed, self.shuffle = length, seed, shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        import torch

        if not self.shuffle:
            return iter(range(self.length))
        return iter(torch.randperm(self.length, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist())

    def __len__(self) -> int:
        return self.length


@dataclass
class Setup:
    """What every variant builds before its loop: seeded weights, the optimizer, the data."""

    network: Any
    socket: Any
    datasets: dict
    loaders: dict
    order: EpochOrder


def plain_setup(job: Job) -> Setup:
    """Seed, then build the Network, Socket and DataSets in scorch's order, so the weights start equal."""
    import random

    import numpy as np
    import torch
    from torch.utils.data import DataLoader

    random.seed(job.seed)
    np.random.seed(job.seed)
    torch.manual_seed(job.seed)
    model_file = _import_file(job.model, "bench_user_model")
    network = model_file.Network(**job.model_args)
    socket = model_file.Socket(network)
    data_file = _import_file(job.dataset, "bench_user_dataset")
    index = data_file.DataSetIndex(job.dataset_path, **job.dataset_args)
    datasets = {mode: data_file.DataSet(index, mode) for mode in ("train", "valid", "test")}
    network.to(job.device)
    order = EpochOrder(len(datasets["train"]), job.seed, job.shuffle)
    pin = job.device.startswith("cuda")
    # Each loader gets its own generator: without one, every epoch's iterator draws its seed
    # from the global RNG and the dropout masks would differ from scorch's.
    loaders = {"train": DataLoader(datasets["train"], batch_size=job.batch_size, sampler=order, pin_memory=pin,
                                   generator=torch.Generator())}
    for mode in ("valid", "test"):
        loaders[mode] = DataLoader(datasets[mode], batch_size=job.batch_size, pin_memory=pin, generator=torch.Generator())
    return Setup(network, socket, datasets, loaders, order)


def _to(items: list, device: str) -> list:
    return [x.to(device, non_blocking=True) if hasattr(x, "to") else x for x in items]


def plain_evaluate(setup: Setup, job: Job) -> dict[str, float]:
    """Socket.metrics over the whole validation set, plus the mean loss: what scorch reports."""
    import torch

    network, socket = setup.network, setup.socket
    network.eval()
    outputs_seen, targets_seen, loss_sum, count = [], [], 0.0, 0
    with torch.no_grad():
        for inputs, targets in setup.loaders["valid"]:
            if job.device != "cpu":
                inputs, targets = _to(inputs, job.device), _to(targets, job.device)
            outputs = network(inputs)
            loss_sum += float(socket.criterion(outputs, targets)) * len(targets[0])
            count += len(targets[0])
            outputs_seen.append(outputs)
            targets_seen.append(targets)
        outputs = [torch.cat(parts) for parts in zip(*outputs_seen)]
        targets = [torch.cat(parts) for parts in zip(*targets_seen)]
        metrics = {name: float(value) for name, value in socket.metrics(outputs, targets).items()}
    metrics.setdefault("loss", loss_sum / max(1, count))
    return metrics


def plain_test_inference(setup: Setup, job: Job) -> None:
    """Socket.process over the test set, as scorch feeds TensorBoard (the result is dropped here)."""
    import torch

    process = getattr(setup.socket, "process", None)
    if process is None:
        return
    setup.network.eval()
    with torch.no_grad():
        for inputs, _ in setup.loaders["test"]:
            if job.device != "cpu":
                inputs = _to(inputs, job.device)
            process(inputs, setup.network(inputs))


def plain_train(setup: Setup, job: Job, run_dir: str) -> list[float]:
    """The job written by hand, the way a careful user would: the reference every variant is held to.

    Same order of operations as scorch's loop (forward, criterion, zero_grad,
    backward, step), the loss summed on the device and read once an epoch.
    Returns the mean training loss of each epoch.
    """
    import torch

    network, socket, optimizer = setup.network, setup.socket, setup.socket.optimizer
    folder = os.path.join(run_dir, "checkpoints")
    os.makedirs(folder, exist_ok=True)
    steps = len(setup.loaders["train"])
    if job.max_train_iterations >= 0:
        steps = min(steps, job.max_train_iterations)
    scheduler = getattr(socket, "scheduler", None)
    best = float("-inf")
    losses = []
    for epoch in range(job.epochs):
        # Train.
        setup.order.set_epoch(epoch)
        network.train()
        total = torch.zeros((), dtype=torch.float64, device=job.device)
        done = 0
        for inputs, targets in setup.loaders["train"]:
            if done >= steps:
                break
            if job.device != "cpu":
                inputs, targets = _to(inputs, job.device), _to(targets, job.device)
            outputs = network(inputs)
            loss = socket.criterion(outputs, targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach()
            done += 1
        losses.append(total.item() / max(1, done))
        # Validate.
        metrics = plain_evaluate(setup, job)
        if scheduler is not None:
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.step(metrics["main"])
            else:
                scheduler.step()
        # Test inference.
        plain_test_inference(setup, job)
        # Checkpoint: last every epoch, best when the main metric improved.
        state = {"epoch": epoch + 1, "model_state": network.state_dict(),
                 "optimizer_state": optimizer.state_dict(), "metrics": metrics}
        torch.save(state, os.path.join(folder, "last.pt"))
        if metrics["main"] > best:
            best = metrics["main"]
            torch.save(state, os.path.join(folder, "best.pt"))
    return losses


# -- the Lightning version ----------------------------------------------------------------------


def lightning_run(setup: Setup, job: Job, run_dir: str) -> tuple[Any, Any]:
    """The same job as a LightningModule; returns (trainer, module) ready for `trainer.fit(module, ...)`."""
    import lightning as L
    import torch
    from lightning.pytorch.callbacks import ModelCheckpoint

    socket = setup.socket

    class LitJob(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.network = setup.network
            self.seen: list = []

        def configure_optimizers(self):
            return socket.optimizer

        def on_train_epoch_start(self):
            self.loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)

        def training_step(self, batch, batch_idx):
            inputs, targets = batch
            loss = socket.criterion(self.network(inputs), targets)
            self.loss_sum += loss.detach()  # the epoch's mean loss, as the others keep it (self.log costs more)
            return loss

        def validation_step(self, batch, batch_idx):
            inputs, targets = batch
            outputs = self.network(inputs)
            self.seen.append((outputs, targets, float(socket.criterion(outputs, targets)) * len(targets[0])))

        def on_validation_epoch_end(self):
            outputs = [torch.cat(parts) for parts in zip(*(o for o, _, _ in self.seen))]
            targets = [torch.cat(parts) for parts in zip(*(t for _, t, _ in self.seen))]
            metrics = {name: float(value) for name, value in socket.metrics(outputs, targets).items()}
            metrics.setdefault("loss", sum(s for _, _, s in self.seen) / max(1, len(targets[0])))
            self.seen.clear()
            self.log("main", metrics["main"])
            scheduler = getattr(socket, "scheduler", None)
            if scheduler is not None:
                scheduler.step(metrics["main"]) if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau) else scheduler.step()
            plain_test_inference(setup, job)

    limit = job.max_train_iterations if job.max_train_iterations >= 0 else 1.0
    checkpoints = ModelCheckpoint(dirpath=os.path.join(run_dir, "checkpoints"), filename="best", monitor="main",
                                  mode="max", save_top_k=1, save_last=True, enable_version_counter=False)
    trainer = L.Trainer(max_epochs=job.epochs, accelerator="cuda" if job.device.startswith("cuda") else "cpu",
                        devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, limit_train_batches=limit, callbacks=[checkpoints],
                        default_root_dir=run_dir)
    return trainer, LitJob()


# -- one variant in its own process -------------------------------------------------------------


class StepClock:
    """Stamps every training forward (a forward pre-hook on the Network): the gap between two stamps is
    one whole step. Evaluation forwards break the chain, so no gap spans a validation."""

    def __init__(self, network: Any) -> None:
        self.stamps: list[float | None] = []
        network.register_forward_pre_hook(self._stamp)

    def _stamp(self, module: Any, args: Any) -> None:
        if module.training:
            self.stamps.append(time.perf_counter())
        elif self.stamps and self.stamps[-1] is not None:
            self.stamps.append(None)

    def step_times(self) -> list[float]:
        s = self.stamps
        return [b - a for a, b in zip(s, s[1:]) if a is not None and b is not None]


def wait_for_file(path: str, timeout: float) -> float:
    """Seconds spent waiting for `path` to appear; SystemExit after `timeout`."""
    start = time.perf_counter()
    while not os.path.exists(path):
        if time.perf_counter() - start > timeout:
            raise SystemExit(f"overhead.py: no subscriber attached within {timeout:g} s ({path} never appeared)")
        time.sleep(0.005)
    return time.perf_counter() - start


def _scorch_trainer(job: Job, run_dir: str, telemetry: bool, tensorboard: bool) -> Any:
    from scorch.cli import build_parser
    from scorch.config import from_namespace
    from scorch.trainer import build

    return build(from_namespace(build_parser().parse_args(job.scorch_argv(run_dir, telemetry, tensorboard))))


def run_child(variant: str, job: Job, run_dir: str, out: str, ready: str, threads: int) -> None:
    """Run one variant of the job in this process and write its timings to `out` (JSON)."""
    import torch

    torch.set_num_threads(threads)
    on_gpu = job.device.startswith("cuda")
    if on_gpu:  # the peak of the loop alone, whatever the set-up allocated
        torch.cuda.reset_peak_memory_stats()
    waited = 0.0
    if variant in ("plain", "plain-again", "lightning"):
        setup = plain_setup(job)
        clock = StepClock(setup.network)
        if variant != "lightning":
            start, cpu_start = time.perf_counter(), time.process_time()
            plain_train(setup, job, run_dir)
        else:
            trainer, module = lightning_run(setup, job, run_dir)
            start, cpu_start = time.perf_counter(), time.process_time()
            trainer.fit(module, train_dataloaders=setup.loaders["train"], val_dataloaders=setup.loaders["valid"])
        in_loop, in_loop_cpu = time.perf_counter() - start, time.process_time() - cpu_start
    else:
        live = variant in SUBSCRIBED
        if variant == "live-torch-collate":
            from torch.utils.data import default_collate

            import scorch.batches

            scorch.batches.collate = default_collate  # build() below makes the loaders with it
        trainer = _scorch_trainer(job, run_dir, telemetry=live, tensorboard=variant == "scorch-defaults")
        try:
            clock = StepClock(trainer.network)
            if live:
                waited = wait_for_file(ready, ATTACH_TIMEOUT)
            start, cpu_start = time.perf_counter(), time.process_time()
            status = trainer.fit()
            in_loop, in_loop_cpu = time.perf_counter() - start, time.process_time() - cpu_start
        finally:
            trainer.close()
        if status != "completed":
            raise SystemExit(f"overhead.py: scorch run ended {status}")
    with open(out, "w") as fh:
        json.dump({"variant": variant, "in_loop_s": in_loop, "in_loop_cpu_s": in_loop_cpu, "waited_s": waited,
                   "steps": sum(s is not None for s in clock.stamps),
                   "step_median_s": statistics.median(clock.step_times()),
                   "gpu_peak_mib": torch.cuda.max_memory_allocated() / 2**20 if on_gpu else None}, fh)


def run_collate_check(job: Job, run_dir: str, out: str, threads: int) -> None:
    """The collate function scorch's training loader uses against torch's default_collate, on one batch
    of this job's training set: same result, and the time per batch (best of interleaved repeats)."""
    import timeit

    import torch
    from torch.utils.data import default_collate

    torch.set_num_threads(threads)
    trainer = _scorch_trainer(job, run_dir, telemetry=False, tensorboard=False)
    try:
        loader = trainer.loaders["train"]
        batch = [loader.dataset[i] for i in range(job.batch_size)]
        ours, theirs = loader.collate_fn, default_collate
        same = all(torch.equal(a, b) for pa, pb in zip(ours(batch), theirs(batch)) for a, b in zip(pa, pb))
        best = {"scorch": float("inf"), "torch": float("inf")}
        for _ in range(20 if ours is not theirs else 0):
            for name, fn in (("scorch", ours), ("torch", theirs)):
                best[name] = min(best[name], timeit.timeit(lambda fn=fn: fn(batch), number=200) / 200)
    finally:
        trainer.close()
    with open(out, "w") as fh:
        json.dump({"same": same, "identical": ours is theirs, "scorch_fn": f"{ours.__module__}.{ours.__qualname__}", **best}, fh)


def run_subscriber(run_dir: str, ready: str, out: str) -> None:
    """A live dashboard's share of the work: subscribe, hello, then read every event until run_ended."""
    from scorch.telemetry.client import ClientError, RunClient

    open(ready + ".up", "w").close()  # imports done: the parent starts the run's clock only now
    deadline = time.monotonic() + ATTACH_TIMEOUT
    while True:
        try:
            client = RunClient.from_run_dir(run_dir)
            break
        except ClientError:
            if time.monotonic() > deadline:
                raise SystemExit(f"overhead.py: {run_dir} never published telemetry endpoints") from None
            time.sleep(0.01)
    with client:
        attached = client.subscribe()
        snapshot = client.hello()
        open(ready, "w").close()
        events, types, ended = 0, {}, False
        while not ended:  # the parent ends this process if the run dies first
            event = client.recv(timeout=1.0)
            if event is None:
                continue
            events += 1
            types[event.type] = types.get(event.type, 0) + 1
            ended = event.type == "run_ended"
    with open(out, "w") as fh:
        json.dump({"attached": attached, "snapshot_seq": snapshot.last_seq, "events": events, "types": types,
                   "gaps": client.gaps}, fh)


# -- the parent: rounds, alternation, the table -------------------------------------------------


@dataclass
class Result:
    variant: str
    round: int
    in_loop_s: float
    in_loop_cpu_s: float
    whole_s: float
    rss_mib: float
    step_median_s: float
    steps: int
    subscriber_events: int | None = None
    gpu_peak_mib: float | None = None  # torch.cuda.max_memory_allocated over the run, with --device cuda


def _child_env(threads: int) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return env


def run_variant(variant: str, job: Job, work: str, round_no: int, threads: int) -> Result:
    """One fresh process for `variant`; its own timings plus the parent's view (wall time, peak RSS)."""
    tag = f"{job.name}-{variant}-{round_no}"
    run_dir, out = os.path.join(work, tag), os.path.join(work, tag + ".json")
    ready, sub_out, log = run_dir + ".ready", run_dir + ".subscriber.json", os.path.join(work, tag + ".log")
    me = os.path.abspath(__file__)
    env = _child_env(threads)
    subscriber = None
    with open(log, "w") as log_fh:
        if variant in SUBSCRIBED:
            subscriber = subprocess.Popen([sys.executable, me, "--subscriber", run_dir, "--ready", ready, "--out", sub_out],
                                          stdout=log_fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
            try:
                wait_for_file(ready + ".up", ATTACH_TIMEOUT)  # its start-up must not compete with the run's
            except SystemExit:
                subscriber.kill()
                subscriber.wait()
                raise
        argv = [sys.executable, me, "--child", variant, "--job", json.dumps(asdict(job)), "--run-dir", run_dir,
                "--out", out, "--ready", ready, "--threads", str(threads)]
        start = time.perf_counter()
        child = subprocess.Popen(argv, stdout=log_fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        _, status, usage = os.wait4(child.pid, 0)
        whole = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        if subscriber is not None:
            try:
                subscriber.wait(timeout=30 if child.returncode == 0 else 0)
            except subprocess.TimeoutExpired:
                subscriber.kill()
                subscriber.wait()
    if child.returncode != 0 or (subscriber is not None and subscriber.returncode != 0):
        with open(log) as fh:
            tail = fh.read()[-3000:]
        raise SystemExit(f"overhead.py: {tag} failed (exit {child.returncode}); its output ends:\n{tail}")
    with open(out) as fh:
        mine = json.load(fh)
    events = None
    if subscriber is not None:
        with open(sub_out) as fh:
            events = json.load(fh)["events"]
    return Result(variant, round_no, mine["in_loop_s"], mine["in_loop_cpu_s"], whole - mine["waited_s"], usage.ru_maxrss / 1024,
                  mine["step_median_s"], mine["steps"], events, mine.get("gpu_peak_mib"))


def collate_check(job: Job, work: str, threads: int) -> str:
    """One line: scorch's collate against torch's default_collate on a batch of this job."""
    run_dir, out = os.path.join(work, f"{job.name}-collate"), os.path.join(work, f"{job.name}-collate.json")
    argv = [sys.executable, os.path.abspath(__file__), "--collate-check", "--job", json.dumps(asdict(job)),
            "--run-dir", run_dir, "--out", out, "--threads", str(threads)]
    done = subprocess.run(argv, env=_child_env(threads), cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"overhead.py: the collate check failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    with open(out) as fh:
        c = json.load(fh)
    if c["identical"]:
        return "collate: scorch's training loader uses torch's default_collate itself"
    return (f"collate, one batch of {job.batch_size}: scorch's {c['scorch_fn']} {c['scorch'] * 1e6:.1f} us, torch's "
            f"default_collate {c['torch'] * 1e6:.1f} us ({c['scorch'] / c['torch']:.2f}x), same result: {c['same']}")


def lightning_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("lightning") is not None


def summarise(results: list[Result], variants: list[str]) -> list[dict]:
    """Per variant: medians over rounds, and each ratio as the median of per-round ratios to plain."""
    plain = {r.round: r for r in results if r.variant == "plain"}
    rows = []
    for variant in variants:
        mine = [r for r in results if r.variant == variant]
        if not mine:
            continue

        def ratio(attr: str, mine: list[Result] = mine) -> float:
            return statistics.median(getattr(r, attr) / getattr(plain[r.round], attr) for r in mine)

        rows.append({
            "variant": variant,
            "step_ms": statistics.median(r.step_median_s for r in mine) * 1e3,
            "step_x": ratio("step_median_s"),
            "in_loop_s": statistics.median(r.in_loop_s for r in mine),
            "in_loop_x": ratio("in_loop_s"),
            "best_s": min(r.in_loop_s for r in mine),
            "best_x": min(r.in_loop_s for r in mine) / min(r.in_loop_s for r in plain.values()),
            "cpu_s": statistics.median(r.in_loop_cpu_s for r in mine),
            "cpu_x": ratio("in_loop_cpu_s"),
            "whole_s": statistics.median(r.whole_s for r in mine),
            "whole_x": ratio("whole_s"),
            "rss_mib": statistics.median(r.rss_mib for r in mine),
            "rss_delta_mib": statistics.median(r.rss_mib - plain[r.round].rss_mib for r in mine),
            "steps": mine[0].steps,
            "gpu_peak_mib": statistics.median(r.gpu_peak_mib for r in mine) if mine[0].gpu_peak_mib is not None else None,
            "subscriber_events": min((r.subscriber_events for r in mine if r.subscriber_events is not None), default=None),
        })
    return rows


def format_table(rows: list[dict]) -> str:
    gpu = any(r.get("gpu_peak_mib") is not None for r in rows)
    lines = [f"| {'variant':<18} | {'step ms':>7} | {'x plain':>7} | {'in-loop s':>9} | {'x plain':>7} | "
             f"{'best s':>7} | {'x plain':>7} | {'CPU s':>7} | {'x plain':>7} | {'whole s':>7} | {'x plain':>7} | "
             f"{'peak RSS MiB':>12} | {'vs plain':>8} |",
             "|" + "|".join(["-" * 20] + ["-" * (w + 1) + ":" for w in (7, 7, 9, 7, 7, 7, 7, 7, 7, 7, 12, 8)]) + "|"]
    for r in rows:
        lines.append(f"| {r['variant']:<18} | {r['step_ms']:7.3f} | {r['step_x']:7.3f} | {r['in_loop_s']:9.3f} | "
                     f"{r['in_loop_x']:7.3f} | {r['best_s']:7.3f} | {r['best_x']:7.3f} | {r['cpu_s']:7.3f} | "
                     f"{r['cpu_x']:7.3f} | {r['whole_s']:7.3f} | {r['whole_x']:7.3f} | {r['rss_mib']:12.1f} | "
                     f"{r['rss_delta_mib']:+8.1f} |")
    if gpu:  # --device cuda: the loop's peak of torch.cuda.max_memory_allocated, a column of its own
        lines[0] += f" {'peak GPU MiB':>12} |"
        lines[1] += "-" * 13 + ":|"
        for i, r in enumerate(rows, start=2):
            lines[i] += f" {r['gpu_peak_mib']:12.1f} |"
    return "\n".join(lines)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()} {platform.release()}"


def versions() -> str:
    import importlib.metadata as md

    found = []
    for name in ("torch", "lightning", "pyzmq"):
        try:
            found.append(f"{name} {md.version(name)}")
        except md.PackageNotFoundError:
            pass
    return ", ".join(found)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--quick", action="store_true", help="a short run: a few hundred steps, 2 rounds")
    parser.add_argument("--rounds", type=int, help="rounds of every variant (default 5, --quick 2)")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated: tiny, cnn (default both)")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated, plain always included (default {','.join(VARIANTS)}; "
                             f"also {','.join(OPTIONAL_VARIANTS)})")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads in every variant (default 1)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where every variant trains (default cpu)")
    parser.add_argument("--work-dir", help="where run folders go (default: a temporary folder, removed afterwards)")
    parser.add_argument("--json", help="also write every measurement to this JSON file")
    # Internal: one variant (or the subscriber) in a fresh process.
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--collate-check", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--subscriber", help=argparse.SUPPRESS)
    parser.add_argument("--job", help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--ready", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        run_child(args.child, Job(**json.loads(args.job)), args.run_dir, args.out, args.ready, args.threads)
        return 0
    if args.subscriber:
        run_subscriber(args.subscriber, args.ready, args.out)
        return 0
    if args.collate_check:
        run_collate_check(Job(**json.loads(args.job)), args.run_dir, args.out, args.threads)
        return 0

    rounds = args.rounds or (2 if args.quick else 5)
    variants = ["plain"] + [v for v in args.variants.split(",") if v and v != "plain"]
    unknown = [v for v in variants if v not in VARIANTS + OPTIONAL_VARIANTS]
    if unknown:
        parser.error(f"--variants: unknown {', '.join(unknown)}; pick from {', '.join(VARIANTS + OPTIONAL_VARIANTS)}")
    if "lightning" in variants and not lightning_available():
        print("lightning is not installed (pip install -e .[bench]): skipping that variant\n")
        variants.remove("lightning")
    jobs = [workload(name.strip(), args.quick, args.device) for name in args.workloads.split(",") if name.strip()]

    command = "python bench/overhead.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(f"machine: {machine()}\n{versions()}; torch threads {args.threads}; device {args.device}\ncommand: {command.strip()}\n")
    everything: dict[str, Any] = {"machine": machine(), "versions": versions(), "command": command, "jobs": {}}
    with tempfile.TemporaryDirectory(prefix="scorch-bench-", dir=args.work_dir) as work:
        for job in jobs:
            results: list[Result] = []
            for round_no in range(rounds):
                turn = variants[round_no % len(variants):] + variants[: round_no % len(variants)]  # rotate the order
                for variant in turn:
                    result = run_variant(variant, job, work, round_no, args.threads)
                    results.append(result)
                    print(f"  {job.name} round {round_no + 1}/{rounds} {variant:<18} in-loop {result.in_loop_s:7.3f} s  "
                          f"whole {result.whole_s:7.3f} s  step {result.step_median_s * 1e3:7.3f} ms", flush=True)
            rows = summarise(results, variants)
            live = [r for r in rows if r["subscriber_events"] is not None]
            print(f"\n{job.name}: {job.describe()}, {job.epochs} epochs, {rows[0]['steps']} steps a run, "
                  f"{rounds} rounds (medians)\n")
            print(format_table(rows))
            for r in live:
                print(f"{r['variant']}: the subscriber received at least {r['subscriber_events']} events a run")
            print(collate_check(job, work, args.threads))
            print()
            everything["jobs"][job.name] = {"job": asdict(job), "rows": rows, "results": [asdict(r) for r in results]}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(everything, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
