"""Gradient clipping: bounded by the flag with AMP and accumulation, its norm in step events and TensorBoard."""

from __future__ import annotations

import pytest
import torch
from helpers.runs import build, read_events, tiny_args, train


def record_gradients(trainer) -> list[torch.Tensor]:
    """The gradients the user's optimizer steps with, every step (after scorch's unscale and clip)."""
    seen: list[torch.Tensor] = []
    optimizer = trainer.socket.optimizer
    original = optimizer.step

    def step(*args, **kwargs):
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        seen.append(torch.cat([g.detach().flatten().float() for g in grads]))
        return original(*args, **kwargs)

    optimizer.step = step
    return seen


@pytest.mark.parametrize(("amp", "accumulate"), [("fp16", "1"), ("off", "2"), ("bf16", "1")])
def test_clip_grad_norm_bounds_the_norm_the_optimizer_steps_with(tmp_path, amp, accumulate):
    # GIVEN a run clipping the gradient norm to 0.05, far below what this model's gradients measure
    trainer = build(tiny_args(tmp_path / "run", "--epochs", "1", "--clip-grad-norm", "0.05", "--amp", amp,
                              "--accumulate", accumulate, "--no-telemetry"))
    seen = record_gradients(trainer)
    # WHEN it trains an epoch
    assert trainer.fit() == "completed"
    trainer.close()
    # THEN every step stepped with gradients of norm 0.05 exactly (clipped after unscaling: not 0.05 / 65536)
    assert len(seen) >= 5
    norms = [float(g.norm()) for g in seen]
    assert norms == pytest.approx([0.05] * len(norms), rel=1e-3)
    # AND the step events carry the norm before clipping, above the bound
    logged = [e["grad_norm"] for e in read_events(tmp_path / "run") if e["type"] == "step"]
    assert logged and all(n > 0.05 for n in logged)


def test_clip_grad_value_bounds_every_element(tmp_path):
    trainer = build(tiny_args(tmp_path / "run", "--epochs", "1", "--clip-grad-value", "0.001", "--amp", "fp16",
                              "--no-telemetry", "--no-tensorboard"))
    seen = record_gradients(trainer)
    assert trainer.fit() == "completed"
    trainer.close()
    assert seen and max(float(g.abs().max()) for g in seen) == pytest.approx(0.001)


def test_without_clipping_the_gradients_are_untouched_and_no_norm_is_logged(tmp_path):
    # GIVEN a plain run: THEN the optimizer sees gradients above 0.05, and step events have no norm
    trainer = build(tiny_args(tmp_path / "run", "--epochs", "1", "--no-telemetry", "--no-tensorboard"))
    seen = record_gradients(trainer)
    assert trainer.fit() == "completed"
    trainer.close()
    assert max(float(g.norm()) for g in seen) > 0.05
    assert {e["grad_norm"] for e in read_events(tmp_path / "run") if e["type"] == "step"} == {None}


def test_grad_norm_reaches_tensorboard_and_log_grad_norm_does_not_clip(tmp_path):
    # GIVEN --log-grad-norm alone, and the same run plain
    assert train(tiny_args(tmp_path / "logged", "--epochs", "1", "--log-grad-norm", "--no-telemetry")) == 0
    assert train(tiny_args(tmp_path / "plain", "--epochs", "1", "--no-telemetry", "--no-tensorboard")) == 0
    # THEN the weights are the same bit for bit (nothing clipped)
    a = torch.load(tmp_path / "logged/checkpoints/last.pt", weights_only=False)["model_state"]
    b = torch.load(tmp_path / "plain/checkpoints/last.pt", weights_only=False)["model_state"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    # AND TensorBoard has train/grad_norm at the steps of the step events, with their values
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "logged/tensorboard"))
    acc.Reload()
    steps = [e for e in read_events(tmp_path / "logged") if e["type"] == "step"]
    assert [(s.step, s.value) for s in acc.Scalars("train/grad_norm")] == [
        (e["step"], pytest.approx(e["grad_norm"], rel=1e-6)) for e in steps]
    assert [s.step for s in acc.Scalars("train/lr")] == [e["step"] for e in steps]


@pytest.mark.parametrize(("flags", "message"), [
    (("--clip-grad-norm", "-1"), "--clip-grad-norm -1.0: must be a positive number"),
    (("--clip-grad-value", "nan"), "--clip-grad-value nan: must be a positive number"),
    (("--clip-grad-norm", "1", "--clip-grad-value", "1"), "--clip-grad-norm and --clip-grad-value: pick one"),
])
def test_bad_clipping_flags_are_refused(tmp_path, capsys, flags, message):
    assert train(tiny_args(tmp_path / "run", *flags)) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
