"""Manual optimisation: a Socket with `train_step(inputs, targets)` steps its own optimizers (GANs, several losses).

The Socket then holds `optimizers`, a dict name -> torch.optim.Optimizer, and optionally `schedulers`,
a dict name -> scheduler, and its train_step zeroes, backpropagates, steps them and their schedulers
itself (Lightning's manual optimisation), returning the loss to log (a tensor, or {"loss": ..., others}).
scorch does the rest: data, validation, checkpoints (every optimizer's and scheduler's state, for an
exact resume), control, telemetry. `Optimizers` puts the dicts behind the one-optimizer surface the
loop and checkpoints already use.
"""

from __future__ import annotations

from typing import Any


class Optimizers:
    """The Socket's optimizers and schedulers as one: state_dict, load_state_dict, the first's param_groups."""

    def __init__(self, optimizers: dict, schedulers: dict) -> None:
        self.optimizers, self.schedulers = optimizers, schedulers

    @property
    def param_groups(self) -> list:  # the rate shown in progress is the first optimizer's
        return next(iter(self.optimizers.values())).param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {"optimizers": {name: o.state_dict() for name, o in self.optimizers.items()},
                "schedulers": {name: s.state_dict() for name, s in self.schedulers.items()}}

    def load_state_dict(self, state: dict) -> None:
        for name, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][name])
        for name, s in self.schedulers.items():
            s.load_state_dict(state["schedulers"][name])


def check(socket: Any, path: str) -> None:
    """A manual Socket's optimizers and schedulers; sets `socket.optimizer` to them as one (`Optimizers`)."""
    import torch

    from scorch.errors import ScorchError

    optimizers, schedulers = getattr(socket, "optimizers", None), getattr(socket, "schedulers", None) or {}
    if not isinstance(optimizers, dict) or not optimizers or not all(isinstance(o, torch.optim.Optimizer) for o in optimizers.values()):
        raise ScorchError(f"{path}: Socket.train_step steps its own optimizers: set Socket.optimizers to a dict of them, "
                          "e.g. {'generator': torch.optim.Adam(...), 'discriminator': torch.optim.Adam(...)}")
    if not isinstance(schedulers, dict) or not all(callable(getattr(s, "state_dict", None)) for s in schedulers.values()):
        raise ScorchError(f"{path}: Socket.schedulers must be a dict name -> scheduler (stepped by your train_step)")
    socket.optimizer = Optimizers(optimizers, schedulers)
