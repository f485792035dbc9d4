"""examples/mnist without torchvision: its files fetched over real HTTP into a --dataset-path that does not
exist yet, read as torchvision would give them, and a clear message when no mirror answers."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import importlib.util
import threading

import numpy as np
import pytest
import torch
from helpers.runs import EXAMPLES, read_events, train


def load_example():
    spec = importlib.util.spec_from_file_location("mnist_dataset_example", EXAMPLES / "mnist" / "dataset.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def mirror(tmp_path):
    """A real HTTP server on loopback serving small MNIST-format files; yields (url, {name: bytes})."""
    rng = np.random.default_rng(0)
    files = {"train-images-idx3-ubyte.gz": idx(rng.integers(0, 256, (1200, 28, 28))),
             "train-labels-idx1-ubyte.gz": idx(np.arange(1200) % 10),
             "t10k-images-idx3-ubyte.gz": idx(rng.integers(0, 256, (100, 28, 28))),
             "t10k-labels-idx1-ubyte.gz": idx(np.arange(100) % 10)}
    served = tmp_path / "served"
    served.mkdir()
    for name, data in files.items():
        (served / name).write_bytes(data)
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(served), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", files
    server.shutdown()
    server.server_close()
    thread.join()


def test_mnist_downloads_into_a_dataset_path_that_does_not_exist(tmp_path, mirror):
    url, files = mirror
    example = load_example()
    example.MIRRORS = ("http://127.0.0.1:9/", url)  # the first mirror refuses: the next one is tried
    example.FILES = {name: hashlib.md5(data).hexdigest() for name, data in files.items()}
    path = tmp_path / "data" / "mnist"
    index = example.DataSetIndex(str(path))
    assert sorted(p.name for p in (path / "MNIST" / "raw").iterdir()) == sorted(files)
    train_set, valid_set, test_set = (example.DataSet(index, mode) for mode in ("train", "valid", "test"))
    assert (len(train_set), len(valid_set), len(test_set)) == (1000, 200, 100)
    (image,), (label,) = valid_set[3]
    assert image.shape == (1, 28, 28) and image.dtype == torch.float32 and 0 <= image.min() <= image.max() <= 1
    assert label.item() == 1003 % 10


def test_mnist_offline_says_how_to_get_the_files(tmp_path):
    example = load_example()
    example.MIRRORS = ("http://127.0.0.1:9/",)
    with pytest.raises(RuntimeError, match="could not download MNIST's train-images-idx3-ubyte.gz .* copy the four files"):
        example.DataSetIndex(str(tmp_path / "data"))


def test_a_dataset_path_that_a_datasetindex_makes_need_not_exist(tmp_path):
    # GIVEN a dataset whose DataSetIndex makes its folder (a download would), and a --dataset-path not there yet
    dataset = tmp_path / "dataset.py"
    dataset.write_text(
        "import os, torch\n"
        "class DataSetIndex:\n"
        "    def __init__(self, path):\n"
        "        os.makedirs(path)\n"
        "        self.x = torch.randn(64, 4)\n"
        "class DataSet:\n"
        "    def __init__(self, index, mode='train'):\n"
        "        self.x = index.x\n"
        "    def __len__(self):\n"
        "        return len(self.x)\n"
        "    def __getitem__(self, i):\n"
        "        return [self.x[i]], [torch.tensor(i % 2)]\n")
    model = tmp_path / "model.py"
    model.write_text(
        "import torch\n"
        "class Network(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.fc = torch.nn.Linear(4, 2)\n"
        "    def forward(self, inputs):\n"
        "        return [self.fc(inputs[0])]\n"
        "class Socket:\n"
        "    def __init__(self, model):\n"
        "        self.train_modules = torch.nn.ModuleList([model])\n"
        "        self.optimizer = torch.optim.SGD(model.parameters(), lr=0.1)\n"
        "    def criterion(self, outputs, targets):\n"
        "        return torch.nn.functional.cross_entropy(outputs[0], targets[0])\n"
        "    def metrics(self, outputs, targets):\n"
        "        return {'main': (outputs[0].argmax(1) == targets[0]).float().mean()}\n")
    path = tmp_path / "data" / "new"
    # WHEN it trains THEN the run completes and the folder is there
    code = train(["--model", str(model), "--dataset", str(dataset), "--dataset-path", str(path), "--epochs", "1",
                  "--run-dir", str(tmp_path / "run"), "--no-telemetry", "--no-tensorboard", "--headless"])
    assert code == 0
    assert path.is_dir() and read_events(tmp_path / "run")[-1]["status"] == "completed"
