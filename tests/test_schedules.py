"""Learning-rate schedules: per-step stepping, the run's facts on the Socket, exact mid-epoch resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers.runs import EXAMPLES, build, read_events, train

# 400 samples: 320 train = 10 batches of 32 an epoch; 4 epochs = 40 optimizer steps.
DATA = ["--dataset", str(EXAMPLES / "two_inputs/dataset.py"), "--dataset-path", str(EXAMPLES),
        "--dataset-args", '{"size": 400}', "--seed", "3", "--headless", "--no-telemetry"]

MODEL = '''
import torch

class Network(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.vector = torch.nn.Linear(16, 8)
        self.classify = torch.nn.Linear(8, 4)

    def forward(self, inputs):
        return [self.classify(torch.relu(self.vector(inputs[0])))]


class Socket:
    def __init__(self, model):
        self.model = model
        self.train_modules = torch.nn.ModuleList([model])
        self.optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        SCHEDULE
        self.lrs = []  # the rate each training batch is stepped with

    def criterion(self, outputs, targets):
        if self.model.training:
            self.lrs.append(self.optimizer.param_groups[0]["lr"])
        return torch.nn.functional.cross_entropy(outputs[0], targets[0])

    def metrics(self, outputs, targets):
        return {"main": (outputs[0].argmax(1) == targets[0]).float().mean()}
'''

ONE_CYCLE = "self.scheduler = torch.optim.lr_scheduler.OneCycleLR(self.optimizer, max_lr=0.2, total_steps=TOTAL)"


def model_file(tmp_path: Path, schedule: str) -> str:
    path = tmp_path / "model.py"
    path.write_text(MODEL.replace("SCHEDULE", schedule))
    return str(path)


def load(path: Path) -> dict:
    return torch.load(path, weights_only=False)


def test_one_cycle_reaches_its_peak_at_the_expected_step(tmp_path):
    # GIVEN a OneCycleLR over 40 steps (pct_start 0.3: the peak is the lr of step 12, after 11 scheduler steps)
    model = model_file(tmp_path, ONE_CYCLE.replace("TOTAL", "40"))
    trainer = build(["--model", model, *DATA, "--run-dir", str(tmp_path / "run"), "--epochs", "4"])
    # WHEN it trains 4 epochs of 10 steps
    assert trainer.fit() == "completed"
    trainer.close()
    lrs = trainer.socket.lrs
    # THEN the scheduler stepped every optimizer step: the rate peaks at 0.2 at step 12 and anneals to ~0
    assert len(lrs) == 40
    assert max(range(40), key=lrs.__getitem__) == 11
    assert lrs[11] == pytest.approx(0.2)
    assert lrs[-1] < 1e-3 and len(set(lrs[:10])) == 10
    # AND the lr of each step event is the rate that step trained with
    steps = [e for e in read_events(tmp_path / "run") if e["type"] == "step"]
    assert steps and all(e["lr"] == pytest.approx(lrs[e["step"] - 1]) for e in steps)


def test_socket_sizes_its_schedule_from_the_run_facts(tmp_path):
    # GIVEN a Socket that reads self.scorch (set by scorch before Socket(model) is built)
    schedule = ONE_CYCLE.replace("TOTAL", "self.scorch.total_steps") + "\n        self.facts = self.scorch"
    trainer = build(["--model", model_file(tmp_path, schedule), *DATA, "--run-dir", str(tmp_path / "run"),
                     "--epochs", "3", "--accumulate", "2", "--batch-size", "16"])
    # THEN it sees the run: 3 epochs of 20 batches, 10 optimizer steps each, one rank
    facts = trainer.socket.facts
    assert (facts.epochs, facts.steps_per_epoch, facts.total_steps, facts.world_size, facts.batch_size) == (3, 10, 30, 1, 16)
    assert trainer.fit() == "completed"
    trainer.close()
    assert trainer.socket.scheduler.last_epoch == 30


def test_mid_epoch_stop_and_resume_equals_a_straight_run_bit_for_bit(tmp_path):
    # GIVEN a OneCycle run stopped at step 15 (epoch 2, batch 5), as the dashboard's stop would
    model = model_file(tmp_path, ONE_CYCLE.replace("TOTAL", "self.scorch.total_steps"))
    common = ["--model", model, *DATA, "--epochs", "4", "--no-tensorboard"]
    trainer = build([*common, "--run-dir", str(tmp_path / "stopped")])
    original = trainer.schedule.after_step

    def after_step():
        original()
        if trainer.step == 15:
            trainer.control.request("stop", id="t1")

    trainer.schedule.after_step = after_step
    assert trainer.fit() == "stopped"
    trainer.close()
    state = load(tmp_path / "stopped/checkpoints/last.pt")
    assert (state["epoch"], state["epoch_step"], state["step"]) == (1, 5, 15)
    # WHEN it is resumed, and a straight run goes alongside
    assert train(["--resume", str(tmp_path / "stopped"), "--headless"]) == 0
    assert train([*common, "--run-dir", str(tmp_path / "straight")]) == 0
    # THEN weights, optimizer and scheduler states are identical, bit for bit
    a, b = load(tmp_path / "stopped/checkpoints/last.pt"), load(tmp_path / "straight/checkpoints/last.pt")
    assert a["step"] == b["step"] == 40
    for name, tensor in a["model_state"].items():
        assert torch.equal(tensor, b["model_state"][name]), name
    for key, value in a["optimizer_state"]["state"].items():
        assert torch.equal(value["momentum_buffer"], b["optimizer_state"]["state"][key]["momentum_buffer"])
    assert a["scheduler_state"] == b["scheduler_state"]


def test_extending_a_finished_one_cycle_is_refused_with_the_fix(tmp_path, capsys):
    # GIVEN a 2-epoch OneCycle run sized from the run's facts
    model = model_file(tmp_path, ONE_CYCLE.replace("TOTAL", "self.scorch.total_steps"))
    assert train(["--model", model, *DATA, "--epochs", "2", "--run-dir", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    # WHEN it is resumed to 3 epochs
    code = train(["--resume", str(tmp_path / "run"), "--epochs", "3", "--headless"])
    # THEN one user-facing message says why and how, not an internal error
    err = capsys.readouterr().err
    assert code == 2, err
    assert "OneCycleLR of total_steps=20, but this run takes 30 optimizer steps" in err
    assert "-c/--checkpoint" in err and "internal error" not in err and "Traceback" not in err


def test_per_step_scheduler_stepped_per_epoch_is_warned_about(tmp_path):
    # GIVEN a CyclicLR the Socket asks to step once an epoch
    schedule = ("self.scheduler = torch.optim.lr_scheduler.CyclicLR(self.optimizer, 0.001, 0.1, step_size_up=5)\n"
                "        self.scheduler_interval = 'epoch'")
    assert train(["--model", model_file(tmp_path, schedule), *DATA, "--epochs", "2", "--run-dir", str(tmp_path / "run")]) == 0
    # THEN it steps once an epoch, and the run says so in a warning
    logs = [e["message"] for e in read_events(tmp_path / "run") if e["type"] == "log"]
    assert any("CyclicLR, made to step every optimizer step" in m for m in logs), logs
    assert load(tmp_path / "run/checkpoints/last.pt")["scheduler_state"]["last_epoch"] == 2


def test_warmup_lambda_steps_per_step_when_asked(tmp_path):
    # GIVEN a linear warmup over 5 steps, with scheduler_interval = "step"
    schedule = ("self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: min(1.0, (s + 1) / 5))\n"
                "        self.scheduler_interval = 'step'")
    trainer = build(["--model", model_file(tmp_path, schedule), *DATA, "--epochs", "1", "--run-dir", str(tmp_path / "run")])
    assert trainer.fit() == "completed"
    trainer.close()
    # THEN the rate climbs over the first 5 steps, then holds
    assert trainer.socket.lrs[:6] == pytest.approx([0.002, 0.004, 0.006, 0.008, 0.01, 0.01])


def test_plain_step_lr_still_steps_once_an_epoch(tmp_path):
    # GIVEN a 2018-style StepLR, no interval given: THEN it steps per epoch, as it always did
    schedule = "self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=1, gamma=0.5)"
    trainer = build(["--model", model_file(tmp_path, schedule), *DATA, "--epochs", "2", "--run-dir", str(tmp_path / "run")])
    assert trainer.fit() == "completed"
    trainer.close()
    assert sorted(set(trainer.socket.lrs)) == pytest.approx([0.005, 0.01])
    lrs = [e["lr"] for e in read_events(tmp_path / "run") if e["type"] == "epoch_end"]
    assert lrs == pytest.approx([0.01, 0.005])  # each epoch's own rate, not the next one's


def test_scheduler_interval_must_be_step_or_epoch(tmp_path, capsys):
    schedule = ONE_CYCLE.replace("TOTAL", "40") + "\n        self.scheduler_interval = 'batch'"
    assert train(["--model", model_file(tmp_path, schedule), *DATA, "--run-dir", str(tmp_path / "run")]) == 2
    assert "Socket.scheduler_interval must be 'step' or 'epoch', found 'batch'" in capsys.readouterr().err


RANDOM_DATA = '''
import torch

class DataSetIndex:
    def __init__(self, path):
        self.x = torch.randn(64, 16)  # the global generator, as many 2018 dataset files use it
        self.y = torch.randint(0, 4, (64,))

class DataSet:
    def __init__(self, index, mode):
        self.index = index

    def __len__(self):
        return 64

    def __getitem__(self, i):
        return [self.index.x[i]], [self.index.y[i]]
'''


def test_initial_weights_are_what_the_seed_gave_before_the_data_loaded_first(tmp_path):
    # GIVEN a dataset file that draws from torch's global generator (the data now loads before the model)
    (tmp_path / "dataset.py").write_text(RANDOM_DATA)
    model = model_file(tmp_path, "")
    trainer = build(["--model", model, "--dataset", str(tmp_path / "dataset.py"), "--dataset-path", str(tmp_path),
                     "--seed", "5", "--run-dir", str(tmp_path / "run"), "--no-telemetry", "--no-tensorboard"])
    trainer.close()
    # THEN the Network starts from the weights seed 5 gives it alone, as when the model loaded first
    from scorch.user_code import load_file

    torch.manual_seed(5)
    expected = load_file(model, "--model").Network().state_dict()
    assert all(torch.equal(trainer.network.state_dict()[k], v) for k, v in expected.items())
