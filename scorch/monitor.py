"""Tracks the monitored metric: best value (for best.pt) and patience (for early stopping)."""

from __future__ import annotations

import math

# Names whose smaller values are better: `--mode auto` (and the dashboard's best values) go by them.
SMALLER_IS_BETTER = ("loss", "error", "err", "mse", "mae", "rmse", "perplexity", "ppl", "cer", "wer", "nll")


def better_mode(name: str) -> str:
    """'min' for a metric whose name reads as a loss or an error, else 'max'."""
    lowered = name.lower()
    return "min" if any(word in lowered for word in SMALLER_IS_BETTER) else "max"


class Monitor:
    """`update(value)` says whether the value improved on the best by more than
    `min_delta`; `should_stop` once `patience` epochs pass without improvement."""

    def __init__(self, name: str, mode: str, patience: int = 0, min_delta: float = 0.0) -> None:
        self.name = name
        self.mode = mode
        self.patience = patience
        self.min_delta = abs(min_delta)
        self.best: float | None = None
        self.best_epoch = -1
        self.wait = 0

    def update(self, value: float, epoch: int) -> bool:
        if math.isnan(value):
            improved = False
        elif self.best is None:
            improved = True
        elif self.mode == "max":
            improved = value > self.best + self.min_delta
        else:
            improved = value < self.best - self.min_delta
        if improved:
            self.best, self.best_epoch, self.wait = value, epoch, 0
        else:
            self.wait += 1
        return improved

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.wait >= self.patience

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_epoch, self.wait = state["best"], state["best_epoch"], state["wait"]
