"""Gradient clipping and the gradient norm, between the average over ranks and the optimizer step.

The order matters, and is the one Lightning and torch's AMP recipe use: the
gradients are averaged over ranks first (every rank then clips the same
gradients by the same factor, as one process with the whole batch would),
unscaled from fp16 loss scaling next (a norm of scaled gradients means
nothing), then clipped. The loop calls this once per optimizer step, after
the last backward of an accumulation window.
"""

from __future__ import annotations

from typing import Any

import torch


class GradientClip:
    """--clip-grad-norm / --clip-grad-value / --log-grad-norm for the parameters that train."""

    def __init__(self, parameters: list[torch.Tensor], scaler: Any, optimizer: Any, max_norm: float = 0.0,
                 max_value: float = 0.0, log_norm: bool = False) -> None:
        self.parameters, self.scaler, self.optimizer = parameters, scaler, optimizer
        self.max_norm, self.max_value, self.log_norm = max_norm, max_value, log_norm

    @classmethod
    def from_config(cls, config: Any, parameters: list[torch.Tensor], scaler: Any, optimizer: Any) -> GradientClip | None:
        """None when the run asks for none of it (the step then does no extra work)."""
        if not (config.clip_grad_norm or config.clip_grad_value or config.log_grad_norm):
            return None
        return cls(parameters, scaler, optimizer, config.clip_grad_norm, config.clip_grad_value, config.log_grad_norm)

    def __call__(self) -> torch.Tensor | None:
        """Unscale and clip the gradients now; the total norm before norm clipping (a device tensor: no sync), if asked."""
        self.scaler.unscale_(self.optimizer)  # GradScaler.step then knows they are unscaled and does not do it again
        if self.max_value:
            torch.nn.utils.clip_grad_value_(self.parameters, self.max_value)
        if self.max_norm:
            return torch.nn.utils.clip_grad_norm_(self.parameters, self.max_norm)
        if self.log_norm:
            return torch.nn.utils.get_total_norm([p.grad for p in self.parameters if p.grad is not None])
        return None
