"""scikit-learn's bundled 8x8 digits (1,797 images): no download needed.

The data ships inside scikit-learn, so --dataset-path is only checked to exist
(pass this folder). Split 80/10/10 into train/valid/test with a fixed seed.
"""

import numpy as np
import torch


class DataSetIndex:
    def __init__(self, path, seed: int = 0):
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0  # 1x8x8 in [0, 1]
        labels = torch.tensor(digits.target, dtype=torch.long)
        order = np.random.RandomState(seed).permutation(len(labels))
        n_train, n_valid = int(0.8 * len(order)), int(0.1 * len(order))
        parts = {"train": order[:n_train], "valid": order[n_train : n_train + n_valid], "test": order[n_train + n_valid :]}
        self.parts = {mode: (images[idx], labels[idx]) for mode, idx in parts.items()}


class DataSet:
    def __init__(self, index, mode="train"):
        self.images, self.labels = index.parts[mode]
        self.mode = mode

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return [self.images[i]], [self.labels[i]]
