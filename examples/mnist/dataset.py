"""MNIST, downloaded into --dataset-path on first use (the folder is made if missing); numpy only.

No torchvision: pip's torchvision must match the installed torch exactly, and a plain
`pip install torchvision` replaces a CPU torch with a multi-GB CUDA build. The files are the
four original gzip files in torchvision's layout (PATH/MNIST/raw), so a folder torchvision
filled is used as it is. The last 10,000 training images (a sixth) are the validation set; the
official test set is the test set.
"""

import gzip
import hashlib
import os
import urllib.request

import numpy as np
import torch

MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
FILES = {  # name: md5, as torchvision checks them
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}


def md5(path):
    with open(path, "rb") as fh:
        return hashlib.md5(fh.read()).hexdigest()


def fetch(folder, name):
    """FOLDER/NAME, downloaded from the first mirror that answers (atomically: a cut download is not kept)."""
    path = os.path.join(folder, name)
    if os.path.exists(path) and md5(path) == FILES[name]:
        return path
    errors = []
    for mirror in MIRRORS:
        try:
            with urllib.request.urlopen(mirror + name, timeout=60) as response:
                data = response.read()
        except OSError as exc:
            errors.append(f"{mirror}: {exc}")
            continue
        if hashlib.md5(data).hexdigest() != FILES[name]:
            errors.append(f"{mirror}: wrong checksum")
            continue
        with open(path + ".part", "wb") as fh:
            fh.write(data)
        os.replace(path + ".part", path)
        return path
    raise RuntimeError(f"could not download MNIST's {name} into {folder} ({'; '.join(errors)}); connect to the "
                       f"internet once, or copy the four files {', '.join(FILES)} there by hand")


def read_idx(path):
    """An IDX file (MNIST's format): a big-endian header of dimension sizes, then uint8 data."""
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


class DataSetIndex:
    def __init__(self, path, download: bool = True):
        folder = os.path.join(path, "MNIST", "raw")
        os.makedirs(folder, exist_ok=True)
        if download:
            files = {name: fetch(folder, name) for name in FILES}
        else:
            files = {name: os.path.join(folder, name) for name in FILES}
        # Images as float32 in [0, 1], one channel: what torchvision's ToTensor() gives.
        self.train = (torch.from_numpy(read_idx(files["train-images-idx3-ubyte.gz"]).copy()).unsqueeze(1).float() / 255,
                      torch.from_numpy(read_idx(files["train-labels-idx1-ubyte.gz"]).astype(np.int64)))
        self.test = (torch.from_numpy(read_idx(files["t10k-images-idx3-ubyte.gz"]).copy()).unsqueeze(1).float() / 255,
                     torch.from_numpy(read_idx(files["t10k-labels-idx1-ubyte.gz"]).astype(np.int64)))


class DataSet:
    def __init__(self, index, mode="train"):
        if mode == "test":
            (self.images, self.labels), self.offset, self.size = index.test, 0, len(index.test[1])
        else:
            self.images, self.labels = index.train
            valid = len(self.labels) // 6  # 10,000 of MNIST's 60,000
            self.offset, self.size = (0, len(self.labels) - valid) if mode == "train" else (len(self.labels) - valid, valid)

    def __len__(self):
        return self.size

    def __getitem__(self, i):
        return [self.images[self.offset + i]], [self.labels[self.offset + i]]
