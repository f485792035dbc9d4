"""What the Socket may know about its run, and when its learning-rate scheduler steps.

`RunFacts` is set on the Socket class as `Socket.scorch` before `Socket(model)`
is called, so `__init__` can size a schedule: `OneCycleLR(..., total_steps=self.scorch.total_steps)`.
A 2018 Socket never reads it and is untouched by it.

`Schedule` steps `Socket.scheduler` once per optimizer step or once per epoch.
The Socket chooses with `scheduler_interval = "step"` or `"epoch"` (Lightning's
`interval`); without it, the schedulers made to step every batch (OneCycleLR,
CyclicLR) step every optimizer step and every other scheduler once per epoch,
as in 2018 (neither of those two existed then).

A learning-rate scale steered while the run trains (scorch/steering.py: `scorch-ctl RUN lr x0.5`) multiplies
what the scheduler gives: the scheduler steps on the unscaled rates (divided by `lr_scale` just before its
step, multiplied again just after), so chainable schedulers (StepLR, ReduceLROnPlateau) and closed-form ones
(OneCycleLR, LambdaLR) alike go on with their own schedule, and the optimizer trains at schedule x scale.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scorch.errors import ScorchError

INTERVALS = ("step", "epoch")


@dataclass(frozen=True)
class RunFacts:
    """The run as the Socket sees it when it is built (read-only; `Socket.scorch`)."""

    epochs: int  # epochs of the whole run (with --resume: the total, counting those done)
    steps_per_epoch: int  # optimizer steps per epoch on each rank (batches / --accumulate)
    batch_size: int  # samples per batch on each rank
    accumulate: int  # batches per optimizer step
    world_size: int  # ranks training together
    rank: int  # this process's global rank

    @property
    def total_steps(self) -> int:
        """Optimizer steps of the whole run: what OneCycleLR's `total_steps` should be."""
        return self.epochs * self.steps_per_epoch


def optimizer_steps_per_epoch(train_length: int, batch_size: int, world_size: int, max_batches: int, accumulate: int) -> int:
    """Optimizer steps one rank takes in an epoch; the trainer's own count (`batches_per_epoch`) / accumulate."""
    return batches_per_epoch(train_length, batch_size, world_size, max_batches, accumulate) // accumulate


def batches_per_epoch(train_length: int, batch_size: int, world_size: int, max_batches: int, accumulate: int) -> int:
    """Training batches one rank takes in an epoch: its padded share, capped, whole accumulation windows only."""
    per_rank = -(-train_length // world_size)
    n = -(-per_rank // batch_size)
    n = min(n, max_batches) if max_batches >= 0 else n
    return n - n % accumulate  # a last, partial accumulation would be a smaller step: drop it


def _per_step_kinds() -> tuple[type, ...]:
    import torch

    return (torch.optim.lr_scheduler.OneCycleLR, torch.optim.lr_scheduler.CyclicLR)


class Schedule:
    """Steps `Socket.scheduler` at its interval; `warning` says what the user should hear once, at start."""

    def __init__(self, socket: Any, path: str) -> None:
        import torch

        self.scheduler = getattr(socket, "scheduler", None)
        self.path = path
        self.warning = ""
        self.lr_scale = 1.0  # the steered scale on top of the schedule (scorch/steering.py)
        self.interval = "epoch"
        self.on_step = self.plateau = False
        if self.scheduler is None:
            return
        kind = type(self.scheduler).__name__
        per_step = isinstance(self.scheduler, _per_step_kinds())
        chosen = getattr(socket, "scheduler_interval", None)
        if chosen is None:
            self.interval = "step" if per_step else "epoch"
        elif chosen not in INTERVALS:
            raise ScorchError(f"{path}: Socket.scheduler_interval must be 'step' or 'epoch', found {chosen!r}")
        else:
            self.interval = chosen
        self.plateau = isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
        if self.plateau and self.interval == "step":
            raise ScorchError(f"{path}: Socket.scheduler is a ReduceLROnPlateau, which steps on the validation metrics once "
                              "an epoch; remove scheduler_interval = 'step'")
        if per_step and self.interval == "epoch":
            self.warning = (f"{path}: Socket.scheduler is a {kind}, made to step every optimizer step, but "
                            "Socket.scheduler_interval = 'epoch' steps it once an epoch; remove that line to step it "
                            "every step (size it with self.scorch.total_steps)")
        self.on_step = self.interval == "step"

    def check_length(self, epochs: int, steps_per_epoch: int) -> None:
        """A OneCycleLR too short for the run fails now, with the fix, rather than as torch's error mid-run."""
        import torch

        if not isinstance(self.scheduler, torch.optim.lr_scheduler.OneCycleLR):
            return
        needed = epochs * steps_per_epoch if self.on_step else epochs
        total = self.scheduler.total_steps
        if total < needed:
            unit = "optimizer steps" if self.on_step else "epochs"
            raise ScorchError(
                f"--epochs {epochs}: Socket.scheduler is a OneCycleLR of total_steps={total}, but this run takes {needed} "
                f"{unit}; a OneCycle schedule ends where it was sized and cannot be extended. Size it with "
                "total_steps=self.scorch.total_steps (a new run), keep --epochs to what it was sized for, or "
                "start a new schedule from these weights with -c/--checkpoint")

    def after_step(self) -> None:
        """After an optimizer step (per-step schedules only; the loop checks `on_step`)."""
        self._step()

    def after_epoch(self, metrics: dict) -> None:
        """After validation: per-epoch schedules step, ReduceLROnPlateau with metrics['main']."""
        if self.scheduler is None or self.on_step:
            return
        self._step(metrics.get("main", float("nan"))) if self.plateau else self._step()

    def _step(self, *args: Any) -> None:
        if self.lr_scale != 1.0:  # steered: the one comparison an unsteered step pays
            return self._scaled_step(*args)
        try:
            self.scheduler.step(*args)  # type: ignore[union-attr]  # only called with a scheduler
        except ValueError as exc:  # e.g. OneCycleLR: "Tried to step N times. The specified number of total steps is M"
            raise ScorchError(f"{self.path}: Socket.scheduler ({type(self.scheduler).__name__}) refused to step: {exc}; "
                              "it was sized for a shorter run than --epochs asks for") from None

    def _scaled_step(self, *args: Any) -> None:
        """The scheduler sees (and keeps in its state) the schedule's own rates; the optimizer trains at x lr_scale."""
        scale, groups = self.lr_scale, self.scheduler.optimizer.param_groups  # type: ignore[union-attr]
        for group in groups:
            group["lr"] /= scale
        self.lr_scale = 1.0
        try:
            self._step(*args)
        finally:
            self.lr_scale = scale
            for group in groups:
                group["lr"] *= scale
