"""What Socket.metrics may return, and how the monitored value is read: numbers, vectors, NaN, loss-like names."""

from __future__ import annotations

import json

import pytest
from helpers.runs import EXAMPLES, read_events, train

DATA = ["--dataset", str(EXAMPLES / "two_inputs/dataset.py"), "--dataset-path", str(EXAMPLES),
        "--dataset-args", '{"size": 256}', "--seed", "1", "--headless", "--no-telemetry", "--no-tensorboard"]

MODEL = '''
import math
import numpy as np
import torch

class Network(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.classify = torch.nn.Linear(16, 4)

    def forward(self, inputs):
        return [self.classify(inputs[0])]


class Socket:
    def __init__(self, model):
        self.model = model
        self.train_modules = torch.nn.ModuleList([model])
        self.optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    def criterion(self, outputs, targets):
        return torch.nn.functional.cross_entropy(outputs[0], targets[0])

    def metrics(self, outputs, targets):
        right = outputs[0].argmax(1) == targets[0]
        accuracy = right.float().mean()
        per_class = torch.stack([right[targets[0] == c].float().mean() for c in range(4)])
        return METRICS
'''


def run(tmp_path, metrics: str, *extra: str) -> int:
    path = tmp_path / "model.py"
    path.write_text(MODEL.replace("METRICS", metrics))
    return train(["--model", str(path), *DATA, "--run-dir", str(tmp_path / "run"), *extra])


BAD_VALUES = {
    "a string": ('{"main": accuracy, "note": "good"}', "Socket.metrics returned 'note' as str; every value must be a number"),
    "None": ('{"main": accuracy, "f1": None}', "returned 'f1' as NoneType; every value must be a number (a float, a numpy "
                                              "scalar or a 0-d tensor); compute it, or leave the key out"),
    "a nested dict": ('{"main": accuracy, "by": {"a": 1.0}}', "returned 'by' as dict; every value must be a number"),
    "a vector main": ('{"main": per_class}', "returned 'main' as a vector of 4 values; 'main' is the one monitored number"),
    "a non-string key": ('{"main": accuracy, 3: 1.0}', "Socket.metrics returned a key 3 (int); keys must be strings"),
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_every_bad_metric_value_gets_its_message(tmp_path, capsys, case):
    metrics, message = BAD_VALUES[case]
    assert run(tmp_path, metrics, "--epochs", "1") == 2
    err = capsys.readouterr().err
    assert message in err and "internal error" not in err and "Traceback" not in err


def test_a_vector_is_logged_per_element_never_averaged(tmp_path):
    # GIVEN metrics with a per-class accuracy vector beside numpy and Python numbers
    assert run(tmp_path, '{"main": accuracy, "per_class": per_class, "n": np.int64(len(right)), "pi": math.pi}',
               "--epochs", "1") == 0
    metrics = next(e["metrics"] for e in read_events(tmp_path / "run") if e["type"] == "epoch_end")
    # THEN each class has its own value, and there is no averaged 'per_class'
    assert {"per_class/0", "per_class/1", "per_class/2", "per_class/3"} <= set(metrics) and "per_class" not in metrics
    assert metrics["n"] == 25.0 and metrics["pi"] == pytest.approx(3.14159265)


def test_a_loss_like_monitor_defaults_to_min_and_says_so(tmp_path):
    # GIVEN --monitor loss without --mode
    assert run(tmp_path, '{"main": accuracy}', "--epochs", "3", "--monitor", "loss") == 0
    events = read_events(tmp_path / "run")
    # THEN smaller is better: the run records mode min, says why, and best.pt is the epoch of the smallest loss
    assert json.loads((tmp_path / "run/run.json").read_text())["config"]["mode"] == "min"
    assert any("--monitor loss: smaller is better" in e["message"] for e in events if e["type"] == "log")
    losses = [e["metrics"]["loss"] for e in events if e["type"] == "epoch_end"]
    best = [e for e in events if e["type"] == "epoch_end"][-1]["best"]
    assert best["value"] == min(losses) and best["epoch"] == losses.index(min(losses))


def test_main_stays_max_without_a_word(tmp_path):
    assert run(tmp_path, '{"main": accuracy}', "--epochs", "1") == 0
    assert json.loads((tmp_path / "run/run.json").read_text())["config"]["mode"] == "max"
    assert not [e for e in read_events(tmp_path / "run") if e["type"] == "log" and "--mode" in e["message"]]


def test_a_nan_main_is_reported(tmp_path):
    # GIVEN a main that is NaN every epoch
    assert run(tmp_path, '{"main": float("nan")}', "--epochs", "2") == 0
    logs = [e["message"] for e in read_events(tmp_path / "run") if e["type"] == "log"]
    # THEN each epoch says so, and that no best.pt was written
    assert sum("the monitored main is NaN" in m for m in logs) == 2
    assert any("no best.pt yet" in m for m in logs)
    assert not (tmp_path / "run/checkpoints/best.pt").exists()
