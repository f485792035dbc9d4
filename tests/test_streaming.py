"""--valid streaming: per-batch states summed over batches (and ranks) equal the whole-set metrics on sums and counts."""

from __future__ import annotations

import pytest
from helpers.runs import EXAMPLES, read_events, train

DATA = ["--dataset", str(EXAMPLES / "two_inputs/dataset.py"), "--dataset-path", str(EXAMPLES),
        "--dataset-args", '{"size": 700}', "--seed", "4", "--headless", "--no-telemetry", "--no-tensorboard",
        "--batch-size", "16"]

STATE = '''

def _counts(outputs, targets):
    right = (outputs[0].argmax(1) == targets[0])
    return {"correct": right.sum(), "seen": len(right), "per_class": torch.bincount(targets[0][right], minlength=4),
            "squared": ((outputs[1] - targets[1]) ** 2).sum()}


def _finish(state):
    return {"main": state["correct"] / state["seen"], "seen": state["seen"], "per_class": state["per_class"],
            "mse": state["squared"] / state["seen"]}


Socket.metrics = lambda self, outputs, targets: _finish(_counts(outputs, targets))
Socket.metric_state = lambda self, outputs, targets: _counts(outputs, targets)
Socket.metrics_from_state = lambda self, state: _finish(state)
'''


def model(tmp_path, extra: str = STATE) -> str:
    path = tmp_path / "model.py"
    path.write_text((EXAMPLES / "two_inputs/model.py").read_text() + extra)
    return str(path)


def metrics_of(run_dir) -> list[dict]:
    return [e["metrics"] for e in read_events(run_dir) if e["type"] == "epoch_end"]


def test_streaming_equals_the_whole_set_on_sums_and_counts(tmp_path):
    # GIVEN the same run validated over the whole set and streaming (70 samples: 4 full batches and a short one)
    path = model(tmp_path)
    for name in ("whole", "streaming"):
        assert train(["--model", path, *DATA, "--epochs", "2", "--valid", name, "--run-dir", str(tmp_path / name)]) == 0
    whole, streamed = metrics_of(tmp_path / "whole"), metrics_of(tmp_path / "streaming")
    # THEN counts and ratios of counts are equal exactly, float sums to rounding, the mean loss too
    assert [m["seen"] for m in streamed] == [70.0, 70.0]
    for a, b in zip(whole, streamed):
        assert set(a) == set(b)
        assert all(a[k] == b[k] for k in ("main", "seen", "per_class/0", "per_class/1", "per_class/2", "per_class/3"))
        assert b["mse"] == pytest.approx(a["mse"], rel=1e-6) and b["loss"] == pytest.approx(a["loss"], rel=1e-6)


def test_without_metrics_from_state_the_summed_state_is_the_metrics(tmp_path):
    extra = STATE + "\ndel Socket.metrics_from_state\nSocket.metric_state = lambda self, o, t: {'main': 1, 'n': len(t[0])}\n"
    assert train(["--model", model(tmp_path, extra), *DATA, "--epochs", "1", "--valid", "streaming",
                  "--run-dir", str(tmp_path / "run"), "--max-valid-iterations", "3"]) == 0
    assert metrics_of(tmp_path / "run")[0]["n"] == 48.0 and metrics_of(tmp_path / "run")[0]["main"] == 3.0


def test_streaming_needs_metric_state(tmp_path, capsys):
    assert train(["--model", model(tmp_path, ""), *DATA, "--valid", "streaming", "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "--valid streaming:" in err and "Socket has no metric_state(outputs, targets)" in err
    assert not (tmp_path / "run").exists()


def test_a_bad_metric_state_is_explained_before_training(tmp_path, capsys):
    extra = STATE + "\nSocket.metric_state = lambda self, o, t: {'names': 'abc'}\n"
    assert train(["--model", model(tmp_path, extra), *DATA, "--valid", "streaming", "--run-dir", str(tmp_path / "run")]) == 2
    assert "Socket.metric_state returned 'names' as str; each value must be a number or a numeric tensor" in capsys.readouterr().err
    assert not [e for e in read_events(tmp_path / "run") if e["type"] == "step"]
