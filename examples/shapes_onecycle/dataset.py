"""Synthetic 1x24x24 images of four shapes (square, disc, cross, ring) at random places and sizes, with noise.

Made from a fixed seed in memory: no files, no download. --dataset-args '{"size": 4000}' sets the size
(80 % train, 10 % valid, 10 % test).
"""

import torch


def draw(kind: int, g: torch.Generator, side: int = 24) -> torch.Tensor:
    y, x = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    r = int(torch.randint(4, 8, (1,), generator=g))
    cy, cx = (int(v) for v in torch.randint(r + 1, side - r - 1, (2,), generator=g))
    dy, dx = (y - cy).abs(), (x - cx).abs()
    d = ((y - cy) ** 2 + (x - cx) ** 2).float().sqrt()
    shape = [(dy <= r) & (dx <= r), d <= r, ((dy <= 1) & (dx <= r)) | ((dx <= 1) & (dy <= r)), (d <= r) & (d >= r - 2)][kind]
    return (shape.float() + 0.3 * torch.randn(side, side, generator=g)).unsqueeze(0)


class DataSetIndex:
    def __init__(self, path, size: int = 4000, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        labels = torch.randint(0, 4, (size,), generator=g)
        images = torch.stack([draw(int(k), g) for k in labels])
        n_train, n_valid = int(0.8 * size), int(0.1 * size)
        cuts = {"train": slice(0, n_train), "valid": slice(n_train, n_train + n_valid), "test": slice(n_train + n_valid, size)}
        self.parts = {mode: (images[c], labels[c]) for mode, c in cuts.items()}


class DataSet:
    def __init__(self, index, mode="train"):
        self.images, self.labels = index.parts[mode]

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return [self.images[i]], [self.labels[i]]
