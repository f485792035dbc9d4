"""The char-transformer and the OneCycle CNN examples train as the README's table says (here at toy sizes)."""

from __future__ import annotations

from helpers.runs import example_args, read_events, train


def test_char_transformer_trains_with_warmup_clipping_and_streaming(tmp_path):
    # GIVEN the nanoGPT-style example at a toy size, clipped, validated streaming
    args = example_args("char_transformer", tmp_path / "run", "--model-args", '{"width": 32, "heads": 2, "layers": 1, "context": 16}',
                        "--dataset-args", '{"context": 16, "chars": 20000}', "--epochs", "2", "--max-train-iterations", "12",
                        "--max-valid-iterations", "4", "--max-test-iterations", "1", "--clip-grad-norm", "1.0",
                        "--valid", "streaming", "--seed", "0", "--no-telemetry")
    assert train(args) == 0
    events = read_events(tmp_path / "run")
    steps = [e for e in events if e["type"] == "step"]
    # THEN the rate warmed up step by step, the norm was logged, and validation gave accuracy and perplexity
    assert steps[0]["lr"] < steps[-1]["lr"] or steps[0]["lr"] < max(e["lr"] for e in steps)
    assert all(e["grad_norm"] is not None for e in steps)
    metrics = [e["metrics"] for e in events if e["type"] == "epoch_end"]
    assert len(metrics) == 2 and {"main", "perplexity", "loss"} <= set(metrics[-1])
    assert metrics[-1]["loss"] < metrics[0]["loss"] + 0.5 and metrics[-1]["perplexity"] < 128


def test_shapes_cnn_steps_its_one_cycle_every_step(tmp_path):
    args = example_args("shapes_onecycle", tmp_path / "run", "--dataset-args", '{"size": 400}', "--epochs", "2",
                        "--batch-size", "32", "--clip-grad-norm", "1.0", "--max-test-iterations", "1", "--seed", "0",
                        "--no-telemetry")
    assert train(args) == 0
    events = read_events(tmp_path / "run")
    lrs = [e["lr"] for e in events if e["type"] == "step"]
    # THEN the one cycle rose to near its 0.2 peak within the run and came back down (10 steps an epoch, 20 in all)
    assert max(lrs) > 0.1 and lrs[-1] < 0.01
    assert [e["type"] for e in events][-1] == "run_ended" and events[-1]["status"] == "completed"
