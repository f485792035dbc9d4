"""The loop end to end on the examples: resume, frozen modules, NaN, early stop, logs, TensorBoard."""

from __future__ import annotations

import json
import subprocess

import pytest
import torch
from helpers.runs import EXAMPLES, example_args, read_events, scorch_cmd, scorch_env, tiny_args, train

from scorch.events_log import read_events as decode_events


def load(path):
    return torch.load(path, weights_only=False)


def test_resume_equals_straight_run_bit_for_bit(tmp_path):
    # GIVEN a straight run of 6 epochs and a run of 4 epochs resumed to 6, same seed
    assert train(tiny_args(tmp_path / "straight", "--epochs", "6")) == 0
    assert train(tiny_args(tmp_path / "split", "--epochs", "4")) == 0
    # WHEN the 4-epoch run is resumed from its folder
    assert train(["--resume", str(tmp_path / "split"), "--epochs", "6", "--headless"]) == 0
    # THEN the weights and optimizer state are identical, bit for bit
    a, b = load(tmp_path / "straight/checkpoints/last.pt"), load(tmp_path / "split/checkpoints/last.pt")
    assert a["epoch"] == b["epoch"] == 6 and a["step"] == b["step"]
    for name, tensor in a["model_state"].items():
        assert torch.equal(tensor, b["model_state"][name]), name
    assert a["optimizer_state"]["state"][0]["momentum_buffer"].equal(b["optimizer_state"]["state"][0]["momentum_buffer"])
    # AND the resumed run kept one event log whose seq goes on strictly increasing
    seqs = [e["seq"] for e in read_events(tmp_path / "split")]
    assert seqs == list(range(1, len(seqs) + 1))
    assert [e["type"] for e in read_events(tmp_path / "split")].count("run_started") == 2


def test_resume_mid_epoch_continues_exactly(tmp_path):
    # GIVEN a run stopped mid-epoch by a checkpoint request (as the dashboard would)
    from scorch.cli import (
        build_parser,
        train_main,  # noqa: F401
    )
    from scorch.config import from_namespace
    from scorch.trainer import build

    args = tiny_args(tmp_path / "stopped", "--epochs", "2", "--no-tensorboard")
    trainer = build(from_namespace(build_parser().parse_args(args)))
    original = trainer.train_epoch

    def stop_after_some_steps():
        steps = trainer.loaders["train"]
        del steps
        trainer.control.request("stop", id="t1")
        return original()

    # The request is seen at the first step boundary: the epoch stops after one step.
    trainer.train_epoch = stop_after_some_steps
    assert trainer.fit() == "stopped"
    trainer.close()
    state = load(tmp_path / "stopped/checkpoints/last.pt")
    assert (state["epoch"], state["epoch_step"]) == (0, 1)
    # WHEN it is resumed, THEN it ends where a straight run ends
    assert train(["--resume", str(tmp_path / "stopped"), "--headless"]) == 0
    assert train(tiny_args(tmp_path / "straight", "--epochs", "2", "--no-tensorboard")) == 0
    a, b = load(tmp_path / "stopped/checkpoints/last.pt"), load(tmp_path / "straight/checkpoints/last.pt")
    for name, tensor in a["model_state"].items():
        assert torch.equal(tensor, b["model_state"][name]), name
    ended = [e for e in read_events(tmp_path / "stopped") if e["type"] == "run_ended"]
    assert [e["status"] for e in ended] == ["stopped", "completed"]


FROZEN_MODEL = '''
import torch

class Network(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.frozen = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.BatchNorm1d(16), torch.nn.Dropout(0.5))
        self.head = torch.nn.Linear(16, 4)

    def forward(self, inputs):
        return [self.head(self.frozen(inputs[0])), inputs[0][:, 0]]

class Socket:
    def __init__(self, model):
        self.model = model
        self.train_modules = torch.nn.ModuleList([model.head])
        # An optimizer over every parameter: frozen ones must still not move.
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.1)

    def criterion(self, outputs, targets):
        return torch.nn.functional.cross_entropy(outputs[0], targets[0])

    def metrics(self, outputs, targets):
        return {"main": (outputs[0].argmax(1) == targets[0]).float().mean()}
'''


def test_only_train_modules_change(tmp_path):
    # GIVEN a model whose Socket trains only the head, with BatchNorm in the frozen part
    model = tmp_path / "model.py"
    model.write_text(FROZEN_MODEL)
    args = tiny_args(tmp_path / "run", "--epochs", "2")
    args[args.index("--model") + 1] = str(model)
    torch.manual_seed(1)
    # WHEN it trains
    assert train(args) == 0
    state = load(tmp_path / "run/checkpoints/last.pt")["model_state"]
    # THEN every frozen tensor (weights, BatchNorm statistics) is bit-identical to a fresh init with the same seed
    import importlib.util

    spec = importlib.util.spec_from_file_location("frozen_model", model)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(1)
    fresh = module.Network().state_dict()
    frozen = [k for k in fresh if k.startswith("frozen.")]
    assert frozen and all(torch.equal(state[k], fresh[k]) for k in frozen)
    # AND the head did train
    assert not torch.equal(state["head.weight"], fresh["head.weight"])


def test_nan_loss_stops_with_message_and_keeps_last_checkpoint(tmp_path, capsys):
    # GIVEN a model whose loss turns NaN in the second epoch
    source = (EXAMPLES / "two_inputs/model.py").read_text().replace(
        "return torch.nn.functional.cross_entropy(outputs[0], targets[0]) + torch.nn.functional.mse_loss(outputs[1], targets[1])",
        "loss = torch.nn.functional.cross_entropy(outputs[0], targets[0])\n"
        "        self.calls = getattr(self, 'calls', 0) + 1\n"
        "        return loss * float('nan') if self.calls > 20 else loss",
    )
    model = tmp_path / "model.py"
    model.write_text(source)
    args = tiny_args(tmp_path / "run", "--epochs", "3")
    args[args.index("--model") + 1] = str(model)
    # WHEN it trains
    code = train(args)
    err = capsys.readouterr().err
    # THEN it stops non-zero naming the epoch and step, and the epoch-1 checkpoint still loads, finite
    assert code == 4
    # (the sanity pass's 2 validation batches, then 13 training and 2 validation batches an epoch: call 21 is epoch 2's
    # 4th step)
    assert "loss became nan at epoch 2, step 4;" in err
    state = load(tmp_path / "run/checkpoints/last.pt")
    assert state["epoch"] == 1 and all(torch.isfinite(t).all() for t in state["model_state"].values())
    ended = read_events(tmp_path / "run")[-1]
    assert ended["type"] == "run_ended" and ended["status"] == "failed" and "nan" in ended["reason"]


def test_on_nan_skip_skips_bad_batches(tmp_path):
    source = (EXAMPLES / "two_inputs/model.py").read_text().replace(
        "return torch.nn.functional.cross_entropy(outputs[0], targets[0]) + torch.nn.functional.mse_loss(outputs[1], targets[1])",
        "loss = torch.nn.functional.cross_entropy(outputs[0], targets[0])\n"
        "        self.calls = getattr(self, 'calls', 0) + 1\n"
        "        return loss * float('inf') if self.calls % 5 == 0 else loss",
    )
    model = tmp_path / "model.py"
    model.write_text(source)
    args = tiny_args(tmp_path / "run", "--epochs", "1", "--on-nan", "skip")
    args[args.index("--model") + 1] = str(model)
    assert train(args) == 0
    state = load(tmp_path / "run/checkpoints/last.pt")
    assert all(torch.isfinite(t).all() for t in state["model_state"].values())
    skipped = [e for e in read_events(tmp_path / "run") if e["type"] == "log" and "skipped batch" in e["message"]]
    assert len(skipped) == 3  # the sanity pass's 2 calls, then 13 batches (calls 3-15): every 5th is inf (5, 10, 15)


def test_early_stopping_ends_the_run(tmp_path):
    # GIVEN a monitored metric that cannot improve by the min delta asked
    args = tiny_args(tmp_path / "run", "--epochs", "20", "--early-stop-patience", "2", "--min-delta", "10")
    # WHEN it trains, THEN it stops after 1 + patience epochs with status early_stopped
    assert train(args) == 0
    events = read_events(tmp_path / "run")
    assert [e["epoch"] for e in events if e["type"] == "epoch_end"] == [0, 1, 2]
    assert events[-1]["type"] == "run_ended" and events[-1]["status"] == "early_stopped"
    assert json.loads((tmp_path / "run/run.json").read_text())["state"] == "early_stopped"
    assert load(tmp_path / "run/checkpoints/last.pt")["monitor"]["wait"] == 2


def test_best_checkpoint_follows_mode(tmp_path):
    # GIVEN --monitor loss --mode min, THEN best.pt holds the epoch of the lowest validation loss
    assert train(tiny_args(tmp_path / "run", "--epochs", "4", "--monitor", "loss", "--mode", "min", "--keep", "2")) == 0
    losses = [e["metrics"]["loss"] for e in read_events(tmp_path / "run") if e["type"] == "epoch_end"]
    best = load(tmp_path / "run/checkpoints/best.pt")
    assert best["epoch"] == losses.index(min(losses)) + 1
    folder = tmp_path / "run/checkpoints"
    names = ["best.pt", "epoch-3.pt", "epoch-4.pt", "last.pt", "prev.pt"]  # prev.pt: the last.pt before the newest
    assert sorted(p.name for p in folder.iterdir()) == sorted(names + [name + ".sha256" for name in names])
    assert load(folder / "prev.pt")["epoch"] == 3 and (folder / "prev.pt").stat().st_ino != (folder / "last.pt").stat().st_ino
    # AND an epoch's checkpoints are one file, written once: the kept epochs hold their own epochs
    assert (folder / "epoch-4.pt").stat().st_ino == (folder / "last.pt").stat().st_ino
    assert [load(folder / f"epoch-{n}.pt")["epoch"] for n in (3, 4)] == [3, 4]


def test_events_are_ordered_and_complete(tmp_path):
    assert train(tiny_args(tmp_path / "run", "--epochs", "2")) == 0
    events = read_events(tmp_path / "run")
    types = [e["type"] for e in events]
    assert types[0] == "run_started" and types[-1] == "run_ended"
    assert {"step", "epoch_end", "checkpoint_saved"} <= set(types)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert all(isinstance(e["time"], float) for e in events)
    epoch_end = next(e for e in events if e["type"] == "epoch_end")
    assert {"epoch", "train_loss", "metrics"} <= set(epoch_end) and "main" in epoch_end["metrics"]
    # The same objects decode with the protocol module the dashboard uses.
    assert [e.seq for e in decode_events(str(tmp_path / "run/events.jsonl"))] == [e["seq"] for e in events]
    info = json.loads((tmp_path / "run/run.json").read_text())
    assert info["state"] == "completed" and info["world_size"] == 1 and info["config"]["seed"] == 1


def test_validation_metrics_cover_the_whole_set(tmp_path):
    # GIVEN a batch size that does not divide the validation set (51 samples, batches of 16)
    assert train(tiny_args(tmp_path / "run", "--epochs", "1", "--batch-size", "16")) == 0
    # WHEN we recompute accuracy over all of it from the saved weights
    import importlib.util

    def module(name):
        spec = importlib.util.spec_from_file_location(name, EXAMPLES / "two_inputs" / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    net = module("model").Network()
    net.load_state_dict(load(tmp_path / "run/checkpoints/last.pt")["model_state"])
    net.eval()
    index = module("dataset").DataSetIndex(".", size=512)
    vector, sequence, label, _ = index.parts["valid"]
    with torch.no_grad():
        accuracy = (net([vector, sequence])[0].argmax(1) == label).float().mean().item()
    # THEN the logged metric is the accuracy of the whole set, not an average of per-batch ratios
    logged = next(e for e in read_events(tmp_path / "run") if e["type"] == "epoch_end")["metrics"]["main"]
    assert logged == pytest.approx(accuracy, abs=1e-6)


def test_checkpoint_flag_loads_weights(tmp_path):
    assert train(tiny_args(tmp_path / "a", "--epochs", "1")) == 0
    assert train(tiny_args(tmp_path / "b", "--epochs", "1", "-c", str(tmp_path / "a/checkpoints/last.pt"), "--max-train-iterations", "0")) == 0
    a, b = load(tmp_path / "a/checkpoints/last.pt"), load(tmp_path / "b/checkpoints/last.pt")
    assert all(torch.equal(a["model_state"][k], b["model_state"][k]) for k in a["model_state"])


def test_existing_run_folder_is_not_overwritten(tmp_path, capsys):
    assert train(tiny_args(tmp_path / "run", "--epochs", "1")) == 0
    assert train(tiny_args(tmp_path / "run", "--epochs", "1")) == 2
    assert "already holds a run; continue it with --resume" in capsys.readouterr().err


def test_tensorboard_files_read_back(tmp_path):
    # GIVEN a digits run (its Socket.process returns images and texts)
    assert train(example_args("digits", tmp_path / "run", "--epochs", "2", "--max-test-iterations", "1")) == 0
    # WHEN TensorBoard's own reader opens the folder
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "run/tensorboard"), size_guidance={"images": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    # THEN losses, metrics, images and texts are there, one scalar point per epoch
    assert {"train/loss", "valid/main", "valid/accuracy", "train/lr", "train/loss_step"} <= set(tags["scalars"])
    assert [s.step for s in acc.Scalars("valid/main")] == [1, 2]
    events = read_events(tmp_path / "run")
    assert [s.value for s in acc.Scalars("valid/main")] == pytest.approx(
        [e["metrics"]["main"] for e in events if e["type"] == "epoch_end"])
    assert "test/digit/0" in tags["images"]
    assert any(t.startswith("test/prediction/0") for t in tags["tensors"])


@pytest.mark.slow
def test_digits_example_reaches_95_percent(tmp_path):
    # The README's main command (fewer epochs would do; the default is 10).
    assert train(example_args("digits", tmp_path / "run", "--seed", "0")) == 0
    best = max(e["metrics"]["main"] for e in read_events(tmp_path / "run") if e["type"] == "epoch_end")
    assert best >= 0.95


def test_headless_output_has_no_carriage_returns(tmp_path):
    # GIVEN scorch-train writing to a pipe (a log file on a cluster)
    result = subprocess.run(scorch_cmd(*tiny_args(tmp_path / "run", "--epochs", "2", "--log-interval", "0")),
                            capture_output=True, text=True, env=scorch_env(), timeout=120)
    # THEN it prints plain lines: progress, one per epoch, the end; no \r, no escape codes
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stdout and "\x1b" not in result.stdout
    lines = result.stdout.splitlines()
    assert sum(line.startswith("epoch 2/2 done") for line in lines) == 1
    assert any(line.startswith("epoch 1/2 step ") for line in lines)
    assert lines[-1] == "run ended: completed"


def test_bad_flag_values_are_refused(tmp_path, capsys):
    assert train(tiny_args(tmp_path / "run", "--epochs", "0")) == 2
    assert "--epochs 0: must be at least 1" in capsys.readouterr().err
    assert train(["--resume", str(tmp_path / "missing")]) == 2
    assert f"--resume {tmp_path / 'missing'}: no such run folder or checkpoint file" in capsys.readouterr().err


def test_monitor_must_name_a_metric(tmp_path, capsys):
    assert train(tiny_args(tmp_path / "run", "--epochs", "1", "--monitor", "f1")) == 2
    assert "--monitor f1" in capsys.readouterr().err
