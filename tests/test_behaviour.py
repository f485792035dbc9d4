"""The loop as model code expects it: `training` flags, a sanity pass, errors in metrics/process, extra scalars."""

from __future__ import annotations

import pytest
import torch
from helpers.runs import EXAMPLES, build, read_events, tiny_args, train

DATA = ["--dataset", str(EXAMPLES / "two_inputs/dataset.py"), "--dataset-path", str(EXAMPLES),
        "--dataset-args", '{"size": 256}', "--seed", "1", "--headless", "--no-telemetry", "--no-tensorboard"]

MODEL = '''
import torch

class Network(torch.nn.Module):
    seen = []  # (phase, network.training, backbone.training, head.training) at each forward

    def __init__(self):
        super().__init__()
        self.backbone = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.BatchNorm1d(16), torch.nn.Dropout(0.5))
        self.head = torch.nn.Linear(16, 4)

    def forward(self, inputs):
        Network.seen.append((torch.is_grad_enabled(), self.training, self.backbone.training, self.head.training))
        return [self.head(self.backbone(inputs[0]))]


class Socket:
    def __init__(self, model):
        self.model = model
        self.train_modules = torch.nn.ModuleList([model.head])  # the backbone stays frozen
        self.optimizer = torch.optim.SGD(model.head.parameters(), lr=0.1)

    def criterion(self, outputs, targets):
        return torch.nn.functional.cross_entropy(outputs[0], targets[0])

    def metrics(self, outputs, targets):
        METRICS_BUG
        return {"main": (outputs[0].argmax(1) == targets[0]).float().mean()}

    def process(self, inputs, outputs):
        PROCESS_BUG
        return {"texts": {"guess": str(int(outputs[0][0].argmax()))}}
'''


def model(tmp_path, metrics_bug: str = "pass", process_bug: str = "pass") -> str:
    path = tmp_path / "model.py"
    path.write_text(MODEL.replace("METRICS_BUG", metrics_bug).replace("PROCESS_BUG", process_bug))
    return str(path)


def test_network_says_it_trains_while_its_frozen_backbone_stays_in_eval(tmp_path):
    # GIVEN a Network whose head alone trains
    trainer = build(["--model", model(tmp_path), *DATA, "--epochs", "1", "--run-dir", str(tmp_path / "run")])
    before = {k: v.clone() for k, v in trainer.network.backbone.state_dict().items()}
    assert trainer.fit() == "completed"
    trainer.close()
    seen = type(trainer.network).seen
    # THEN every training forward saw network.training True, the backbone in eval, the head training
    training = {flags[1:] for flags in seen if flags[0]}
    assert training == {(True, False, True)}
    # AND every validation/test forward saw everything in eval
    assert {flags[1:] for flags in seen if not flags[0]} == {(False, False, False)}
    # AND the frozen backbone (BatchNorm statistics too) did not move
    assert all(torch.equal(before[k], v) for k, v in trainer.network.backbone.state_dict().items())


def test_a_bug_in_metrics_is_reported_before_any_training(tmp_path, capsys):
    # GIVEN metrics that raise
    code = train(["--model", model(tmp_path, metrics_bug="raise KeyError('f1')"), *DATA, "--epochs", "3",
                  "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    # THEN the run fails at once, in the sanity pass, naming metrics and the user's line
    assert code == 3, err
    assert "your code raised KeyError while computing Socket.metrics on the valid set, in the sanity pass before training" in err
    assert "model.py" in err and "--sanity-batches 0 skips it" in err
    assert not [e for e in read_events(tmp_path / "run") if e["type"] in ("step", "epoch_end")]


def test_a_bug_in_process_is_reported_before_any_training(tmp_path, capsys):
    code = train(["--model", model(tmp_path, process_bug="1 / 0"), *DATA, "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 3, err
    assert "your code raised ZeroDivisionError while running Socket.process on test batch 1, in the sanity pass" in err
    assert not [e for e in read_events(tmp_path / "run") if e["type"] == "step"]


def test_a_bug_in_process_after_an_epoch_keeps_that_epochs_checkpoint(tmp_path, capsys):
    # GIVEN process failing on its second call (the sanity pass makes the first)
    bug = "Socket.calls = getattr(Socket, 'calls', 0) + 1\n        if Socket.calls == 2:\n            1 / 0"
    code = train(["--model", model(tmp_path, process_bug=bug), *DATA, "--epochs", "3", "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    # THEN the error names process and the epoch, and epoch 1's checkpoint and epoch_end are there
    assert code == 3, err
    assert "while running Socket.process on test batch 1 after epoch 1 (its checkpoint is saved)" in err
    events = read_events(tmp_path / "run")
    assert [e["epoch"] for e in events if e["type"] == "epoch_end"] == [0]
    assert torch.load(tmp_path / "run/checkpoints/last.pt", weights_only=False)["epoch"] == 1
    assert events[-1]["type"] == "run_ended" and events[-1]["status"] == "failed"


def test_the_sanity_pass_changes_nothing_in_the_run(tmp_path):
    # GIVEN the same run with and without the sanity pass; metrics and dropout draw from the global generator
    source = open(model(tmp_path, metrics_bug="torch.rand(1)")).read().replace("self.train_modules = torch.nn.ModuleList([model.head])",
                                     "self.train_modules = torch.nn.ModuleList([model])").replace(
                                     "model.head.parameters()", "model.parameters()")
    (tmp_path / "whole.py").write_text(source)
    for name, flag in (("with", "2"), ("without", "0")):
        assert train(["--model", str(tmp_path / "whole.py"), *DATA, "--epochs", "1", "--sanity-batches", flag,
                      "--run-dir", str(tmp_path / name)]) == 0
    # THEN the weights are the same bit for bit
    a = torch.load(tmp_path / "with/checkpoints/last.pt", weights_only=False)["model_state"]
    b = torch.load(tmp_path / "without/checkpoints/last.pt", weights_only=False)["model_state"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def two_inputs_with(tmp_path, returned: str) -> str:
    source = (EXAMPLES / "two_inputs/model.py").read_text().replace(
        "return torch.nn.functional.cross_entropy(outputs[0], targets[0]) + torch.nn.functional.mse_loss(outputs[1], targets[1])",
        "ce = torch.nn.functional.cross_entropy(outputs[0], targets[0])\n"
        "        mse = torch.nn.functional.mse_loss(outputs[1], targets[1])\n"
        f"        return {returned}")
    path = tmp_path / f"model_{abs(hash(returned))}.py"
    path.write_text(source)
    return str(path)


def test_extra_scalars_from_criterion_reach_step_events_and_tensorboard(tmp_path):
    # GIVEN a criterion returning {"loss": ..., "ce": ..., "mse": ...}, and the same one returning the sum alone
    for name, returned in (("dict", '{"loss": ce + mse, "ce": ce, "mse": mse, "three": 3}'), ("plain", "ce + mse")):
        args = tiny_args(tmp_path / name, "--epochs", "1", "--no-telemetry")
        args[args.index("--model") + 1] = two_inputs_with(tmp_path, returned)
        assert train(args) == 0
    # THEN it trains on 'loss' alone: the same weights, bit for bit
    a = torch.load(tmp_path / "dict/checkpoints/last.pt", weights_only=False)["model_state"]
    b = torch.load(tmp_path / "plain/checkpoints/last.pt", weights_only=False)["model_state"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    # AND every step event carries the window means of the others, which add up to its loss
    steps = [e for e in read_events(tmp_path / "dict") if e["type"] == "step"]
    assert steps and all(set(e["scalars"]) == {"ce", "mse", "three"} for e in steps)
    assert all(e["scalars"]["ce"] + e["scalars"]["mse"] == pytest.approx(e["loss"], rel=1e-5) for e in steps)
    assert {e["scalars"]["three"] for e in steps} == {3.0}
    # AND TensorBoard has them against the step
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "dict/tensorboard"))
    acc.Reload()
    assert [s.step for s in acc.Scalars("train/ce_step")] == [e["step"] for e in steps]


def test_a_criterion_dict_without_loss_is_explained(tmp_path, capsys):
    args = tiny_args(tmp_path / "run", "--epochs", "1")
    args[args.index("--model") + 1] = two_inputs_with(tmp_path, '{"ce": ce, "mse": mse}')
    assert train(args) == 2
    assert "Socket.criterion returned a dict with keys ['ce', 'mse'] but no 'loss'" in capsys.readouterr().err
