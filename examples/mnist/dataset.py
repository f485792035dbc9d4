"""MNIST through torchvision, downloaded into --dataset-path on first use.

The last 10,000 training images are the validation set; the official test set is the test set.
"""

import torch


class DataSetIndex:
    def __init__(self, path, download: bool = True):
        try:
            from torchvision import datasets, transforms
        except ImportError as exc:
            raise RuntimeError(f"the MNIST example needs torchvision ({exc}); pip install torchvision") from None
        to_tensor = transforms.ToTensor()
        try:
            self.train = datasets.MNIST(path, train=True, download=download, transform=to_tensor)
            self.test = datasets.MNIST(path, train=False, download=download, transform=to_tensor)
        except Exception as exc:  # offline, proxy, disk full: say so plainly
            raise RuntimeError(
                f"could not get MNIST into {path} ({exc}); connect to the internet once, "
                "or copy the MNIST/raw files there by hand"
            ) from None


class DataSet:
    def __init__(self, index, mode="train"):
        if mode == "test":
            self.data, self.offset, self.size = index.test, 0, len(index.test)
        else:
            self.data = index.train
            self.offset, self.size = (0, 50000) if mode == "train" else (50000, 10000)

    def __len__(self):
        return self.size

    def __getitem__(self, i):
        image, label = self.data[self.offset + i]
        return [image], [torch.tensor(label)]
