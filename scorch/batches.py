"""The data side of the loop: which samples each rank sees (`EpochSampler`), how items become batches
(`collate`), the loaders, and batches that fail to load explained (which item, why)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler, default_collate

from scorch import data, user_code
from scorch.errors import ScorchError


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

    def __iter__(self) -> Iterator[int]:
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
            return [[torch.stack(column) if isinstance(column[0], torch.Tensor) else default_collate(column)  # type: ignore[arg-type]
                     for column in zip(*part, strict=True)] for part in zip(*batch, strict=True)]
        except (TypeError, RuntimeError, ValueError):
            pass
    return default_collate(batch)


_SEQUENCES = (list, tuple)


def make_loader(dataset: Any, sampler: Sampler, batch_size: int, workers: int, seed: int, device: torch.device,
                dataset_path: str) -> DataLoader:
    # The DataSet's own collate_fn, else scorch's (looked up now: bench/overhead.py swaps in torch's).
    collate_fn = user_code.own_collate(dataset, dataset_path) or data.collate_for(dataset, collate)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, collate_fn=collate_fn,
                      pin_memory=device.type == "cuda", persistent_workers=workers > 0,
                      generator=torch.Generator().manual_seed(seed))


def to_device(items: list, device: torch.device) -> list:
    return [x.to(device, non_blocking=True) if isinstance(x, torch.Tensor) else x for x in items]


def to_host(items: list) -> list:
    """Tensors, and the per-sample tensors of a variable-length column, on the host."""
    return [x.cpu() if isinstance(x, torch.Tensor) else [y.cpu() if isinstance(y, torch.Tensor) else y for y in x]
            if isinstance(x, list) else x for x in items]


def explained(loader: DataLoader, dataset_path: str, mode: str) -> Iterator[Any]:
    """The loader's batches; a batch that fails to load is explained (which item, why) and ends the run."""
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
            size = loader.batch_size or 1
            indices = list(loader.sampler)[done * size : (done + 1) * size]
            raise user_code.explain_batch_failure(exc, loader.dataset, indices, dataset_path, mode) from exc
        yield data.as_inputs_targets(batch)
        done += 1
