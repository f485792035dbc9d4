"""The training loop. Read `Trainer.fit` top to bottom: train, validate, test, checkpoint, stop?

Side concerns (JSONL, TensorBoard, console, telemetry) are callbacks fed the
events this module emits; control requests (dashboard, scorch-ctl, signals,
early stopping, NaN) are applied at step boundaries, the same step on every rank.
"""

from __future__ import annotations

import functools
import math
import os
import random
import signal
import threading
import time
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler, default_collate

from scorch import checkpoint as ckpt
from scorch import data, streaming, user_code
from scorch.callbacks import Callback
from scorch.callbacks.early_stopping import Monitor, better_mode
from scorch.config import TrainConfig
from scorch.dist import Single, scale_learning_rate, share_from_rank_zero
from scorch.errors import NonFiniteLoss, ScorchError
from scorch.gradients import GradientClip, check_config
from scorch.run_folder import RunFolder
from scorch.schedules import RunFacts, Schedule, batches_per_epoch
from scorch.telemetry.control import KINDS, Control, Request, agreed_requests, request_flags
from scorch.telemetry.protocol import (
    CheckpointSaved,
    Command,
    EpochEnd,
    Event,
    Log,
    RunEnded,
    RunStarted,
    Step,
    System,
)
from scorch.telemetry.sysstats import SystemSampler

STEP_EVENT_INTERVAL = 0.25  # seconds between `step` events: a few per second
# The ranks agree (control, NaN, per-rank figures) about every SYNC_SECONDS at rank 0's pace, and at least every
# SYNC_MAX_STEPS steps: an agreement costs one collective's latency whatever the step, so a time-based stride keeps
# its cost a small fraction for tiny steps and its delay short for long ones (measured: docs/distributed.md).
SYNC_SECONDS = 1.0
SYNC_MAX_STEPS = 1000
SYSTEM_EVENT_INTERVAL = 2.0  # seconds between `system` events (per-rank CPU/RAM/GPU)
NO_NONFINITE = 2**62  # the agreement's "no NaN/inf seen" (any real key is smaller)


class EpochSampler(Sampler):
    """This rank's share of an epoch: a permutation fixed by (seed, epoch), dealt
    round-robin to ranks (so N ranks of batch B see what 1 rank of batch N*B
    sees), starting `skip` samples in when resuming mid-epoch. Training pads
    (repeats the first samples) so every rank takes as many steps; evaluation
    does not (`pad=False`): the ranks' shares are then the set exactly once."""

    def __init__(self, length: int, shuffle: bool, seed: int, rank: int = 0, size: int = 1, pad: bool = True) -> None:
        self.length, self.shuffle, self.seed, self.rank, self.size, self.pad = length, shuffle, seed, rank, size, pad
        self.epoch = 0
        self.skip = 0
        self.per_rank = math.ceil(length / size) if pad else len(range(rank, length, size))

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def __iter__(self):
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.length, generator=g).tolist()
        else:
            order = list(range(self.length))
        if self.pad:  # every rank as many samples
            missing = self.per_rank * self.size - self.length
            order += (order * (missing // max(1, self.length) + 1))[:missing]
        return iter(order[self.rank :: self.size][self.skip :])

    def __len__(self) -> int:
        return self.per_rank - self.skip


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class _NoScaler:
    """GradScaler's surface for full precision and bf16: plain backward and step."""

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        return loss

    def step(self, optimizer: Any) -> None:
        optimizer.step()

    def unscale_(self, optimizer: Any) -> None:
        pass

    def update(self) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def _mixed_precision(amp: str, device: torch.device) -> tuple[Any, Any]:
    """(autocast context factory, gradient scaler) for --amp off|bf16|fp16."""
    import contextlib
    import functools

    if amp == "off":
        return contextlib.nullcontext, _NoScaler()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    autocast = functools.partial(torch.autocast, device_type=device.type, dtype=dtype)
    # fp16 needs loss scaling against underflow; bf16 has float32's range and does not.
    return autocast, torch.amp.GradScaler(device.type) if amp == "fp16" else _NoScaler()


def collate(batch: list) -> list:
    """torch's default_collate for the 2018 contract's items, `[inputs], [targets]`, cut to what they hold.

    Every column of tensors is one torch.stack, as default_collate would build it, without default_collate's
    walk through every element's type (a quarter to a third of its time on small items; bench/overhead.py
    prints the figure). A column of anything else, every batch built in a loader worker (where
    default_collate stacks straight into shared memory), and any batch this does not fit go to
    default_collate itself, so its results and its errors are torch's own."""
    first = batch[0]
    if torch.utils.data.get_worker_info() is None and type(first) in _SEQUENCES and all(type(p) in _SEQUENCES for p in first):
        try:  # strict zips: items with other numbers of parts go to default_collate, which names the fault
            return [[torch.stack(column) if isinstance(column[0], torch.Tensor) else default_collate(column)
                     for column in zip(*part, strict=True)] for part in zip(*batch, strict=True)]
        except (TypeError, RuntimeError, ValueError):
            pass
    return default_collate(batch)


_SEQUENCES = (list, tuple)


def _to_device(items: list, device: torch.device) -> list:
    return [x.to(device, non_blocking=True) if isinstance(x, torch.Tensor) else x for x in items]


def _to_host(items: list) -> list:
    """Tensors, and the per-sample tensors of a variable-length column, on the host."""
    return [x.cpu() if isinstance(x, torch.Tensor) else [y.cpu() if isinstance(y, torch.Tensor) else y for y in x]
            if isinstance(x, list) else x for x in items]


class Trainer:
    """Holds the run's state; `fit()` runs it. Built by `build_trainer`."""

    def __init__(self, config: TrainConfig, model: user_code.UserModel, datasets: dict, dist: Any,
                 run: RunFolder | None, callbacks: list[Callback], control: Control, device: torch.device) -> None:
        self.config = config
        self.model = model
        self.network = model.network.to(device)
        self.socket = model.socket
        self.datasets = datasets
        self.dist = dist
        self.run = run
        self.callbacks = callbacks
        self.control = control
        self.device = device

        # Only train_modules train: everything else is frozen (no grad, eval mode).
        train_params = {id(p) for p in self.socket.train_modules.parameters()}
        self.frozen = [p for p in self.network.parameters() if id(p) not in train_params]
        for p in self.frozen:
            p.requires_grad_(False)
        # The Network and every module on the way down to a trained one: `training` True while training (their own
        # forward may branch on it), without putting their frozen parts (BatchNorm, dropout) in training mode.
        trained = {id(m) for m in self.socket.train_modules.modules()}
        self._holds_training = [m for m in self.network.modules() if id(m) not in trained and any(
            id(sub) in trained for sub in m.modules())]
        named = [(n, p) for n, p in self.network.named_parameters() if id(p) in train_params]
        self.optimizer = dist.wrap_optimizer(self.socket.optimizer, named, backward_passes=config.accumulate)
        if config.scale_lr and dist.size > 1:  # N times the batch: the usual advice is N times the learning rate
            scale_learning_rate(self.socket.optimizer, getattr(self.socket, "scheduler", None), dist.size)

        self.schedule = Schedule(self.socket, model.path)
        self.monitor = Monitor(config.monitor, config.mode, config.early_stop_patience, config.min_delta)
        self.epoch = 0  # the epoch in progress (0-based)
        self.epoch_step = 0  # batches done in this epoch
        self.step = 0  # optimizer steps done in the run
        self.seq = 0
        self._emit_lock = threading.RLock()  # the telemetry thread emits `command` events too
        self.stop_status: str | None = None  # set when a stop is decided: stopped|preempted|early_stopped
        self.stop_reason = ""
        self.stop_after_epoch = False
        self.resumed_from: str | None = None
        self.notices: list[str] = []  # what the user should hear at the start: choices made for them
        self._sanity = ""  # while the sanity pass runs: what error messages add to say so
        self._checked_first_batch = False
        self._last_metrics: dict = {}
        self.hosts: list[str] = [os.uname().nodename]
        self.policy = ckpt.CheckpointPolicy(run.checkpoints, config.dump_period, config.keep) if run else None
        self._committer: Any = None  # the thread that finishes background saves, made at the first one
        self._committing: Any = None  # the background save in progress (a Future)
        # Ranks agree on control requests (and NaNs) every few steps: one small collective.
        self.sync_max_steps = 0 if dist.size == 1 else SYNC_MAX_STEPS
        self._next_agreement = 0  # the step of the next agreement: the same on every rank
        self._last_agreement = (0, time.perf_counter())  # (step, time) of the last one: this rank's pace
        self._nonfinite = NO_NONFINITE  # with several ranks: the first NaN/inf seen here, as `_nonfinite_key` packs it
        self.stats = SystemSampler(dist.rank)
        self.autocast, self.scaler = _mixed_precision(config.amp, device)
        self.clip = GradientClip.from_config(config, [p for _, p in named], self.scaler, self.optimizer)
        # With several ranks, figures go to rank 0 over the per-rank channel (scorch/telemetry/ranks.py), not
        # through a collective: its thread reads these attributes, the training thread only sets them.
        self.figures: dict = {"collective_wait": 0.0}
        self.reporter: Any = None  # every rank: the channel's sending end
        self.rank_watch: Any = None  # rank 0: its receiving end
        self._next_system = 0.0
        self.heartbeat = time.perf_counter()  # last sign of progress, read by the stall watchdog
        self.phase = "starting"
        self.watchdog = None
        self._epoch_loss = torch.zeros((), dtype=torch.float64, device=device)

        self.train_sampler = EpochSampler(len(datasets["train"]), not config.no_shuffle, config.seed, dist.rank, dist.size)
        self.loaders = {"train": self._loader(datasets["train"], self.train_sampler)}
        for mode in ("valid", "test"):
            if len(datasets[mode]):
                # Validation: each rank its share, gathered back whole. Test inference: rank 0 (the writer), all of it.
                rank, size = (dist.rank, dist.size) if mode == "valid" else (0, 1)
                self.loaders[mode] = self._loader(datasets[mode], EpochSampler(len(datasets[mode]), False, 0, rank, size, pad=False))

    def _loader(self, dataset: Any, sampler: Sampler) -> DataLoader:
        workers = self.config.workers
        # The DataSet's own collate_fn, else scorch's (looked up now: bench/overhead.py swaps in torch's).
        collate_fn = user_code.own_collate(dataset, self.config.dataset) or data.collate_for(dataset, collate)
        return DataLoader(dataset, batch_size=self.config.batch_size, sampler=sampler, num_workers=workers, collate_fn=collate_fn,
                          pin_memory=self.device.type == "cuda", persistent_workers=workers > 0,
                          generator=torch.Generator().manual_seed(self.config.seed))

    # -- events ---------------------------------------------------------------------------

    def emit(self, event: Event, wait: float = -1) -> None:
        """Number the event and hand it to every callback (none on ranks other than 0). Thread-safe;
        with `wait` >= 0, gives up after that many seconds (the watchdog, when the loop may hold the lock)."""
        if not self._emit_lock.acquire(timeout=wait):
            return
        try:
            if not self.callbacks:
                return
            self.seq += 1
            event = event.stamped(self.seq)
            for callback in self.callbacks:
                callback.event(event)
        finally:
            self._emit_lock.release()

    def log(self, message: str, level: str = "warning") -> None:
        if self.reporter is not None and not self.dist.is_global_zero:  # rank 0 shows it (scorch/telemetry/ranks.py)
            self.reporter.line(level, message)
        self.emit(Log(level=level, message=message))

    # -- the run --------------------------------------------------------------------------

    def fit(self) -> str:
        """Train from `self.epoch` to `config.epochs`; returns the final status."""
        cfg = self.config
        self.emit(RunStarted(
            name=os.path.basename(self.run.path) if self.run else "", run_dir=self.run.path if self.run else "",
            model=self.model.path, dataset=os.path.abspath(cfg.dataset), epochs=cfg.epochs, start_epoch=self.epoch,
            steps_per_epoch=self._steps_in_epoch(), batch_size=cfg.batch_size, world_size=self.dist.size,
            hosts=self.hosts, device=str(self.device), backend=self.dist.name, pid=os.getpid(),
            resumed_from=self.resumed_from, config=cfg.to_dict()))
        if cfg.stall_timeout > 0:
            from scorch.watchdog import StallWatchdog

            self.watchdog = StallWatchdog(self, cfg.stall_timeout)
            self.watchdog.start()
        try:
            for notice in self.notices:
                self.log(notice, level="info")
            if self.schedule.warning:
                self.log(self.schedule.warning)
            self.schedule.check_length(cfg.epochs, self._steps_in_epoch() // cfg.accumulate)
            self.sanity_check()
            while self.epoch < cfg.epochs and self.stop_status is None:
                epoch_start = time.time()
                # Train one epoch; stops requested mid-epoch end it early.
                train_loss = self.train_epoch()
                if self.stop_status is not None and not self._epoch_done():
                    break
                # Validate over the whole validation set: these numbers pick best.pt and early stopping.
                metrics = self._last_metrics = self.evaluate("valid", cfg.max_valid_iterations)
                train_metrics = self.evaluate("train", cfg.max_valid_iterations) if cfg.validate_on_train else {}
                value = metrics.get(cfg.monitor, float("nan"))
                improved = self.monitor.update(value, self.epoch)
                if math.isnan(value):  # never "best": say so rather than keep quiet about a missing best.pt
                    kept = f"best.pt stays at epoch {self.monitor.best_epoch + 1}" if self.monitor.best_epoch >= 0 else "no best.pt yet"
                    self.log(f"epoch {self.epoch + 1}: the monitored {cfg.monitor} is NaN; it counts as no improvement ({kept})")
                lr = self._lr()  # the rate this epoch trained at, before the scheduler moves it on
                self.schedule.after_epoch(metrics)
                self.emit(EpochEnd(epoch=self.epoch, step=self.step, train_loss=train_loss, metrics=metrics,
                                   train_metrics=train_metrics, lr=lr, duration=time.time() - epoch_start,
                                   best={"value": self.monitor.best, "epoch": self.monitor.best_epoch}))
                # Checkpoint: the state saved is the state the next epoch starts from.
                self.epoch += 1
                self.epoch_step = 0
                last = self.epoch >= cfg.epochs or self.monitor.should_stop or self.stop_after_epoch
                if self.policy is not None:  # fsynced and renamed in the background while the next epoch starts
                    self.save(self.policy.at_epoch_end(self.epoch - 1, improved, last), background=True)
                    self.policy.prune(self.epoch - 1)
                # Test inference feeds Socket.process (TensorBoard images and texts); after the checkpoint, so a bug
                # in process costs no epoch.
                self.test_inference(self.epoch - 1)
                # Stop early when the monitored metric has stalled, or a stop asked to finish the epoch.
                if self.monitor.should_stop:
                    self.stop_status = "early_stopped"
                    self.stop_reason = (f"{cfg.monitor} did not improve by more than {cfg.min_delta} for "
                                        f"{cfg.early_stop_patience} epochs (best {self.monitor.best:.6g} at epoch "
                                        f"{self.monitor.best_epoch + 1})")
                elif self.stop_after_epoch:
                    self.stop_status = self.stop_status or "stopped"
            self.settle_saves()
        except KeyboardInterrupt:
            self.end("stopped", "interrupted (second Ctrl-C)")
            raise
        except BaseException as exc:
            self.end("failed", exc.message if isinstance(exc, ScorchError) else f"{type(exc).__name__}: {exc}")
            raise
        status = self.stop_status or "completed"
        self.end(status, self.stop_reason)
        return status

    def train_epoch(self) -> float:
        """One pass over this rank's share of the training set; returns the mean loss."""
        cfg, network, socket, optimizer = self.config, self.network, self.socket, self.optimizer
        self.train_sampler.set_epoch(self.epoch, skip=self.epoch_step * cfg.batch_size)
        self.loaders["train"].generator.manual_seed(cfg.seed + self.epoch)
        network.eval()  # frozen modules (BatchNorm statistics, dropout) stay as they are
        socket.train_modules.train()
        for module in self._holds_training:  # and the modules holding them say they train, as model code expects
            module.training = True
        steps_in_epoch = self._steps_in_epoch()
        if self.epoch_step == 0:
            self._epoch_loss.zero_()
        window: list[torch.Tensor] = []  # this window's losses, still on the device: no sync per step
        self.phase = "training"
        window_start = step_end = time.perf_counter()
        next_event = window_start + STEP_EVENT_INTERVAL
        data_wait = 0.0  # seconds this window spent waiting for the data loader
        skip_nan = cfg.on_nan == "skip"
        on_cpu = self.device.type == "cpu"
        accumulate = cfg.accumulate
        schedule_step = self.schedule.after_step if self.schedule.on_step else None
        clip, grad_norm = self.clip, None
        extras: dict[str, Any] = {}  # the Socket's extra per-step scalars, summed over this window
        optimizer.zero_grad(set_to_none=True)

        for inputs, targets in self._batches("train"):
            if self.epoch_step >= steps_in_epoch:
                break
            data_wait += time.perf_counter() - step_end
            if not on_cpu:
                inputs, targets = _to_device(inputs, self.device), _to_device(targets, self.device)
            with self.autocast():
                outputs = network(inputs)
                loss = socket.criterion(outputs, targets)
            extra = None
            if type(loss) is dict:  # {"loss": what trains, other scalars: logged per step}
                loss, extra = user_code.split_loss(loss, self.model.path)
            if not self._checked_first_batch:
                user_code.check_outputs(outputs, self.model.path)
                user_code.check_loss(loss, self.model.path)
                self._checked_first_batch = True
            if skip_nan and not math.isfinite(value := self._loss_everywhere(loss)):  # a sync per step, only when asked for
                self.log(f"skipped batch at epoch {self.epoch + 1}, step {self.epoch_step + 1}: loss is {value}")
                self.epoch_step += 1
                continue
            self.scaler.scale(loss / accumulate if accumulate > 1 else loss).backward()
            window.append(loss.detach())
            if extra:  # summed on the device, read only with the next `step` event
                for name, value in extra.items():
                    extras[name] = extras[name] + value if name in extras else value
            self.epoch_step += 1
            if self.epoch_step % accumulate:
                continue  # gradients accumulate; no optimizer step, no control at this batch
            self.dist.average_gradients(optimizer)  # all ranks, before the AMP scaler checks them for inf
            if clip is not None:  # on the averaged, unscaled gradients (scorch/gradients.py says why)
                grad_norm = clip()
            self.scaler.step(optimizer)
            self.scaler.update()
            optimizer.zero_grad(set_to_none=True)
            self.step += 1

            # Progress: a few `step` events a second, read from the device only then.
            now = step_end = self.heartbeat = time.perf_counter()
            if now >= next_event or self.epoch_step == steps_in_epoch:
                mean = self._take_window(window)
                rate = len(window) * cfg.batch_size * self.dist.size / max(now - window_start, 1e-9)
                self.emit(Step(epoch=self.epoch, step=self.step, epoch_step=self.epoch_step,
                               steps_in_epoch=steps_in_epoch, loss=mean, rate=rate, lr=self._lr(),
                               grad_norm=None if grad_norm is None else float(grad_norm),
                               scalars={name: float(total) / len(window) for name, total in extras.items()}))
                extras.clear()
                if now >= self._next_system:
                    self._sample_system((now - window_start) / len(window), data_wait / len(window))
                    self._next_system = now + SYSTEM_EVENT_INTERVAL
                window.clear()
                window_start, next_event, data_wait = now, now + STEP_EVENT_INTERVAL, 0.0
            if schedule_step is not None:  # OneCycleLR, CyclicLR, warmups: every optimizer step (after `step` shows its rate)
                schedule_step()
            # Control: checkpoint/stop requests, the same step on every rank.
            if self.sync_max_steps:
                if self.step >= self._next_agreement and self.agree(window):
                    break
            elif self.control.pending:
                self.apply_requests(self.control.take())
                if self.stop_status is not None and not self.stop_after_epoch:
                    break
        if window:  # a stop mid-window
            self._take_window(window)
        if self.sync_max_steps:  # a NaN any rank saw, a request that came late: settled before validation
            self.agree()
        done = max(1, self.epoch_step)
        loss = torch.tensor([self._epoch_loss.item() / done], dtype=torch.float64)
        return float(self.dist.allreduce(loss, "mean"))  # ranks saw equal shares: the mean is the epoch's, on every rank

    def sanity_check(self) -> None:
        """All ranks: --sanity-batches validation batches through Socket.metrics and one test batch through
        Socket.process before training (Lightning's sanity check). Nothing is logged or kept, and the random
        state is put back, so the run is the one it would be without it."""
        batches, cap = self.config.sanity_batches, self.config.max_valid_iterations
        if batches <= 0:
            return
        rng = _rng_state()
        self._sanity = f", in the sanity pass before training ({batches} validation batches; --sanity-batches 0 skips it)"
        try:
            self.evaluate("valid", batches if cap < 0 else min(batches, cap))
            self.test_inference(self.epoch, batches=1, keep=False)
        finally:
            self._sanity = ""
            _set_rng_state(rng)

    @torch.no_grad()
    def evaluate(self, mode: str, max_iterations: int) -> dict[str, float]:
        """Socket.metrics over the whole `mode` set (all its batches at once), plus mean loss."""
        loader = self.loaders.get(mode) if mode != "train" else self._loader(self.datasets["train"], EpochSampler(
            len(self.datasets["train"]), False, 0, self.dist.rank, self.dist.size, pad=False))
        if loader is None or max_iterations == 0:
            return {}
        self.network.eval()
        self.phase = f"validating on the {mode} set"
        if self.config.valid == "streaming":
            return self._evaluate_streaming(mode, loader, max_iterations)
        if self.dist.size > 1:
            return self._evaluate_gathered(mode, loader, max_iterations)
        all_outputs: list[list[torch.Tensor]] = []
        all_targets: list[list[torch.Tensor]] = []
        loss_sum, count = 0.0, 0
        for i, (inputs, targets) in enumerate(self._batches(mode, loader)):
            if 0 <= max_iterations <= i:
                break
            outputs, targets, loss, n = self._evaluate_batch(inputs, targets)
            loss_sum, count = loss_sum + loss, count + n
            all_outputs.append(outputs)
            all_targets.append(targets)
        outputs = [data.join(parts) for parts in zip(*all_outputs)]
        targets = [data.join(parts) for parts in zip(*all_targets)]
        return self._metrics(mode, outputs, targets, loss_sum, count)

    def _evaluate_batch(self, inputs: list, targets: list) -> tuple[list, list, float, int]:
        """One batch: (outputs, targets on the device, loss summed over its samples, samples)."""
        self.heartbeat = time.perf_counter()
        inputs, targets = _to_device(inputs, self.device), _to_device(targets, self.device)
        outputs = self.network(inputs)
        user_code.check_outputs(outputs, self.model.path)
        n = data.batch_length(inputs, targets)
        loss = self.socket.criterion(outputs, targets)
        if type(loss) is dict:
            loss = user_code.split_loss(loss, self.model.path)[0]
        return [o.detach() for o in outputs], targets, float(loss) * n, n

    def _metrics(self, mode: str, outputs: list, targets: list, loss_sum: float, count: int) -> dict[str, float]:
        # Socket.metrics gets host tensors, as on a CPU: the 2018 metrics call .numpy(); one copy an epoch.
        metrics = user_code.call_user(f"computing Socket.metrics on the {mode} set{self._sanity}", self.socket.metrics,
                                      _to_host(outputs), _to_host(targets))
        return self._checked_metrics(metrics, loss_sum, count)

    def _checked_metrics(self, metrics: Any, loss_sum: float, count: int) -> dict[str, float]:
        result = user_code.metric_values(metrics, self.model.path)
        result.setdefault("loss", loss_sum / max(1, count))
        if self.config.monitor not in result:
            raise ScorchError(f"--monitor {self.config.monitor}: the validation metrics are {sorted(result)}; pick one of them")
        return result

    def _evaluate_streaming(self, mode: str, loader: DataLoader, max_iterations: int) -> dict[str, float]:
        """All ranks: each rank its share, one batch at a time, through Socket.metric_state; the states summed
        over batches and ranks (scorch/streaming.py), then Socket.metrics_from_state. Memory: one batch."""
        state = streaming.StreamingState()
        for i, (inputs, targets) in enumerate(self._batches(mode, loader)):
            if 0 <= max_iterations <= i:
                break
            outputs, targets, loss, n = self._evaluate_batch(inputs, targets)
            batch = user_code.call_user(f"computing Socket.metric_state on the {mode} set{self._sanity}",
                                        self.socket.metric_state, outputs, targets)
            user_code.check_metric_state(batch, self.model.path)
            state.add({**batch, streaming.LOSS_SUM: loss, streaming.COUNT: n}, self.device)
        total = streaming.reduce_sums(self.dist, state.sums)
        loss_sum, count = float(total.pop(streaming.LOSS_SUM, 0.0)), int(total.pop(streaming.COUNT, 0))
        finish = getattr(self.socket, "metrics_from_state", None)
        metrics = total if finish is None else user_code.call_user(
            f"computing Socket.metrics_from_state on the {mode} set{self._sanity}", finish, total)
        return self._checked_metrics(metrics, loss_sum, count)

    def _evaluate_gathered(self, mode: str, loader: DataLoader, max_iterations: int) -> dict[str, float]:
        """All ranks: each rank's share, batch by batch, gathered to rank 0 alone (dataset order restored), so
        Socket.metrics sees the whole set once as one process would; rank 0 broadcasts the metrics.

        A rank other than 0 holds one batch at a time (O(batch) memory, not the set), and each batch
        travels once, to rank 0 (O(set) bytes across the job, not N x set). Every rank takes part in as
        many gathers as rank 0 has batches (the largest share): a rank whose share is done sends None."""
        share = math.ceil(len(loader.dataset) / self.dist.size)  # rank 0's, the largest (rank r: r, r+N, ...)
        rounds = math.ceil(share / loader.batch_size)
        rounds = min(rounds, max_iterations) if max_iterations >= 0 else rounds
        order, batches = list(loader.sampler), self._batches(mode, loader)
        shares: list = []  # rank 0: (dataset indices, outputs, targets) of every batch of every rank
        done = 0
        for i in range(rounds):
            piece = None
            batch = next(batches, None) if done == i else None
            if batch is not None:
                outputs, _, loss, n = self._evaluate_batch(*batch)
                start = i * loader.batch_size
                piece = (order[start : start + n], _to_host(outputs), _to_host(batch[1]), loss, n)
                done += 1
            gathered = self.dist.gather_object(piece)
            if gathered is not None:
                shares += [p for p in gathered if p is not None]

        def metrics() -> dict[str, float]:
            index = torch.tensor([i for share in shares for i in share[0]]).argsort()

            def whole(parts: tuple) -> Any:  # one tensor if every batch concatenates, else one value per sample
                joined = data.join(list(parts))
                return joined[index] if isinstance(joined, torch.Tensor) else [joined[i] for i in index.tolist()]

            return self._metrics(mode, [whole(parts) for parts in zip(*(share[1] for share in shares))],
                                 [whole(parts) for parts in zip(*(share[2] for share in shares))],
                                 sum(share[3] for share in shares), sum(share[4] for share in shares))

        return share_from_rank_zero(self.dist, metrics)

    @torch.no_grad()
    def test_inference(self, epoch: int, batches: int = -1, keep: bool = True) -> None:
        """Socket.process on the test set's batches (rank 0); its results go to the callbacks as epoch `epoch`'s
        (`keep`), or are only checked. `batches`: at most this many (-1: --max-test-iterations)."""
        loader = self.loaders.get("test")
        batches = self.config.max_test_iterations if batches < 0 else batches
        if loader is None or not self.model.has_process or batches == 0 or not self.dist.is_global_zero:
            return  # its results go to TensorBoard, which rank 0 alone writes
        self.network.eval()
        self.phase = "running test inference"
        for i, (inputs, _) in enumerate(self._batches("test")):
            self.heartbeat = time.perf_counter()
            if 0 <= batches <= i:
                break
            inputs = _to_device(inputs, self.device)
            outputs = self.network(inputs)
            when = self._sanity or f" after epoch {epoch + 1} (its checkpoint is saved)"
            result = user_code.call_user(f"running Socket.process on test batch {i + 1}{when}", self.socket.process,
                                         inputs, outputs)
            if not keep:
                user_code.check_processed(result, self.model.path)
                continue
            for callback in self.callbacks:
                callback.processed(epoch, i, result)

    # -- control --------------------------------------------------------------------------

    def agree(self, window: list[torch.Tensor] = ()) -> bool:
        """All ranks: agree on pending requests and NaNs; apply them; True if training must stop now.

        One allreduce (max) of a few int64s, the same size at any number of ranks: one 0/1 slot per
        request kind (control.KINDS), the first NaN/inf any rank saw (negated, so max picks the
        smallest key: the earliest step, then the lowest rank), and rank 0's stride to the next
        agreement. A NaN/inf ends the run here, on every rank; the losses of `window` not yet read are
        looked at first (the gradient allreduce has already synced the device), so the step named is
        the first bad one whichever rank had it."""
        if window and self._nonfinite == NO_NONFINITE:
            self._check_finite(torch.stack(window).double())
        step, when = self._last_agreement
        now = time.perf_counter()
        self._last_agreement = (self.step, now)
        stride = 0
        if self.dist.is_global_zero:  # the next one SYNC_SECONDS on at rank 0's pace, the same step on every rank
            pace = (now - when) / max(1, self.step - step)
            stride = max(1, min(self.sync_max_steps, int(SYNC_SECONDS / max(pace, 1e-6))))
        own = self.control.take()
        slots = torch.tensor([*request_flags(own), -self._nonfinite, stride], dtype=torch.int64)
        agreed = self.dist.allreduce(slots, "max").tolist()
        self.figures["collective_wait"] = time.perf_counter() - now  # how long this rank waited for the others
        if -agreed[-2] != NO_NONFINITE:  # every rank stops here, naming the first NaN/inf any rank saw
            raise NonFiniteLoss(self._nonfinite_message(-agreed[-2]))
        self._next_agreement = self.step + agreed[-1]
        requests = agreed_requests(agreed[: len(KINDS)], own)
        if not requests:
            return False
        self.apply_requests(requests)
        return self.stop_status is not None and not self.stop_after_epoch

    def apply_requests(self, requests: list[Request]) -> None:
        """Apply checkpoint/stop requests (every rank, same step)."""
        for req in requests:
            reason = req.source
            if req.command == "checkpoint":
                self.save([(ckpt.LAST, reason)])
            elif req.command == "stop":
                self.stop_status = "preempted" if req.source == "signal" else "stopped"
                self.stop_reason = {"signal": "preemption signal", "interrupt": "interrupted (Ctrl-C)"}.get(
                    req.source, "stop requested")
                if req.after_epoch:
                    self.stop_after_epoch = True
                else:
                    self.save([(ckpt.LAST, reason)])
            self.emit(Command(id=req.id, command=req.command, status="applied", after_epoch=req.after_epoch,
                              reason=f"at epoch {self.epoch + 1}, step {self.step}"))

    def _sample_system(self, step_time: float, data_time: float) -> None:
        """This rank's CPU/RAM/GPU figures: emitted now with one rank; with several, the per-rank
        channel's thread samples them and sends them with these two."""
        if self.dist.size == 1:
            self.emit(System(ranks=[self.stats.sample(step_time=step_time, data_time=data_time)]))
        else:
            self.figures.update(step_time=step_time, data_time=data_time)

    def rank_figures(self) -> dict:
        """What this rank's channel thread sends besides CPU/RAM/GPU (read on that thread)."""
        return {"step": self.step, "phase": self.phase, **self.figures}

    def _take_window(self, window: list[torch.Tensor]) -> float:
        """Add a window of per-step losses to the epoch's; its mean. A NaN/inf among them ends the run."""
        losses = torch.stack(window).double()
        total = losses.sum()
        self._epoch_loss += total
        mean = total.item() / len(window)
        if not math.isfinite(mean):
            self._check_finite(losses)
        return mean

    def _check_finite(self, losses: torch.Tensor) -> None:
        """The first NaN/inf among the latest `losses` ends the run: at once with one rank; with
        several, noted here and ended on every rank at the next agreement."""
        if bool(torch.isfinite(losses).all()):
            return
        bad = int((~torch.isfinite(losses)).nonzero()[0])
        value = losses[bad].item()
        step = self.epoch_step - len(losses) + bad + 1
        if self.dist.size == 1:
            raise NonFiniteLoss(self._nonfinite_message(_nonfinite_key(step, 0, value), one_rank=True))
        self._nonfinite = min(self._nonfinite, _nonfinite_key(step, self.dist.rank, value))

    def _nonfinite_message(self, key: int, one_rank: bool = False) -> str:
        step, rank, value = key >> 22, (key >> 2) & (2**20 - 1), ("nan", "inf", "-inf")[key & 3]
        where = "" if one_rank else f" on rank {rank}"
        return (f"loss became {value} at epoch {self.epoch + 1}, step {step}{where}; the last good checkpoint is kept. "
                "Lower the learning rate, check the data, or pass --on-nan skip to skip such batches")

    def _loss_everywhere(self, loss: torch.Tensor) -> float:
        """All ranks: this step's loss averaged over ranks; NaN/inf if it is on any rank (so all skip alike)."""
        value = loss.detach().double().reshape(1).cpu()
        return float(self.dist.allreduce(value, "sum")) / self.dist.size

    def install_signal_handlers(self) -> dict:
        """SIGTERM/SIGUSR1 (preemption) and SIGINT (Ctrl-C) become stop requests; returns the old handlers."""
        def preempt(signum: int, frame: Any) -> None:
            self.control.request("stop", id=signal.Signals(signum).name, source="signal")
            signal.signal(signal.SIGTERM, die_now)
            signal.signal(signal.SIGUSR1, die_now)

        def die_now(signum: int, frame: Any) -> None:
            # A second preemption signal: the cluster will not wait. Atomic writes keep the last checkpoint whole.
            os.write(2, f"scorch-train: second {signal.Signals(signum).name}: exiting now; the last checkpoint is intact\n".encode())
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

        def interrupt(signum: int, frame: Any) -> None:
            signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C interrupts at once
            self.control.request("stop", id="SIGINT", source="interrupt")

        old = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)}
        signal.signal(signal.SIGTERM, preempt)
        signal.signal(signal.SIGUSR1, preempt)
        signal.signal(signal.SIGINT, interrupt)
        return old

    # -- state ----------------------------------------------------------------------------

    def state_dict(self) -> dict:
        scheduler = getattr(self.socket, "scheduler", None)
        return {
            "epoch": self.epoch,  # 2018 key: epochs completed (the next one to run, 0-based)
            "model_state": self.network.state_dict(),
            "optimizer_state": self.socket.optimizer.state_dict(),
            "metrics": self._last_metrics,
            "scheduler_state": scheduler.state_dict() if scheduler is not None else None,
            "step": self.step,
            "epoch_step": self.epoch_step,
            "epoch_loss": float(self._epoch_loss.item()),
            "rng": _rng_state(),
            "monitor": self.monitor.state_dict(),
            "scaler_state": self.scaler.state_dict(),
            "world_size": self.dist.size,
            "config": self.config.to_dict(),
            "scorch_version": 1,
        }

    def load_state_dict(self, state: dict) -> None:
        if "model_state" in state:  # ranks other than 0 get no weights here: broadcast_state brings them
            self.network.load_state_dict(state["model_state"])
            self.socket.optimizer.load_state_dict(state["optimizer_state"])
        scheduler = getattr(self.socket, "scheduler", None)
        if scheduler is not None and state.get("scheduler_state") is not None:
            scheduler.load_state_dict(state["scheduler_state"])
        self.epoch = state["epoch"]
        self.step = state.get("step", 0)
        self.epoch_step = state.get("epoch_step", 0)
        self._epoch_loss.fill_(state.get("epoch_loss", 0.0))
        if state.get("monitor"):
            self.monitor.load_state_dict(state["monitor"])
        if state.get("scaler_state"):
            self.scaler.load_state_dict(state["scaler_state"])
        if state.get("rng"):
            _set_rng_state(state["rng"])
        self._last_metrics = state.get("metrics") or {}

    def save(self, names: list[tuple[str, str]], background: bool = False) -> None:
        """Write this state as the checkpoints `names`, (file name, reason) pairs, atomically (rank 0 only),
        and announce each: the first is written, the others become links to it.

        `background`: the durable half (fsync, rename, links, announcements) finishes on a thread while
        training goes on; the next save, and the end of the run, wait for it (`settle_saves`). The state
        itself is written here, so a full disk still stops the run at once, and it cannot change meanwhile.
        """
        if not self.dist.is_global_zero or self.run is None or not names:
            return
        self.settle_saves()
        (name, reason), links = names[0], names[1:]
        path = os.path.join(self.run.checkpoints, name)
        self.phase, self.heartbeat = f"saving {path}", time.perf_counter()
        try:
            pending = ckpt.start_save(self.state_dict(), path)
        except OSError as exc:
            self._save_failed(exc, path)
            self.save(links, background)  # each name tries on its own
            return
        finish = functools.partial(self._finish_save, pending, reason, links, self.epoch, self.step)
        if not background:
            finish()
            return
        if self._committer is None:
            from concurrent.futures import ThreadPoolExecutor

            self._committer = ThreadPoolExecutor(1, thread_name_prefix="scorch-checkpoint")
        self._committing = self._committer.submit(finish)

    def _finish_save(self, pending: ckpt.Pending, reason: str, links: list[tuple[str, str]], epoch: int, step: int) -> None:
        try:
            pending.commit()
        except OSError as exc:
            for path in [pending.path] + [os.path.join(self.run.checkpoints, name) for name, _ in links]:
                self._save_failed(exc, path)
            return
        self.emit(CheckpointSaved(path=pending.path, reason=reason, epoch=epoch, step=step))
        for name, why in links:
            path = os.path.join(self.run.checkpoints, name)
            try:
                ckpt.atomic_link(pending.path, path)
            except OSError as exc:
                self._save_failed(exc, path)
                continue
            self.emit(CheckpointSaved(path=path, reason=why, epoch=epoch, step=step))

    def _save_failed(self, exc: OSError, path: str) -> None:
        message = ckpt.describe_write_error(exc, path)
        if self.config.on_save_error == "stop":
            raise ScorchError(message + "; free space or fix the folder, then --resume the run (or pass --on-save-error "
                              "continue to train on without checkpoints)", exit_code=5) from None
        self.log(message + "; training goes on (--on-save-error continue)", level="error")

    def settle_saves(self, timeout: float | None = None) -> None:
        """Wait for a checkpoint finishing in the background; its failure is raised here."""
        committing, self._committing = self._committing, None
        if committing is not None:
            committing.result(timeout)

    def close(self, wait: float = -1) -> None:
        """Flush and close every callback (files, sockets); safe to call twice."""
        if self.watchdog is not None:
            self.watchdog.stop()
        self.close_rank_channel()
        if not self._emit_lock.acquire(timeout=wait):  # no emit from another thread may still be using them
            return
        callbacks, self.callbacks = self.callbacks, []
        self._emit_lock.release()
        if self._committer is not None:
            self._committer.shutdown(wait=False)
        for callback in callbacks:
            callback.close()
        self.stats.close()

    def close_rank_channel(self) -> None:
        """This rank says `bye` (it ended: not silent); rank 0 stops listening (no `system` after run_ended)."""
        reporter, watch, self.reporter, self.rank_watch = self.reporter, self.rank_watch, None, None
        if reporter is not None:
            reporter.close()
        if watch is not None:
            watch.close()

    def end(self, status: str, reason: str, wait: float = -1) -> None:
        self.close_rank_channel()
        try:  # a checkpoint still finishing lands before run_ended
            self.settle_saves(None if wait < 0 else wait)
        except Exception as exc:  # the run already ends for another reason; this one is told, not raised
            self.log(exc.message if isinstance(exc, ScorchError) else f"checkpoint: {type(exc).__name__}: {exc}", level="error")
        self.emit(RunEnded(status=status, reason=reason, epoch=self.epoch, step=self.step), wait=wait)
        if self.run is not None and self.dist.is_global_zero:
            try:
                self.run.write_info(state=status, reason=reason, ended=time.time())
            except OSError as exc:  # a full disk: why the run ended matters more than run.json's state
                import sys

                print(f"scorch-train: warning: could not record the end in {self.run.info_path}: {exc.strerror}", file=sys.stderr)

    # -- small helpers --------------------------------------------------------------------

    def _batches(self, mode: str, loader: DataLoader | None = None) -> Any:
        """The loader's batches; a batch that fails to load is explained (which item, why) and ends the run."""
        loader = loader or self.loaders[mode]
        batches = iter(loader)
        done = 0
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except ScorchError:
                raise
            except Exception as exc:
                size = loader.batch_size
                indices = list(loader.sampler)[done * size : (done + 1) * size]
                raise user_code.explain_batch_failure(exc, loader.dataset, indices, self.config.dataset, mode) from exc
            yield data.as_inputs_targets(batch)
            done += 1

    def _steps_in_epoch(self) -> int:
        """Training batches this rank takes in an epoch (optimizer steps: this / --accumulate)."""
        cfg = self.config
        return batches_per_epoch(len(self.datasets["train"]), cfg.batch_size, self.dist.size, cfg.max_train_iterations,
                                 cfg.accumulate)

    def _epoch_done(self) -> bool:
        return self.epoch_step >= self._steps_in_epoch()

    def _lr(self) -> float:
        return float(self.socket.optimizer.param_groups[0]["lr"])


def _nonfinite_key(epoch_step: int, rank: int, value: float) -> int:
    """A NaN/inf as one int64 that orders by (step in the epoch, rank): what the agreement reduces.
    Ranks agree within an epoch, so the epoch needs no bits; ranks below 2**20, steps below 2**40."""
    kind = 0 if math.isnan(value) else 1 if value > 0 else 2
    return (epoch_step << 22) | (min(rank, 2**20 - 1) << 2) | kind


def _pick_device(choice: str, local_rank: int) -> torch.device:
    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ScorchError("--device cuda: no CUDA device is visible (torch.cuda.is_available() is False); use --device cpu")
    torch.cuda.set_device(local_rank % torch.cuda.device_count())
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resume_config(config: TrainConfig, explicit: set[str], engine: Any = None) -> tuple[TrainConfig, dict | None, str | None]:
    """With --resume, the saved config with the flags given now on top; plus the checkpoint and its path.

    All ranks. Rank 0 alone reads the file (on several hosts only it may have it) and hands the
    others all but the weights and optimizer state, which `broadcast_state` sends after."""
    if not config.resume:
        return config, None, None

    def read() -> tuple[str, dict]:
        path = ckpt.resolve_resume(config.resume)
        return path, ckpt.load(path)

    def without_weights(found: tuple[str, dict]) -> tuple[str, dict]:
        return found[0], {k: v for k, v in found[1].items() if k not in ("model_state", "optimizer_state")}

    path, state = share_from_rank_zero(engine or Single(), read, for_others=without_weights)
    saved = dict(state.get("config") or {})
    saved.update({k: v for k, v in config.to_dict().items() if k in explicit})
    saved["resume"] = config.resume
    if "run_dir" not in explicit:
        folder = os.path.dirname(os.path.dirname(os.path.abspath(path)))
        saved["run_dir"] = folder if os.path.basename(os.path.dirname(path)) == "checkpoints" else ""
    return TrainConfig.from_dict(saved), state, path


def build(config: TrainConfig, explicit: set[str] = frozenset(), engine: Any = None) -> Trainer:
    """Everything a run needs, from its config: engine, run folder, user code, callbacks."""
    from scorch import dist as dist_module
    from scorch.callbacks.console import ConsoleProgress
    from scorch.callbacks.jsonl import JsonlLog
    from scorch.run_folder import default_name

    dist = engine or dist_module.create(config.backend, config.device)
    config, state, resumed_path = resume_config(config, set(explicit), dist)
    if config.seed < 0:
        config.seed = dist.broadcast_object(random.SystemRandom().randrange(2**31))
    if config.accumulate < 1:
        raise ScorchError(f"--accumulate {config.accumulate}: must be at least 1")
    if config.batch_size < 1:
        raise ScorchError(f"--batch-size {config.batch_size}: must be at least 1")
    if config.epochs < 1:
        raise ScorchError(f"--epochs {config.epochs}: must be at least 1")
    check_config(config)
    notices = []  # said once the run has started
    if config.mode == "auto":  # the monitored name decides; recorded resolved, so a resume and the dashboard agree
        config.mode = better_mode(config.monitor)
        if config.mode == "min":
            notices.append(f"--monitor {config.monitor}: smaller is better for a name like this, so best.pt and early "
                           "stopping keep the smallest (--mode min, chosen from the name; pass --mode max to change)")
    if config.telemetry and dist.is_global_zero:
        from scorch.telemetry.publisher import check_bind

        check_bind(config.bind, config.curve_keys)  # before the run folder exists: a wrong flag leaves nothing behind
    if not config.run_dir:
        config.run_dir = dist.broadcast_object(os.path.join("runs", default_name(config.model)))
    _seed_everything(config.seed)
    device = _pick_device(config.device, dist.local_rank)

    # The data first (the Socket may size its schedule from the run's facts, Socket.scorch); a wrong path, either first.
    user_code.check_file(config.model, "--model")
    datasets = user_code.load_datasets(config.dataset, config.dataset_path, config.dataset_args)
    facts = RunFacts(epochs=config.epochs, batch_size=config.batch_size, accumulate=config.accumulate, world_size=dist.size,
                     rank=dist.rank, steps_per_epoch=batches_per_epoch(len(datasets["train"]), config.batch_size, dist.size,
                                                                       config.max_train_iterations, config.accumulate)
                     // config.accumulate)
    _seed_everything(config.seed)  # the Network's initial weights stay what a seed gave before the data moved first
    model = user_code.load_model(config.model, config.model_args, facts)
    if config.valid == "streaming" and not callable(getattr(model.socket, "metric_state", None)):
        raise ScorchError(f"--valid streaming: {config.model}: Socket has no metric_state(outputs, targets); add one that "
                          "returns a batch's sums and counts, e.g. {'correct': (out.argmax(1) == y).sum(), 'seen': len(y)}, "
                          "and metrics_from_state(state) to turn their totals into metrics (README: streaming validation)")

    run = None
    callbacks: list[Callback] = []
    if dist.is_global_zero:
        run = RunFolder(config.run_dir)
        run.create(reuse=bool(resumed_path))
        callbacks.append(JsonlLog(run.events_path))
        if config.tensorboard:
            from scorch.callbacks.tensorboard import TensorBoardLog

            callbacks.append(TensorBoardLog(run.tensorboard))
        import sys

        callbacks.append(ConsoleProgress(headless=config.headless or not sys.stdout.isatty(), interval=config.log_interval))
    trainer = Trainer(config, model, datasets, dist, run, callbacks, Control(), device)
    trainer.hosts = dist.hosts()
    trainer.notices += notices
    if run is not None:
        trainer.seq = run.last_seq()
    if config.checkpoint:
        def load_weights() -> None:  # rank 0; broadcast_state hands them on
            weights = ckpt.load(config.checkpoint)
            try:
                trainer.network.load_state_dict(weights["model_state"])
            except RuntimeError as exc:
                raise ScorchError(f"-c/--checkpoint {config.checkpoint}: weights do not fit this Network: "
                                  f"{str(exc).splitlines()[0]}") from None

        share_from_rank_zero(dist, load_weights)
    if state is not None:
        trainer.load_state_dict(state)
        trainer.resumed_from = resumed_path
    dist.broadcast_state(trainer.network, trainer.socket.optimizer)
    if run is not None:
        run.write_info(name=os.path.basename(run.path), config=config.to_dict(), world_size=dist.size, hosts=trainer.hosts,
                       backend=dist.name, pid=os.getpid(), started=time.time(), state="running", device=str(device))
        if config.telemetry:  # live stream + control; writes .token, then the endpoints into run.json
            from scorch.telemetry.publisher import Publisher
            from scorch.watchdog import activity

            try:
                # The publisher thread logs `command` events; it never waits long for the loop's lock.
                emit = lambda event: trainer.emit(event, wait=2.0)  # noqa: E731
                loop = threading.current_thread()  # the heartbeat says what this thread is doing (see watchdog.activity)
                trainer.callbacks.append(Publisher(run, trainer.control, emit, config.bind, config.curve_keys,
                                                   progress=lambda: activity(trainer, loop)))
            except BaseException:
                trainer.close()  # e.g. a busy port: the other sinks (TensorBoard's thread) must not outlive the start
                raise
    if dist.size > 1:
        open_rank_channel(trainer)
    return trainer


def open_rank_channel(trainer: Trainer) -> None:
    """All ranks: rank 0 opens the per-rank channel's PULL (where --bind and --curve-keys allow) and hands its
    endpoint and secret to every rank in one broadcast; each rank then reports over it from a thread."""
    from scorch.telemetry.publisher import load_server_keys, parse_bind
    from scorch.telemetry.ranks import RankReporter, RankWatch

    config, dist, handout = trainer.config, trainer.dist, None
    if dist.is_global_zero:
        keys = load_server_keys(config.curve_keys) if config.curve_keys else None
        host = parse_bind(config.bind)[0] if keys is not None else "127.0.0.1"
        emit = lambda event: trainer.emit(event, wait=2.0)  # noqa: E731 - from the channel's thread
        trainer.rank_watch = RankWatch(dist.size, trainer.hosts, emit, host, keys)
        handout = trainer.rank_watch.handout
    handout = dist.broadcast_object(handout)
    if dist.rank not in handout["unreachable"]:
        trainer.reporter = RankReporter(handout, dist.rank, trainer.rank_figures, trainer.stats)
