"""Batches of every item shape the contract accepts, and validation batches joined into the whole set.

The 2018 items, `[inputs], [targets]`, go to `collate` (torch's default_collate
in fewer steps) exactly as before. Late-2018 items `(inputs, targets, ids)` and
test items without targets are first cut to `(inputs, targets)` (ids dropped,
missing targets an empty list). A DataSet with its own `collate_fn` gets it.

Validation hands `Socket.metrics` each output and target as one tensor over the
whole set when the batches' shapes allow (the 2018 behaviour); a column whose
batches differ beyond the batch dimension (sequences padded per batch,
variable-length outputs) becomes a list with one tensor per sample instead,
so nothing is padded to a global maximum and nothing crashes.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from scorch import user_code

_SEQUENCES = (list, tuple)


def collate_for(dataset: Any, collate: Any) -> Any:
    """`collate` itself for a DataSet of 2018 pairs (item 0 tells), else `collate` of the items cut to pairs."""
    if not len(dataset) or _is_pair(dataset[0]):
        return collate
    return functools.partial(_collate_pairs, collate=collate)


def _is_pair(item: Any) -> bool:
    return type(item) in _SEQUENCES and len(item) == 2 and type(item[0]) in _SEQUENCES and type(item[1]) in _SEQUENCES


def _collate_pairs(batch: list, collate: Any) -> list:
    return collate([user_code.as_pair(item) for item in batch])


def as_inputs_targets(batch: Any) -> tuple[list, list]:
    """A collated batch as (inputs, targets): a DataSet.collate_fn may add ids or, on a test set, leave targets out."""
    return (batch[0], batch[1]) if len(batch) > 1 else (batch[0], [])


def join(parts: list) -> Any:
    """One column's batches as the whole set: one tensor when they concatenate, else a list of per-sample values."""
    if all(isinstance(p, torch.Tensor) for p in parts):
        if all(p.dim() == 0 for p in parts):  # batch size 1, squeezed by the model
            return torch.stack(parts)
        if len({(p.dim(), tuple(p.shape[1:])) for p in parts}) == 1 and parts[0].dim() > 0:
            return torch.cat(parts)
    samples: list = []
    for part in parts:
        if isinstance(part, torch.Tensor):
            samples.extend(part.unbind(0) if part.dim() else [part])
        else:
            samples.extend(part)
    return samples


def batch_length(inputs: list, targets: list) -> int:
    """Samples in a batch: the length of its first batched value (targets first, as the loss weighs them)."""
    for value in (*targets, *inputs):
        if isinstance(value, torch.Tensor):
            if value.dim():
                return len(value)
        elif isinstance(value, (list, tuple)):
            return len(value)
    return 1
