"""Synthetic two-input data made from a fixed seed: no files, no download.

--dataset-path is only checked to exist; --dataset-args '{"size": 4096}' sets the size.
"""

import torch


class DataSetIndex:
    def __init__(self, path, size: int = 2048, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        vector = torch.randn(size, 16, generator=g)
        sequence = torch.randn(size, 5, 8, generator=g)
        score = vector[:, :4].sum(1) + sequence[:, :, 0].mean(1)
        label = torch.bucketize(score, torch.tensor([-1.0, 0.0, 1.0]))
        value = vector[:, 4] - sequence[:, 0, 1]
        n_train, n_valid = int(0.8 * size), int(0.1 * size)
        cuts = {"train": slice(0, n_train), "valid": slice(n_train, n_train + n_valid), "test": slice(n_train + n_valid, size)}
        self.parts = {mode: (vector[c], sequence[c], label[c], value[c]) for mode, c in cuts.items()}


class DataSet:
    def __init__(self, index, mode="train"):
        self.vector, self.sequence, self.label, self.value = index.parts[mode]

    def __len__(self):
        return len(self.label)

    def __getitem__(self, i):
        return [self.vector[i], self.sequence[i]], [self.label[i], self.value[i]]
