"""The ranks' agreement: every few steps all ranks settle their control requests, rank 0's new steering
(scorch/steering.py) and NaN sightings in one small collective, so that each rank acts on them at the same
step; and the per-rank channel that carries
each rank's figures to rank 0 (scorch/telemetry/ranks.py), off the training thread.

With one rank there is nothing to agree on: requests are applied at the next step boundary, a NaN
ends the run at once, and the figures are emitted as they are sampled.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from scorch import steering
from scorch.errors import NonFiniteLoss
from scorch.steering import Steering
from scorch.telemetry.control import KINDS, Control, Request, agreed_requests, is_steering, request_flags
from scorch.telemetry.protocol import System
from scorch.telemetry.sysstats import SystemSampler

# The ranks agree (control, NaN) about every SYNC_SECONDS at rank 0's pace, and at least every SYNC_MAX_STEPS
# steps: an agreement costs one collective's latency whatever the step, so a time-based stride keeps its cost
# a small fraction for tiny steps and its delay short for long ones (measured: docs/distributed.md).
SYNC_SECONDS = 1.0
SYNC_MAX_STEPS = 1000
SYSTEM_EVENT_INTERVAL = 2.0  # seconds between `system` events (per-rank CPU/RAM/GPU)
NO_NONFINITE = 2**62  # the agreement's "no NaN/inf seen" (any real key is smaller)
SLOTS = len(KINDS) + steering.SLOTS + 2  # the agreement's int64s: kinds, steering, NaN key, stride


@dataclass
class Agreed:
    """What every rank applies after an agreement: checkpoint/stop `requests`, the new `steering` (None: no
    change), and on rank 0 the steering requests it came from (`steered`, for their `command` events)."""

    requests: list[Request] = field(default_factory=list)
    steering: Steering | None = None
    steered: list[Request] = field(default_factory=list)


def split(requests: list[Request]) -> tuple[list[Request], list[Request]]:
    """(checkpoint/stop requests, steering requests), each oldest first."""
    return [r for r in requests if not is_steering(r)], [r for r in requests if is_steering(r)]


def alone(requests: list[Request], propose: Callable[[list[Request]], Steering | None]) -> Agreed:
    """One rank: what an agreement would give, without one."""
    rest, steered = split(requests)
    return Agreed(rest, propose(steered) if steered else None, steered)


class Agreement:
    """What the ranks must settle together, and when they next do; and this rank's figures for rank 0.

    `max_steps` is 0 with one rank (no agreement ever); the loop checks `step >= next_step` itself, so
    a step between agreements costs one comparison. `progress()` is (step, phase) of the loop, for the
    per-rank channel's thread."""

    def __init__(self, dist: Any, control: Control, emit: Callable[..., Any],  # Trainer.emit(event, wait=-1)
                 progress: Callable[[], tuple[int, str]]) -> None:
        self.dist, self.control, self.emit, self.progress = dist, control, emit, progress
        self.max_steps = 0 if dist.size == 1 else SYNC_MAX_STEPS
        self.next_step = 0  # the step of the next agreement: the same on every rank
        self._last = (0, time.perf_counter())  # (step, time) of the last one: this rank's pace
        self._nonfinite = NO_NONFINITE  # the first NaN/inf seen here, as `_nonfinite_key` packs it
        self._next_system = 0.0
        self.sampler = SystemSampler(dist.rank)
        # With several ranks, figures go to rank 0 over the per-rank channel (scorch/telemetry/ranks.py), not
        # through a collective: its thread reads these, the training thread only sets them.
        self.figures: dict = {"collective_wait": 0.0}
        self.reporter: Any = None  # every rank: the channel's sending end
        self.rank_watch: Any = None  # rank 0: its receiving end

    def agree(self, step: int, epoch: int, propose: Callable[[list[Request]], Steering | None]) -> Agreed:
        """All ranks: agree on pending requests, steering and NaNs; what to apply.

        One allreduce (max) of a few int64s, the same size at any number of ranks: one 0/1 slot per
        request kind (control.KINDS), rank 0's new steering if its requests changed it (`propose` turns
        them into the new state; steering.encode: other ranks put the neutral value max never picks), the
        first NaN/inf any rank saw (negated, so max picks the smallest key: the earliest step, then the
        lowest rank), and rank 0's stride to the next agreement. A NaN/inf raises NonFiniteLoss here, on
        every rank."""
        last_step, when = self._last
        now = time.perf_counter()
        self._last = (step, now)
        stride = 0
        if self.dist.is_global_zero:  # the next one SYNC_SECONDS on at rank 0's pace, the same step on every rank
            pace = (now - when) / max(1, step - last_step)
            stride = max(1, min(self.max_steps, int(SYNC_SECONDS / max(pace, 1e-6))))
        own, steered = split(self.control.take())  # steering requests reach rank 0 alone (the control socket)
        proposed = steering.encode(propose(steered) if steered else None)
        slots = torch.tensor([*request_flags(own), *proposed, -self._nonfinite, stride], dtype=torch.int64)
        agreed = self.dist.allreduce(slots, "max").tolist()
        self.figures["collective_wait"] = time.perf_counter() - now  # how long this rank waited for the others
        if -agreed[-2] != NO_NONFINITE:  # every rank stops here, naming the first NaN/inf any rank saw
            raise NonFiniteLoss(self._nonfinite_message(-agreed[-2], epoch), everywhere=True)
        self.next_step = step + agreed[-1]
        kinds = len(KINDS)
        return Agreed(agreed_requests(agreed[:kinds], own), steering.decode(agreed[kinds : kinds + steering.SLOTS]), steered)

    def check_finite(self, losses: torch.Tensor, epoch: int, epoch_step: int) -> None:
        """The first NaN/inf among the latest `losses` (ending at `epoch_step`) ends the run: at once with one
        rank; with several, noted here and ended on every rank at the next agreement."""
        if bool(torch.isfinite(losses).all()):
            return
        bad = int((~torch.isfinite(losses)).nonzero()[0])
        value = losses[bad].item()
        step = epoch_step - len(losses) + bad + 1
        if self.dist.size == 1:
            raise NonFiniteLoss(self._nonfinite_message(_nonfinite_key(step, 0, value), epoch, one_rank=True))
        self._nonfinite = min(self._nonfinite, _nonfinite_key(step, self.dist.rank, value))

    @staticmethod
    def _nonfinite_message(key: int, epoch: int, one_rank: bool = False) -> str:
        step, rank, value = key >> 22, (key >> 2) & (2**20 - 1), ("nan", "inf", "-inf")[key & 3]
        where = "" if one_rank else f" on rank {rank}"
        return (f"loss became {value} at epoch {epoch + 1}, step {step}{where}; the last good checkpoint is kept. "
                "Lower the learning rate, check the data, or pass --on-nan skip to skip such batches")

    def nonfinite_seen(self) -> bool:
        return self._nonfinite != NO_NONFINITE

    def sample_system(self, now: float, step_time: float, data_time: float) -> None:
        """Every SYSTEM_EVENT_INTERVAL: this rank's CPU/RAM/GPU figures, emitted now with one rank; with several,
        the per-rank channel's thread samples them and sends them with these two."""
        if now < self._next_system:
            return
        self._next_system = now + SYSTEM_EVENT_INTERVAL
        if self.dist.size == 1:
            self.emit(System(ranks=[self.sampler.sample(step_time=step_time, data_time=data_time)]))
        else:
            self.figures.update(step_time=step_time, data_time=data_time)

    def rank_figures(self) -> dict:
        """What this rank's channel thread sends besides CPU/RAM/GPU (read on that thread)."""
        step, phase = self.progress()
        return {"step": step, "phase": phase, **self.figures}

    def loss_everywhere(self, loss: torch.Tensor) -> float:
        """All ranks: this step's loss averaged over ranks; NaN/inf if it is on any rank (so all skip alike)."""
        value = loss.detach().double().reshape(1).cpu()
        return float(self.dist.allreduce(value, "sum")) / self.dist.size

    def open_rank_channel(self, config: Any, hosts: list[str]) -> None:
        """All ranks: rank 0 opens the per-rank channel's PULL (where --bind and --curve-keys allow) and hands its
        endpoint and secret to every rank in one broadcast; each rank then reports over it from a thread."""
        from scorch.telemetry.publisher import load_server_keys, parse_bind
        from scorch.telemetry.ranks import RankReporter, RankWatch

        dist, handout = self.dist, None
        if dist.is_global_zero:
            keys = load_server_keys(config.curve_keys) if config.curve_keys else None
            host = parse_bind(config.bind)[0] if keys is not None else "127.0.0.1"
            emit = lambda event: self.emit(event, wait=2.0)  # noqa: E731 - from the channel's thread: never waits long
            self.rank_watch = RankWatch(dist.size, hosts, emit, host, keys)
            handout = self.rank_watch.handout
        handout = dist.broadcast_object(handout)
        if dist.rank not in handout["unreachable"]:
            self.reporter = RankReporter(handout, dist.rank, self.rank_figures, self.sampler)

    def tell(self, level: str, message: str) -> None:
        """A rank other than 0 sends its log lines to rank 0, which shows them (scorch/telemetry/ranks.py)."""
        if self.reporter is not None and not self.dist.is_global_zero:
            self.reporter.line(level, message)

    def close_rank_channel(self) -> None:
        """This rank says `bye` (it ended: not silent); rank 0 stops listening (no `system` after run_ended)."""
        reporter, watch, self.reporter, self.rank_watch = self.reporter, self.rank_watch, None, None
        if reporter is not None:
            reporter.close()
        if watch is not None:
            watch.close()

    def close(self) -> None:
        self.close_rank_channel()
        self.sampler.close()


def _nonfinite_key(epoch_step: int, rank: int, value: float) -> int:
    """A NaN/inf as one int64 that orders by (step in the epoch, rank): what the agreement reduces.
    Ranks agree within an epoch, so the epoch needs no bits; ranks below 2**20, steps below 2**40."""
    kind = 0 if math.isnan(value) else 1 if value > 0 else 2
    return (epoch_step << 22) | (min(rank, 2**20 - 1) << 2) | kind
