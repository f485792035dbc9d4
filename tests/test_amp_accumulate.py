"""--accumulate and --amp on the CPU."""

from __future__ import annotations

import pytest
import torch
from helpers.runs import read_events, tiny_args, train


def weights(run_dir):
    return torch.load(run_dir / "checkpoints/last.pt", weights_only=False)["model_state"]


def test_accumulating_two_half_batches_equals_one_full_batch(tmp_path):
    # GIVEN the same data in the same order, 12 batches of 32 vs 24 batches of 16 accumulated in pairs
    common = ("--epochs", "1", "--no-shuffle", "--no-telemetry", "--no-tensorboard")
    assert train(tiny_args(tmp_path / "full", "--batch-size", "32", "--max-train-iterations", "12", *common)) == 0
    assert train(tiny_args(tmp_path / "accumulated", "--batch-size", "16", "--accumulate", "2", "--max-train-iterations", "24", *common)) == 0
    # THEN the optimizer took the same steps and the weights agree to float rounding
    full, accumulated = weights(tmp_path / "full"), weights(tmp_path / "accumulated")
    assert max((full[k] - accumulated[k]).abs().max().item() for k in full) < 1e-5
    steps = [e["step"] for e in read_events(tmp_path / "accumulated") if e["type"] == "epoch_end"]
    assert steps == [12]


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_trains_and_resumes(tmp_path, amp):
    # GIVEN a run in mixed precision
    assert train(tiny_args(tmp_path / "run", "--epochs", "2", "--amp", amp, "--no-telemetry")) == 0
    events = read_events(tmp_path / "run")
    losses = [e["train_loss"] for e in events if e["type"] == "epoch_end"]
    # THEN it learns (finite, falling loss) and its checkpoint carries the scaler state for resume
    assert all(loss == loss for loss in losses) and losses[1] < losses[0]
    state = torch.load(tmp_path / "run/checkpoints/last.pt", weights_only=False)
    assert ("scale" in state["scaler_state"]) == (amp == "fp16")
    assert train(["--resume", str(tmp_path / "run"), "--epochs", "3", "--headless"]) == 0
    assert read_events(tmp_path / "run")[-1]["status"] == "completed"


def test_accumulate_must_be_positive(tmp_path, capsys):
    assert train(tiny_args(tmp_path / "run", "--accumulate", "0")) == 2
    assert "--accumulate 0: must be at least 1" in capsys.readouterr().err
