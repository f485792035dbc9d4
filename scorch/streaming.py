"""Streaming validation (--valid streaming): per-batch metric states, summed over batches and ranks.

The whole-set path (the default) keeps every output of the validation set until
`Socket.metrics` sees them all: exact for any metric (AUC, F1), but its memory
grows with the set. The streaming path keeps one running sum per state key:
memory is one batch's, whatever the set's size.

The Socket opts in with
    metric_state(outputs, targets) -> {name: number or tensor}   per batch: sums and counts
    metrics_from_state(state) -> {"main": ..., ...}              optional: the metrics from the summed state
                                                                 (without it, the summed state is the metrics)
Sums and counts are exact (float64, and integers below 2**53 are exact in it);
a mean is a sum and a count, divided in `metrics_from_state`. scorch adds the
mean validation loss as `loss` unless the metrics name one.
"""

from __future__ import annotations

from typing import Any

import torch

LOSS_SUM, COUNT = "scorch/loss_sum", "scorch/count"  # the state keys scorch adds for the mean loss


class StreamingState:
    """Running sums of the per-batch states, on the device (no sync per batch)."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}

    def add(self, state: dict, device: torch.device) -> None:
        for key, value in state.items():
            value = torch.as_tensor(value.detach() if hasattr(value, "detach") else value, device=device).double()
            self.sums[key] = self.sums[key] + value if key in self.sums else value


def reduce_sums(dist: Any, sums: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """All ranks: every key's sum over all ranks, on the CPU; one broadcast (the keys and shapes) and one
    allreduce of a flat float64 tensor, whatever the set's size. Rank 0 names the keys: it has the largest
    share, and a rank whose share is empty adds zeros."""
    if dist.size == 1:
        return {key: value.cpu() for key, value in sums.items()}
    shapes = dist.broadcast_object({key: tuple(value.shape) for key, value in sums.items()})
    flat = torch.cat([(sums[key].cpu() if key in sums else torch.zeros(shape, dtype=torch.float64)).reshape(-1)
                      for key, shape in shapes.items()]) if shapes else torch.zeros(0, dtype=torch.float64)
    total = dist.allreduce(flat, "sum")
    result, at = {}, 0
    for key, shape in shapes.items():
        size = int(torch.Size(shape).numel())
        result[key] = total[at : at + size].reshape(shape)
        at += size
    return result
