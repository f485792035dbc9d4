"""Mixed precision (--amp off|bf16|fp16): an autocast context and a gradient scaler with one surface."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import torch


class NoScaler:
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


class Precision(NamedTuple):
    autocast: Callable[[], Any]  # a fresh context manager each call
    scaler: Any  # torch.amp.GradScaler or NoScaler


def mixed_precision(amp: str, device: torch.device) -> Precision:
    if amp == "off":
        return Precision(contextlib.nullcontext, NoScaler())
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    autocast = functools.partial(torch.autocast, device_type=device.type, dtype=dtype)
    # fp16 needs loss scaling against underflow; bf16 has float32's range and does not.
    return Precision(autocast, torch.amp.GradScaler(device.type) if amp == "fp16" else NoScaler())
