"""The training loop. Read `Trainer.fit` top to bottom: train, validate, test, checkpoint, stop?

The parts it drives each own their state (README, "Design"):
  scorch/emitter.py    numbers the events and hands them to the sinks (callbacks: JSONL, TensorBoard, console, telemetry)
  scorch/agreement.py  what the ranks settle together every few steps: control requests, steering, NaNs, system figures
  scorch/steering.py   pause/resume, lr scale, patience, timed checkpoints: the state and the parts it steers
  scorch/saver.py      which checkpoints when, the background commit, what a failed write does
  scorch/batches.py    which samples each rank sees, collate, loaders
  scorch/watchdog.py   reads `LoopState` (beat, phase) from its own thread
Control requests (dashboard, scorch-ctl, signals, early stopping, NaN) and steering are applied at step
boundaries, the same step on every rank; a pause holds the loop there (`_hold`). `build()` at the end makes a Trainer from a TrainConfig.
"""

from __future__ import annotations

import math
import os
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from scorch import checkpoint as ckpt
from scorch import data, events_log, streaming, user_code
from scorch.agreement import SYNC_MAX_STEPS, SYNC_SECONDS, SYSTEM_EVENT_INTERVAL, Agreed, Agreement, alone  # noqa: F401 (their old home)
from scorch.batches import EpochSampler, collate, explained, make_loader, to_device, to_host  # noqa: F401 (collate: its old home)
from scorch.callbacks import Callback, Guarded
from scorch.config import TrainConfig
from scorch.dist import Single, scale_learning_rate, share_from_rank_zero
from scorch.emitter import Emitter
from scorch.errors import RunComplete, ScorchError
from scorch.fileio import WRITE_ERRORS, write_error, write_failure
from scorch.gradients import GradientClip
from scorch.monitor import Monitor, better_mode
from scorch.precision import mixed_precision
from scorch.run_folder import RunFolder
from scorch.saver import Names, Saver
from scorch.schedules import RunFacts, Schedule, batches_per_epoch
from scorch.steering import Steerer
from scorch.telemetry.control import Control, Request
from scorch.telemetry.protocol import Command, EpochEnd, Event, RunEnded, RunStarted, Step

STEP_EVENT_INTERVAL = 0.25  # seconds between `step` events: a few per second
# With several ranks, validation batches go to rank 0 this many at a time: few collectives (each costs a round
# trip: one a batch made validation of 1,024 samples 25x slower at 2 ranks, bench/scaling.py --collectives), and
# a rank other than 0 never holds more than these batches.
GATHER_BATCHES = 16
HOLD_SECONDS = 1.0  # a paused loop looks for resume/stop this often (with several ranks: one agreement each time)


@dataclass(slots=True)
class LoopState:
    """Where the loop is. The training thread writes it; the watchdog reads it from its own thread
    (`beat`: the perf_counter of the last sign of progress, `phase`: what the loop is doing)."""

    epoch: int = 0  # the epoch in progress (0-based)
    epoch_step: int = 0  # batches done in this epoch
    step: int = 0  # optimizer steps done in the run
    beat: float = field(default_factory=time.perf_counter)
    phase: str = "starting"
    epoch_loss: Any = None  # this epoch's summed loss, a float64 tensor on the device (no sync per step)
    metrics: dict = field(default_factory=dict)  # the last validation's, saved with the checkpoint
    sanity: str = ""  # while the sanity pass runs: what error messages add to say so
    held: float = 0.0  # seconds the last pause held the loop, until the loop takes it out of its timings


@dataclass(slots=True)
class Stepping:
    """What an optimizer step uses besides the gradients: --amp's autocast and scaler, --clip-grad-*, the
    Socket's scheduler (scorch/precision.py, scorch/gradients.py, scorch/schedules.py)."""

    optimizer: Any  # the Socket's, wrapped by the engine (Horovod's DistributedOptimizer, or as it is)
    autocast: Any
    scaler: Any
    clip: Any  # GradientClip or None
    schedule: Schedule
    # The Network and every module on the way down to a trained one: `training` True while training (their own
    # forward may branch on it), without putting their frozen parts (BatchNorm, dropout) in training mode.
    holds_training: list


@dataclass(slots=True)
class Stop:
    """A stop decided: `status` stopped|preempted|early_stopped; `after_epoch`: finish the epoch first."""

    status: str
    reason: str
    after_epoch: bool = False


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Trainer:
    """The loop and the run's state; `fit()` runs it. Built by `build`."""

    def __init__(self, config: TrainConfig, model: user_code.UserModel, datasets: dict, dist: Any,
                 run: RunFolder | None, callbacks: list[Callback], control: Control, device: torch.device) -> None:
        self.config, self.model, self.dist, self.run, self.device = config, model, dist, run, device
        model.network.to(device)
        self.emitter = Emitter(callbacks)
        self.agreement = Agreement(dist, control, self.emit, lambda: (self.state.step, self.state.phase))
        self.saver = Saver(run.checkpoints if run else None, config.dump_period, config.keep, config.on_save_error,
                           self.emit, self.log)
        self.state = LoopState(epoch_loss=torch.zeros((), dtype=torch.float64, device=device))
        self.stop: Stop | None = None
        self.monitor = Monitor(config.monitor, config.mode, config.early_stop_patience, config.min_delta)
        self.stepping = self._stepping()
        # pause, lr scale, patience, timed checkpoints (rank 0, the writer, keeps the timer)
        self.steerer = Steerer(model.socket.optimizer, self.stepping.schedule, self.monitor, control, timed=run is not None)
        self.loaders = self._loaders(datasets)
        # For run_started, and what the user should hear at the start (choices made for them).
        self.started: dict[str, Any] = {"hosts": [os.uname().nodename], "resumed_from": None, "notices": []}
        self.watchdog: Any = None
        self.preempted_by = ""  # the first preemption signal this process got (SIGUSR1 requeues a SLURM job)

    def _stepping(self) -> Stepping:
        """The Socket's optimizer over train_modules alone: everything else is frozen (no grad, eval mode)."""
        cfg = self.config
        train_params = {id(p) for p in self.socket.train_modules.parameters()}
        for p in self.network.parameters():
            if id(p) not in train_params:
                p.requires_grad_(False)
        trained = {id(m) for m in self.socket.train_modules.modules()}
        holds = [m for m in self.network.modules() if id(m) not in trained and any(id(sub) in trained for sub in m.modules())]
        named = [(n, p) for n, p in self.network.named_parameters() if id(p) in train_params]
        optimizer = self.dist.wrap_optimizer(self.socket.optimizer, named, backward_passes=cfg.accumulate)
        if cfg.scale_lr and self.dist.size > 1:  # N times the batch: the usual advice is N times the learning rate
            scale_learning_rate(self.socket.optimizer, self.scheduler, self.dist.size)
        autocast, scaler = mixed_precision(cfg.amp, self.device)
        clip = GradientClip.from_config(cfg, [p for _, p in named], scaler, optimizer)
        return Stepping(optimizer, autocast, scaler, clip, Schedule(self.socket, self.model.path), holds)

    def _loaders(self, datasets: dict) -> dict[str, DataLoader]:
        cfg, dist = self.config, self.dist
        train = EpochSampler(len(datasets["train"]), not cfg.no_shuffle, cfg.seed, dist.rank, dist.size)
        loaders = {"train": self._loader(datasets["train"], train)}
        for mode in ("valid", "test"):
            if len(datasets[mode]):
                # Validation: each rank its share, gathered back whole. Test inference: rank 0 (the writer), all of it.
                rank, size = (dist.rank, dist.size) if mode == "valid" else (0, 1)
                loaders[mode] = self._loader(datasets[mode], EpochSampler(len(datasets[mode]), False, 0, rank, size, pad=False))
        return loaders

    def _loader(self, dataset: Any, sampler: Sampler) -> DataLoader:
        cfg = self.config
        return make_loader(dataset, sampler, cfg.batch_size, cfg.workers, cfg.seed, self.device, cfg.dataset)

    # The user's parts, by their 2018 names.
    network = property(lambda self: self.model.network)
    socket = property(lambda self: self.model.socket)
    scheduler = property(lambda self: getattr(self.model.socket, "scheduler", None))
    train_sampler = property(lambda self: self.loaders["train"].sampler)
    datasets = property(lambda self: {mode: loader.dataset for mode, loader in self.loaders.items()})  # the non-empty ones
    # Where they lived before the parts had owners (tests, bench, colleagues' code).
    callbacks = property(lambda self: self.emitter.callbacks)
    control = property(lambda self: self.agreement.control)  # requests in: dashboard, scorch-ctl, signals
    optimizer = property(lambda self: self.stepping.optimizer)
    schedule = property(lambda self: self.stepping.schedule)
    epoch = property(lambda self: self.state.epoch)
    step = property(lambda self: self.state.step)

    # -- events ---------------------------------------------------------------------------

    def emit(self, event: Event, wait: float = -1) -> Event | None:
        """Number the event and hand it to every callback (none on ranks other than 0); see Emitter.emit."""
        return self.emitter.emit(event, wait)

    def log(self, message: str, level: str = "warning") -> None:
        self.agreement.tell(level, message)  # a rank other than 0: rank 0 shows it
        self.emitter.log(message, level)

    # -- the run --------------------------------------------------------------------------

    def fit(self) -> str:
        """Train from the epoch reached to `config.epochs`; returns the final status."""
        cfg, state = self.config, self.state
        if cfg.stall_timeout > 0:
            from scorch.watchdog import StallWatchdog

            self.watchdog = StallWatchdog(state, self.dist.rank, cfg.stall_timeout, self._stalled)
            self.watchdog.start()
        try:
            self.emit(self._run_started())  # inside: a disk already full fails here, and the end is still recorded
            for notice in self.started["notices"]:
                self.log(notice, level="info")
            if self.schedule.warning:
                self.log(self.schedule.warning)
            self.schedule.check_length(cfg.epochs, self._steps_in_epoch() // cfg.accumulate)
            self.sanity_check()
            if self.steerer.now.paused:  # its checkpoint was taken paused: a resume keeps the pause, every rank holds here
                if self.dist.is_global_zero:
                    where = self.run.path if self.run else "RUN_DIR"
                    self.log(f"resumed paused, as the run was when its checkpoint was taken: `scorch-ctl {where} resume` "
                             "(or p in scorch-tui) goes on", level="warning")
                self._hold()
            while state.epoch < cfg.epochs and self.stop is None:
                epoch_start = time.time()
                # Train one epoch; stops requested mid-epoch end it early.
                train_loss = self.train_epoch()
                if self.stop is not None and not self._epoch_done():
                    break
                # Validate over the whole validation set: these numbers pick best.pt and early stopping.
                metrics = state.metrics = self.evaluate("valid", cfg.max_valid_iterations)
                train_metrics = self.evaluate("train", cfg.max_valid_iterations) if cfg.validate_on_train else {}
                improved = self._improved(metrics)
                lr = self._lr()  # the rate this epoch trained at, before the scheduler moves it on
                self.schedule.after_epoch(metrics)
                self.emit(EpochEnd(epoch=state.epoch, step=state.step, train_loss=train_loss, metrics=metrics,
                                   train_metrics=train_metrics, lr=lr, duration=time.time() - epoch_start,
                                   best={"value": self.monitor.best, "epoch": self.monitor.best_epoch}))
                # Checkpoint: the state saved is the state the next epoch starts from.
                state.epoch += 1
                state.epoch_step = 0
                after_epoch = self.stop is not None and self.stop.after_epoch
                last = state.epoch >= cfg.epochs or self.monitor.should_stop or after_epoch
                # fsynced and renamed in the background while the next epoch starts
                self.save(self.saver.due(state.epoch - 1, improved, last), background=True)
                self.saver.prune(state.epoch - 1)
                # Test inference feeds Socket.process (TensorBoard images and texts); after the checkpoint, so a bug
                # in process costs no epoch.
                self.test_inference(state.epoch - 1)
                # Stop early when the monitored metric has stalled (a stop asked to finish the epoch ends here too).
                if self.monitor.should_stop:
                    self.stop = Stop("early_stopped", f"{cfg.monitor} did not improve by more than {cfg.min_delta} for "
                                     f"{cfg.early_stop_patience} epochs (best {self.monitor.best:.6g} at epoch "
                                     f"{self.monitor.best_epoch + 1})")
            self.settle_saves()
        except KeyboardInterrupt:
            self.end("stopped", "interrupted (second Ctrl-C)")
            raise
        except BaseException as exc:
            self.end("failed", why_failed(exc))
            raise
        status, reason = (self.stop.status, self.stop.reason) if self.stop else ("completed", "")
        self.end(status, reason)
        return status

    def _improved(self, metrics: dict) -> bool:
        """Whether the monitored metric improved on the best (best.pt, early stopping); a NaN never does, and says so."""
        value = metrics.get(self.config.monitor, float("nan"))
        improved = self.monitor.update(value, self.state.epoch)
        if math.isnan(value):  # never "best": say so rather than keep quiet about a missing best.pt
            kept = f"best.pt stays at epoch {self.monitor.best_epoch + 1}" if self.monitor.best_epoch >= 0 else "no best.pt yet"
            self.log(f"epoch {self.state.epoch + 1}: the monitored {self.config.monitor} is NaN; it counts as no "
                     f"improvement ({kept})")
        return improved

    def _run_started(self) -> RunStarted:
        cfg = self.config
        return RunStarted(
            name=os.path.basename(self.run.path) if self.run else "", run_dir=self.run.path if self.run else "",
            model=self.model.path, dataset=os.path.abspath(cfg.dataset), epochs=cfg.epochs, start_epoch=self.state.epoch,
            steps_per_epoch=self._steps_in_epoch(), batch_size=cfg.batch_size, world_size=self.dist.size,
            hosts=self.started["hosts"], device=str(self.device), backend=self.dist.name, pid=os.getpid(),
            resumed_from=self.started["resumed_from"], config=cfg.to_dict(), steering=self.steerer.state_dict())

    def train_epoch(self) -> float:
        """One pass over this rank's share of the training set; returns the mean loss."""
        cfg, network, socket, state, agreement = self.config, self.network, self.socket, self.state, self.agreement
        st = self.stepping
        optimizer, autocast, scaler, schedule = st.optimizer, st.autocast, st.scaler, st.schedule
        steps_in_epoch = self._start_epoch()
        window: list[torch.Tensor] = []  # this window's losses, still on the device: no sync per step
        window_start = step_end = time.perf_counter()
        next_event, data_wait = window_start + STEP_EVENT_INTERVAL, 0.0  # data_wait: this window's wait for the loader
        skip_nan, on_cpu, accumulate, checked = cfg.on_nan == "skip", self.device.type == "cpu", cfg.accumulate, False
        schedule_step, grad_norm = (schedule.after_step if schedule.on_step else None), None
        extras: dict[str, Any] = {}  # the Socket's extra per-step scalars, summed over this window
        manual = callable(getattr(socket, "train_step", None))
        optimizer.zero_grad(set_to_none=True)
        for inputs, targets in self._batches("train"):
            if state.epoch_step >= steps_in_epoch:
                break
            data_wait += time.perf_counter() - step_end
            if not on_cpu:
                inputs, targets = to_device(inputs, self.device), to_device(targets, self.device)
            with autocast():
                if manual:  # Socket.train_step zeroes, backpropagates and steps its own optimizers (scorch/manual.py)
                    outputs, loss = [], socket.train_step(inputs, targets)
                else:
                    outputs = network(inputs)
                    loss = socket.criterion(outputs, targets)
            extra = None
            if type(loss) is dict:  # {"loss": what trains, other scalars: logged per step}
                loss, extra = user_code.split_loss(loss, self.model.path)
            if not checked:  # the first batch of an epoch: the user's outputs and loss have the contract's shape
                checked = self._check_first(outputs, loss, manual)
            if skip_nan and not math.isfinite(value := agreement.loss_everywhere(loss)):  # a sync per step, only when asked
                self.log(f"skipped batch at epoch {state.epoch + 1}, step {state.epoch_step + 1}: loss is {value}")
                state.epoch_step += 1
                continue
            if not manual:
                scaler.scale(loss / accumulate if accumulate > 1 else loss).backward()
            window.append(loss.detach())
            if extra:  # summed on the device, read only with the next `step` event
                _add_scalars(extras, extra)
            state.epoch_step += 1
            if state.epoch_step % accumulate:
                continue  # gradients accumulate; no optimizer step, no control at this batch
            if not manual:  # (Socket.train_step stepped its own)
                grad_norm = self._optimizer_step(grad_norm)
            state.step += 1
            # Progress: a few `step` events a second, read from the device only then.
            now = step_end = state.beat = time.perf_counter()
            if now >= next_event or state.epoch_step == steps_in_epoch:
                self._publish(window, now - window_start, data_wait, steps_in_epoch, grad_norm, extras)
                window_start, next_event, data_wait = now, now + STEP_EVENT_INTERVAL, 0.0
            if schedule_step is not None:  # OneCycleLR, CyclicLR, warmups: every optimizer step (after `step` shows its rate)
                schedule_step()
            # Control: checkpoint/stop requests and steering, the same step on every rank.
            if agreement.max_steps:
                if state.step < agreement.next_step:
                    continue
                stop = self.agree(window)
            elif self.control.pending:
                stop = self.apply_requests(self.control.take())
            else:
                continue
            if stop:
                break
            if state.held:  # a pause held the loop: its time is neither step time nor data wait
                window_start, step_end, next_event, state.held = (window_start + state.held, step_end + state.held,
                                                                  next_event + state.held, 0.0)
        return self._end_epoch(window)

    def _optimizer_step(self, grad_norm: Any) -> Any:
        """All ranks: average the gradients, clip them, step and zero them; the norm before clipping (or as it was)."""
        st = self.stepping
        self.dist.average_gradients(st.optimizer)  # all ranks, before the AMP scaler checks them for inf
        if st.clip is not None:  # on the averaged, unscaled gradients (scorch/gradients.py says why)
            grad_norm = st.clip()
        st.scaler.step(st.optimizer)
        st.scaler.update()
        st.optimizer.zero_grad(set_to_none=True)
        return grad_norm

    def _end_epoch(self, window: list[torch.Tensor]) -> float:
        """The epoch's mean loss, the same on every rank; what the ranks must settle is settled first."""
        if window:  # a stop mid-window
            self._take_window(window)
        if self.agreement.max_steps:  # a NaN any rank saw, a request that came late: settled before validation
            self.agree()
        state = self.state
        loss = torch.tensor([state.epoch_loss.item() / max(1, state.epoch_step)], dtype=torch.float64)
        return float(self.dist.allreduce(loss, "mean"))  # ranks saw equal shares: the mean is the epoch's, on every rank

    def _start_epoch(self) -> int:
        """The epoch's data order and modes set (mid-epoch on resume); its number of steps."""
        cfg, state = self.config, self.state
        self.train_sampler.set_epoch(state.epoch, skip=state.epoch_step * cfg.batch_size)
        self.loaders["train"].generator.manual_seed(cfg.seed + state.epoch)
        self.network.eval()  # frozen modules (BatchNorm statistics, dropout) stay as they are
        self.socket.train_modules.train()
        for module in self.stepping.holds_training:  # and the modules holding them say they train, as model code expects
            module.training = True
        if state.epoch_step == 0:
            state.epoch_loss.zero_()
        state.phase, state.held = "training", 0.0
        return self._steps_in_epoch()

    def _check_first(self, outputs: Any, loss: Any, manual: bool) -> bool:
        user_code.check_outputs(outputs, self.model.path)
        user_code.check_loss(loss, self.model.path, manual)
        return True

    def _publish(self, window: list[torch.Tensor], seconds: float, data_wait: float, steps_in_epoch: int,
                 grad_norm: Any, extras: dict) -> None:
        """A `step` event for the steps of `window` (then emptied, with `extras`), and every few seconds the
        system figures."""
        state, steps = self.state, len(window)
        mean = self._take_window(window)
        rate = steps * self.config.batch_size * self.dist.size / max(seconds, 1e-9)
        self.emit(Step(epoch=state.epoch, step=state.step, epoch_step=state.epoch_step,
                       steps_in_epoch=steps_in_epoch, loss=mean, rate=rate, lr=self._lr(),
                       grad_norm=None if grad_norm is None else float(grad_norm),
                       scalars={name: float(total) / steps for name, total in extras.items()}))
        extras.clear()
        self.agreement.sample_system(state.beat, seconds / steps, data_wait / steps)
        window.clear()

    def sanity_check(self) -> None:
        """All ranks: --sanity-batches validation batches through Socket.metrics and one test batch through
        Socket.process before training (Lightning's sanity check). Nothing is logged or kept, and the random
        state is put back, so the run is the one it would be without it."""
        batches, cap = self.config.sanity_batches, self.config.max_valid_iterations
        if batches <= 0:
            return
        rng = _rng_state()
        self.state.sanity = f", in the sanity pass before training ({batches} validation batches; --sanity-batches 0 skips it)"
        try:
            self.evaluate("valid", batches if cap < 0 else min(batches, cap))
            self.test_inference(self.state.epoch, batches=1, keep=False)
        finally:
            self.state.sanity = ""
            _set_rng_state(rng)

    @torch.no_grad()
    def evaluate(self, mode: str, max_iterations: int) -> dict[str, float]:
        """Socket.metrics over the whole `mode` set (all its batches at once), plus mean loss."""
        loader = self.loaders.get(mode) if mode != "train" else self._loader(self.loaders["train"].dataset, EpochSampler(
            len(self.loaders["train"].dataset), False, 0, self.dist.rank, self.dist.size, pad=False))  # type: ignore[arg-type]  # our DataSets have __len__
        if loader is None or max_iterations == 0:
            return {}
        self.network.eval()
        self.state.phase = f"validating on the {mode} set"
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
        outputs = [data.join(list(parts)) for parts in zip(*all_outputs)]
        targets = [data.join(list(parts)) for parts in zip(*all_targets)]
        return self._metrics(mode, outputs, targets, loss_sum, count)

    def _evaluate_batch(self, inputs: list, targets: list) -> tuple[list, list, float, int]:
        """One batch: (outputs, targets on the device, loss summed over its samples, samples)."""
        self.state.beat = time.perf_counter()
        inputs, targets = to_device(inputs, self.device), to_device(targets, self.device)
        outputs = self.network(inputs)
        user_code.check_outputs(outputs, self.model.path)
        n = data.batch_length(inputs, targets)
        loss = self.socket.criterion(outputs, targets)
        if type(loss) is dict:
            loss = user_code.split_loss(loss, self.model.path)[0]
        if not isinstance(loss, torch.Tensor) or loss.dim():  # the sanity pass may be the first to see it
            user_code.check_loss(loss, self.model.path)
        return [o.detach() for o in outputs], targets, float(loss) * n, n

    def _metrics(self, mode: str, outputs: list, targets: list, loss_sum: float, count: int) -> dict[str, float]:
        # Socket.metrics gets host tensors, as on a CPU: the 2018 metrics call .numpy(); one copy an epoch.
        metrics = user_code.call_user(f"computing Socket.metrics on the {mode} set{self.state.sanity}", self.socket.metrics,
                                      to_host(outputs), to_host(targets))
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
            batch = user_code.call_user(f"computing Socket.metric_state on the {mode} set{self.state.sanity}",
                                        self.socket.metric_state, outputs, targets)
            user_code.check_metric_state(batch, self.model.path)
            state.add({**batch, streaming.LOSS_SUM: loss, streaming.COUNT: n}, self.device)
        total = streaming.reduce_sums(self.dist, state.sums)
        loss_sum, count = float(total.pop(streaming.LOSS_SUM, 0.0)), int(total.pop(streaming.COUNT, 0))
        finish = getattr(self.socket, "metrics_from_state", None)
        metrics = total if finish is None else user_code.call_user(
            f"computing Socket.metrics_from_state on the {mode} set{self.state.sanity}", finish, total)
        return self._checked_metrics(metrics, loss_sum, count)

    def _evaluate_gathered(self, mode: str, loader: DataLoader, max_iterations: int) -> dict[str, float]:
        """All ranks: each rank's share, GATHER_BATCHES batches at a time, gathered to rank 0 alone (dataset order
        restored), so Socket.metrics sees the whole set once as one process would; rank 0 broadcasts the metrics.

        A rank other than 0 holds at most GATHER_BATCHES batches (O(batch) memory, not the set), and each batch
        travels once, to rank 0 (O(set) bytes across the job, not N x set). Every rank takes part in as many
        gathers as rank 0 needs (its share is the largest); a rank whose share is done sends an empty list."""
        # rank 0's share, the largest (rank r: r, r+N, ...)
        share = math.ceil(len(loader.dataset) / self.dist.size)  # type: ignore[arg-type]  # our DataSets have __len__
        most = math.ceil(share / (loader.batch_size or 1))  # batches of rank 0, and at most of any rank
        most = min(most, max_iterations) if max_iterations >= 0 else most
        order, batches = list(loader.sampler), self._batches(mode, loader)
        shares: list = []  # rank 0: (dataset indices, outputs, targets, loss, samples) of every batch of every rank
        done = 0
        for _ in range(math.ceil(most / GATHER_BATCHES)):
            pieces: list = []
            while len(pieces) < GATHER_BATCHES and done < most and (batch := next(batches, None)) is not None:
                outputs, _, loss, n = self._evaluate_batch(*batch)
                start = done * (loader.batch_size or 1)
                pieces.append((order[start : start + n], to_host(outputs), to_host(batch[1]), loss, n))
                done += 1
            gathered = self.dist.gather_object(pieces)
            if gathered is not None:
                shares += [piece for rank_pieces in gathered for piece in rank_pieces]

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
        self.state.phase = "running test inference"
        for i, (inputs, _) in enumerate(self._batches("test")):
            self.state.beat = time.perf_counter()
            if 0 <= batches <= i:
                break
            inputs = to_device(inputs, self.device)
            outputs = self.network(inputs)
            when = self.state.sanity or f" after epoch {epoch + 1} (its checkpoint is saved)"
            result = user_code.call_user(f"running Socket.process on test batch {i + 1}{when}", self.socket.process,
                                         inputs, outputs)
            if not keep:
                user_code.check_processed(result, self.model.path)
                continue
            self.emitter.processed(epoch, i, result)

    # -- control --------------------------------------------------------------------------

    def agree(self, window: list[torch.Tensor] | tuple = ()) -> bool:
        """All ranks: settle with the others (scorch/agreement.py), apply the requests; True if training must stop now.

        The losses of `window` not yet read are looked at first (the gradient allreduce has already synced
        the device), so a NaN is named at the first bad step whichever rank had it."""
        if window and not self.agreement.nonfinite_seen():
            self.agreement.check_finite(torch.stack(window).double(), self.state.epoch, self.state.epoch_step)
        return self._apply(self.agreement.agree(self.state.step, self.state.epoch, self.steerer.propose))

    def apply_requests(self, requests: list[Request]) -> bool:
        """One rank: apply the requests taken from Control; True if training must stop now."""
        return self._apply(alone(requests, self.steerer.propose))

    def _apply(self, agreed: Agreed) -> bool:
        """Every rank, the same step: steering, then checkpoint/stop (a checkpoint keeps the new steering), then
        a pause holds the loop here; True if training must stop now."""
        stop = self._settle(agreed)
        return self._hold() if self.steerer.now.paused and not stop else stop

    def _settle(self, agreed: Agreed) -> bool:
        self._steer(agreed)
        return self._apply_control(agreed.requests)

    def _hold(self) -> bool:
        """Paused: wait at this step boundary for resume or stop without burning CPU (a sleep on Control, and with
        several ranks one agreement every HOLD_SECONDS, so a stop or SIGTERM on any rank still ends the run);
        the beat goes on, phase "paused", so neither the watchdog nor the dashboard takes it for a stall."""
        state = self.state
        phase, started = state.phase, time.perf_counter()
        state.phase, stop = "paused", False
        try:
            while self.steerer.now.paused and not stop:
                state.beat, state.phase = time.perf_counter(), "paused"  # again after a checkpoint taken while paused
                if self.agreement.max_steps:
                    if self.dist.is_global_zero:  # the others wait in the agreement for rank 0 (which has the socket)
                        self.control.wait(HOLD_SECONDS)
                    stop = self._settle(self.agreement.agree(state.step, state.epoch, self.steerer.propose))
                elif self.control.wait(HOLD_SECONDS):
                    stop = self._settle(alone(self.control.take(), self.steerer.propose))
        finally:
            state.phase, state.beat = phase, time.perf_counter()
            state.held += state.beat - started
        return stop

    def _steer(self, agreed: Agreed) -> None:
        """Every rank: the parts follow the new steering; rank 0 tells each steering request's outcome."""
        if agreed.steering is not None:
            self.steerer.apply(agreed.steering)
            if self.run is not None:  # scorch-ctl status and the picker read it there
                try:
                    self.run.write_info(steering=agreed.steering.to_dict())
                except OSError as exc:
                    self.log(f"could not record the steering in {self.run.info_path}: {exc.strerror}")
        where = f"at epoch {self.state.epoch + 1}, step {self.state.step}"
        for req, (status, said) in zip(agreed.steered, self.steerer.said):
            self.emit(Command(id=req.id, command=req.command, status=status, value=req.value or "", by=req.by,
                              reason=f"{where}: {said}", steering=self.steerer.state_dict() if status == "applied" else {}))

    def _apply_control(self, requests: list[Request]) -> bool:
        """Apply checkpoint/stop requests (every rank, same step); True if training must stop now."""
        for req in requests:
            reason = req.source
            if req.command == "checkpoint":
                self.save([(ckpt.LAST, reason)])
            elif req.command == "stop":
                status = "preempted" if req.source == "signal" else "stopped"
                why = {"signal": "preemption signal", "interrupt": "interrupted (Ctrl-C)"}.get(req.source, "stop requested")
                self.stop = Stop(status, why, after_epoch=req.after_epoch or (self.stop is not None and self.stop.after_epoch))
                if not req.after_epoch:
                    self.save([(ckpt.LAST, reason)])
            if req.source != "interval":  # a timed checkpoint is told by its checkpoint_saved (reason "interval")
                self.emit(Command(id=req.id, command=req.command, status="applied", after_epoch=req.after_epoch,
                                  reason=f"at epoch {self.state.epoch + 1}, step {self.state.step}", by=req.by))
        return self.stop is not None and not self.stop.after_epoch

    def _take_window(self, window: list[torch.Tensor]) -> float:
        """Add a window of per-step losses to the epoch's; its mean. A NaN/inf among them ends the run."""
        losses = torch.stack(window).double()
        total = losses.sum()
        self.state.epoch_loss += total
        mean = total.item() / len(window)
        if not math.isfinite(mean):
            self.agreement.check_finite(losses, self.state.epoch, self.state.epoch_step)
        return mean

    def install_signal_handlers(self) -> dict:
        """SIGTERM/SIGUSR1 (preemption) and SIGINT (Ctrl-C) become stop requests; returns the old handlers."""
        def preempt(signum: int, frame: Any) -> None:
            self.preempted_by = self.preempted_by or signal.Signals(signum).name
            self.control.request("stop", id=signal.Signals(signum).name, source="signal")
            signal.signal(signal.SIGTERM, die_now)
            signal.signal(signal.SIGUSR1, die_now)

        def die_now(signum: int, frame: Any) -> None:
            # A second preemption signal: the cluster will not wait. Atomic writes keep the last checkpoint whole.
            name = signal.Signals(signum).name
            os.write(2, f"scorch-train: second {name}: exiting now; the last checkpoint is intact\n".encode())
            self._last_words("preempted", f"second {name}: exited at once; --resume continues from the last checkpoint")
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
        scheduler, state = self.scheduler, self.state
        return {
            "epoch": state.epoch,  # 2018 key: epochs completed (the next one to run, 0-based)
            "model_state": self.network.state_dict(),
            "optimizer_state": self.socket.optimizer.state_dict(),
            "metrics": state.metrics,
            "scheduler_state": scheduler.state_dict() if scheduler is not None else None,
            "step": state.step,
            "epoch_step": state.epoch_step,
            "epoch_loss": float(state.epoch_loss.item()),
            "rng": _rng_state(),
            "monitor": self.monitor.state_dict(),
            "scaler_state": self.stepping.scaler.state_dict(),
            "world_size": self.dist.size,
            "config": self.config.to_dict(),
            "steering": self.steerer.state_dict(),  # lr scale, patience, timed checkpoints: a resume keeps them
            "scorch_version": 1,
        }

    def load_state_dict(self, saved: dict, keep_patience: bool = False) -> None:
        """`keep_patience`: --early-stop-patience given again on resume wins over a steered patience."""
        if "model_state" in saved:  # ranks other than 0 get no weights here: broadcast_state brings them
            self.network.load_state_dict(saved["model_state"])
            self.socket.optimizer.load_state_dict(saved["optimizer_state"])
        if self.scheduler is not None and saved.get("scheduler_state") is not None:
            self.scheduler.load_state_dict(saved["scheduler_state"])
        state = self.state
        state.epoch, state.step, state.epoch_step = saved["epoch"], saved.get("step", 0), saved.get("epoch_step", 0)
        state.epoch_loss.fill_(saved.get("epoch_loss", 0.0))
        if saved.get("monitor"):
            self.monitor.load_state_dict(saved["monitor"])
        if saved.get("scaler_state"):
            self.stepping.scaler.load_state_dict(saved["scaler_state"])
        if saved.get("rng"):
            _set_rng_state(saved["rng"])
        state.metrics = saved.get("metrics") or {}
        self.steerer.load_state_dict(saved.get("steering"), keep_patience)

    def save(self, names: Names, background: bool = False) -> None:
        """Write this state as the checkpoints `names`, (file name, reason) pairs, atomically (rank 0 only),
        and announce each: the first is written, the others become links to it (scorch/saver.py).

        `background`: the durable half (fsync, rename, links, announcements) finishes on a thread while
        training goes on; the next save, and the end of the run, wait for it (`settle_saves`)."""
        if self.saver.folder is None or not names:
            return
        self.state.phase, self.state.beat = f"saving {os.path.join(self.saver.folder, names[0][0])}", time.perf_counter()
        self.saver.save(names, self.state_dict, self.state.epoch, self.state.step, background)

    def settle_saves(self, timeout: float | None = None) -> None:
        """Wait for a checkpoint finishing in the background; its failure is raised here."""
        self.saver.settle(timeout)

    def close(self, wait: float = -1) -> None:
        """Flush and close every callback (files, sockets); safe to call twice."""
        if self.watchdog is not None:
            self.watchdog.stop()
        self.steerer.close()  # no timed checkpoint after the end
        self.agreement.close_rank_channel()
        if not self.emitter.close(wait):
            return
        self.saver.close()
        self.agreement.close()
        if self.run is not None:
            self.run.release()  # after the last write: the folder is free for a resume

    def end(self, status: str, reason: str, wait: float = -1) -> None:
        self.agreement.close_rank_channel()
        try:  # a checkpoint still finishing lands before run_ended
            self.settle_saves(None if wait < 0 else wait)
        except Exception as exc:  # the run already ends for another reason; this one is told, not raised
            try:
                self.log(why_failed(exc), level="error")
            except OSError:
                pass  # the event log is what failed: its error is the one the run ends with
        record_end(self.run, self.emitter, RunEnded(status=status, reason=reason, epoch=self.state.epoch,
                                                    step=self.state.step), wait)

    def _last_words(self, status: str, reason: str) -> None:
        """run_ended and run.json's end state from a signal handler, as the process dies: straight to the event
        log, past the emitter's lock (this thread may hold it mid-event) and the other sinks (theirs)."""
        log = next((sink for sink in self.emitter.callbacks if isinstance(sink, events_log.Writer)), None)
        if log is not None and self.run is not None:
            record_end(self.run, Emitter([log], self.emitter.seq), RunEnded(status=status, reason=reason,
                                                                                epoch=self.state.epoch, step=self.state.step))

    def _stalled(self, reason: str) -> None:
        """The watchdog's last word, from its thread: the run ends failed, its sinks closed, within seconds."""
        self.end("failed", reason, wait=5.0)
        self.close(wait=5.0)

    # -- small helpers --------------------------------------------------------------------

    def _batches(self, mode: str, loader: DataLoader | None = None) -> Any:
        """The loader's batches; a batch that fails to load is explained (which item, why) and ends the run."""
        return explained(loader or self.loaders[mode], self.config.dataset, mode)

    def _steps_in_epoch(self) -> int:
        """Training batches this rank takes in an epoch (optimizer steps: this / --accumulate)."""
        cfg = self.config
        return batches_per_epoch(len(self.loaders["train"].dataset), cfg.batch_size, self.dist.size,  # type: ignore[arg-type]  # our DataSets have __len__
                                 cfg.max_train_iterations, cfg.accumulate)

    def _epoch_done(self) -> bool:
        return self.state.epoch_step >= self._steps_in_epoch()

    def _lr(self) -> float:
        return float(self.socket.optimizer.param_groups[0]["lr"])


def why_failed(exc: BaseException) -> str:
    """What ended a run, in one line: run_ended's reason and run.json's."""
    if isinstance(exc, ScorchError):
        return exc.message
    if isinstance(exc, OSError) and exc.errno in WRITE_ERRORS:
        return write_failure(exc)
    return f"{type(exc).__name__}: {exc}"


def record_end(run: RunFolder | None, emitter: Emitter, ended: RunEnded, wait: float = -1) -> None:
    """A run's last words: `ended` in its event log, its state in run.json (rank 0, `run`). The .reserve is
    freed first, so that both fit on a disk that filled up; a write that fails still is told, never raised:
    the run already ends, for its own reason."""
    if run is not None:
        run.free_reserve()
    emitter.emit(ended, wait=wait)  # the event log takes run_ended even after a failed write (events_log.Writer)
    if run is not None:
        try:
            run.write_info(state=ended.status, reason=ended.reason, ended=time.time())
        except OSError as exc:
            import sys

            print(f"scorch-train: warning: could not record the end in {run.info_path}: {write_error(exc)}", file=sys.stderr)


def _add_scalars(totals: dict, extra: dict) -> None:
    for name, value in extra.items():
        totals[name] = totals[name] + value if name in totals else value


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

    def read() -> tuple[str, dict]:  # the newest intact checkpoint; the damaged ones passed over are told at the start
        path, state, skipped = ckpt.load_for_resume(config.resume)
        state["skipped"] = [f"--resume skipped {where}: {why}; resumed from {path} instead" for where, why in skipped]
        state["folder_seen"] = (os.path.dirname(path), ckpt.folder_state(os.path.dirname(path)))  # see _check_unchanged
        return path, state

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


def auto_resume(config: TrainConfig, engine: Any) -> None:
    """All ranks: settle `--resume auto` (or a job its launcher restarted: a SLURM requeue, a torchrun elastic
    restart) into --resume RUN_DIR when RUN_DIR holds a checkpoint, else --restart there.

    Under SLURM and torchrun --max-restarts the default run folder is named after the job, so that the same
    command, run again by the launcher, finds it (dist.lasting_run_name)."""
    from scorch import dist as dist_module

    if not config.run_dir and (lasting := dist_module.lasting_run_name(os.path.splitext(os.path.basename(config.model))[0] or "run")):
        config.run_dir = os.path.join("runs", lasting)
    if config.resume != "auto" and (config.resume or not dist_module.restart_count()):
        return
    if not config.run_dir:
        raise ScorchError("--resume auto: needs --run-dir, the folder to continue when it holds a checkpoint")
    # The same two ways in as by hand, so the one-writer checks judge it alike: a checkpoint there is continued
    # (--resume RUN_DIR); none (the job stopped before its first one) is started again there (--restart).
    found = share_from_rank_zero(engine, lambda: RunFolder(config.run_dir).has_checkpoint())
    config.resume = config.run_dir if found else ""
    config.restart = config.restart or not found


@dataclass
class _Start:
    """What a start has taken so far (rank 0): a start that fails after it took the run folder (a flag found
    wrong late, a busy --bind port, a checkpoint that does not fit, a full disk) ends the run there as any
    run ends, with run_ended in its log and `failed` in run.json, and frees the folder."""

    run: RunFolder | None = None
    sinks: list[Callback] = field(default_factory=list)  # the event log first
    trainer: Trainer | None = None

    def failed(self, exc: BaseException) -> None:
        if self.run is None:
            return  # refused, or nothing taken yet: the folder is not this run's to write
        status, reason = ("stopped", "interrupted (Ctrl-C)") if isinstance(exc, KeyboardInterrupt) else ("failed", why_failed(exc))
        if self.trainer is not None:
            self.trainer.end(status, reason)
            self.trainer.close()
            return
        log = self.sinks[0] if self.sinks else None
        emitter = Emitter(self.sinks, log.last_seq if isinstance(log, events_log.Writer) else 0)
        record_end(self.run, emitter, RunEnded(status=status, reason=reason))
        emitter.close()
        self.run.release()  # the kernel would, but only at exit


def build(config: TrainConfig, explicit: set[str] | frozenset[str] = frozenset(), engine: Any = None) -> Trainer:
    """Everything a run needs, from its config: engine, run folder, user code, callbacks."""
    start = _Start()
    try:
        return _build(config, explicit, engine, start)
    except BaseException as exc:
        start.failed(exc)
        raise


def _build(config: TrainConfig, explicit: set[str] | frozenset[str], engine: Any, start: _Start) -> Trainer:
    from scorch import dist as dist_module
    from scorch.run_folder import default_name

    dist = engine or dist_module.create(config.backend, config.device)
    auto_resume(config, dist)
    config, state, resumed_path = resume_config(config, set(explicit), dist)
    if config.seed < 0:
        config.seed = dist.broadcast_object(random.SystemRandom().randrange(2**31))
    config.check(writer=dist.is_global_zero)  # again: a resumed run's config is the saved one with today's flags on top
    if state is not None and state["epoch"] >= config.epochs and not state.get("epoch_step"):
        raise RunComplete(f"the run {config.run_dir or config.resume} is complete ({state['epoch']} of {config.epochs} "
                          f"epochs); to train on, give a larger total: scorch-train --resume {config.resume} "
                          f"--epochs {2 * state['epoch']}")
    notices = _resolve_mode(config)  # said once the run has started
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
    _check_streaming(config, model)
    _check_manual(config, model, dist)

    # Rank 0 takes the run folder (one writer: a live holder refuses it), and every rank hears a refusal.
    seen = state.pop("folder_seen", None) if state is not None else None
    run, callbacks, history = share_from_rank_zero(dist, lambda: _sinks(config, bool(resumed_path), start, seen),
                                                   for_others=lambda _: (None, [], None))
    trainer = start.trainer = Trainer(config, model, datasets, dist, run, callbacks, Control(), device)
    for sink in callbacks:
        if isinstance(sink, Guarded):  # a failing optional sink is told as an error event, once
            sink.report = lambda message: trainer.log(message, level="error")
    trainer.started["hosts"] = hosts = dist.hosts()
    trainer.started["notices"] += notices
    if run is not None:  # a resumed run numbers on from its log, read once by the writer
        log: Any = callbacks[0]  # the events_log.Writer
        trainer.emitter.seq = log.last_seq
        if log.scan.warning():
            trainer.log(log.scan.warning())
    if config.checkpoint:  # rank 0 reads them; broadcast_state hands them on
        share_from_rank_zero(dist, lambda: _load_weights(trainer.network, config.checkpoint))
    if state is not None:
        trainer.started["notices"] += state.pop("skipped", [])
        trainer.load_state_dict(state, keep_patience="early_stop_patience" in explicit)
        trainer.started["resumed_from"] = resumed_path
    dist.broadcast_state(trainer.network, trainer.socket.optimizer)
    if run is not None:
        run.write_info(name=os.path.basename(run.path), config=config.to_dict(), world_size=dist.size, hosts=hosts,
                       backend=dist.name, pid=os.getpid(), started=time.time(), state="running", device=str(device))
        if config.telemetry:  # live stream + control; writes .token, then the endpoints into run.json
            _go_live(trainer, run, history)
    if dist.size > 1:
        trainer.agreement.open_rank_channel(config, hosts)
    return trainer


def _check_streaming(config: TrainConfig, model: user_code.UserModel) -> None:
    if config.valid == "streaming" and not callable(getattr(model.socket, "metric_state", None)):
        raise ScorchError(f"--valid streaming: {config.model}: Socket has no metric_state(outputs, targets); add one that "
                          "returns a batch's sums and counts, e.g. {'correct': (out.argmax(1) == y).sum(), 'seen': len(y)}, "
                          "and metrics_from_state(state) to turn their totals into metrics (README: streaming validation)")


def _check_manual(config: TrainConfig, model: user_code.UserModel, dist: Any) -> None:
    """Socket.train_step steps its own optimizers: what scorch would do around the step cannot apply."""
    if not callable(getattr(model.socket, "train_step", None)):
        return
    refused = [flag for flag, on in (("several ranks", dist.size > 1), ("--accumulate", config.accumulate > 1),
                                     ("--clip-grad-norm/--clip-grad-value", config.clip_grad_norm or config.clip_grad_value),
                                     ("--amp fp16", config.amp == "fp16"), ("--on-nan skip", config.on_nan == "skip")) if on]
    if refused:
        raise ScorchError(f"{config.model}: Socket.train_step steps its own optimizers (manual optimisation), so "
                          f"{', '.join(refused)} cannot apply: do it in train_step (torch.nn.utils.clip_grad_norm_, "
                          "a GradScaler of your own), or train on one process; manual optimisation runs on one rank for now")


def _resolve_mode(config: TrainConfig) -> list[str]:
    """--mode auto: the monitored name decides; recorded resolved, so a resume and the dashboard agree."""
    if config.mode != "auto":
        return []
    config.mode = better_mode(config.monitor)
    if config.mode != "min":
        return []
    return [f"--monitor {config.monitor}: smaller is better for a name like this, so best.pt and early "
            "stopping keep the smallest (--mode min, chosen from the name; pass --mode max to change)"]


def _check_unchanged(config: TrainConfig, run: RunFolder, seen: tuple[str, list] | None) -> None:
    """A resume read its checkpoint before it could take the run folder: if another process wrote a checkpoint
    there in between (two resumes started together, the other one first), this one's state is stale, and
    training it would write older epochs over newer ones. Refused, having written nothing but its lease."""
    if seen is None or not os.path.isdir(seen[0]) or not os.path.samefile(seen[0], run.checkpoints):
        return  # resumed from a file outside this run folder: nothing here was read
    if ckpt.folder_state(seen[0]) != seen[1]:
        from scorch.run_folder import describe_holder

        raise ScorchError(f"--resume {config.resume}: {run.checkpoints} changed since this process read its checkpoint "
                          f"(written meanwhile by {describe_holder(run.previous_lease)}); this process wrote nothing: "
                          "resume again to continue from the newest checkpoint")


def _sinks(config: TrainConfig, reuse: bool, start: _Start,
           seen: tuple[str, list] | None = None) -> tuple[RunFolder, list[Callback], Any]:
    """Rank 0: the run folder and the callbacks that write into it (the event log first, TensorBoard) and the
    console; with telemetry, the publisher's history of what the log already holds (one read, by the writer)."""
    import sys

    from scorch.callbacks.console import ConsoleProgress
    from scorch.dist import launched

    run = RunFolder(config.run_dir)
    run.create(reuse=reuse, restart=config.restart)
    try:
        _check_unchanged(config, run, seen)
    except BaseException:
        run.release()  # refused: the folder is the other process's, not this start's to end as failed
        raise
    start.run = run
    history = None
    if config.telemetry:
        from scorch.telemetry.publisher import History

        history = History()
    callbacks: list[Callback] = [events_log.Writer(run.events_path, visit=history.add_line if history else None)]
    start.sinks = callbacks  # the same list: what is added below is closed too if the start fails
    if config.tensorboard:
        from scorch.callbacks.tensorboard import TensorBoardLog

        callbacks.append(Guarded(TensorBoardLog(run.tensorboard), f"TensorBoard ({run.tensorboard})"))
    # Under a launcher (OpenMPI gives each rank a terminal) plain lines, unless --progress bar asks otherwise.
    bar = config.progress == "bar" or (config.progress == "auto" and sys.stdout.isatty() and not launched())
    callbacks.append(ConsoleProgress(headless=config.headless or not bar, interval=config.log_interval))
    return run, callbacks, history


def _load_weights(network: torch.nn.Module, path: str) -> None:
    """-c/--checkpoint: the weights of `path` into `network`, or why they do not fit."""
    weights = ckpt.load(path)
    try:
        network.load_state_dict(weights["model_state"])
    except RuntimeError as exc:
        raise ScorchError(f"-c/--checkpoint {path}: weights do not fit this Network: {str(exc).splitlines()[0]}") from None


def _go_live(trainer: Trainer, run: RunFolder, history: Any) -> None:
    """Rank 0: the telemetry publisher (live stream and control) as one more callback."""
    from scorch.telemetry.publisher import Publisher
    from scorch.watchdog import activity

    config, state, ranks = trainer.config, trainer.state, trainer.dist.size
    # The publisher thread logs `command` events; it never waits long for the loop's lock. A busy port raises
    # here: build's _Start ends the run and closes the other sinks (TensorBoard's thread must not outlive it).
    emit = lambda event: trainer.emit(event, wait=2.0)  # noqa: E731
    loop = threading.current_thread()  # the heartbeat says what this thread is doing (see watchdog.activity)
    trainer.callbacks.append(Publisher(run, trainer.control, emit, config.bind, config.curve_keys,
                                       progress=lambda: activity(state, ranks, loop), history=history))
