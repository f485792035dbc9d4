"""Manual optimisation (Socket.train_step): a GAN with two optimizers and two schedulers, resumed exactly."""

from __future__ import annotations

import torch
from helpers.runs import EXAMPLES, build, read_events, train

DATA = ["--dataset", str(EXAMPLES / "two_inputs/dataset.py"), "--dataset-path", str(EXAMPLES),
        "--dataset-args", '{"size": 400}', "--seed", "5", "--headless", "--no-telemetry", "--no-tensorboard"]

GAN = '''
import torch

class Network(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.generator = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 16))
        self.discriminator = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.ReLU(), torch.nn.Dropout(0.2),
                                                 torch.nn.Linear(16, 1))

    def forward(self, inputs):  # validation: how real the real vectors look
        return [self.discriminator(inputs[0]).squeeze(1)]


class Socket:
    def __init__(self, model):
        self.model = model
        self.train_modules = torch.nn.ModuleList([model])
        g = torch.optim.Adam(model.generator.parameters(), lr=2e-3, betas=(0.5, 0.999))
        d = torch.optim.Adam(model.discriminator.parameters(), lr=1e-3, betas=(0.5, 0.999))
        self.optimizers = {"generator": g, "discriminator": d}
        self.schedulers = {"generator": torch.optim.lr_scheduler.ExponentialLR(g, 0.99),
                           "discriminator": torch.optim.lr_scheduler.StepLR(d, 7, 0.5)}

    def train_step(self, inputs, targets):
        real = inputs[0]
        bce = torch.nn.functional.binary_cross_entropy_with_logits
        fake = self.model.generator(torch.randn(len(real), 4))
        d_opt, g_opt = self.optimizers["discriminator"], self.optimizers["generator"]
        d_opt.zero_grad()
        d_loss = bce(self.model.discriminator(real), torch.ones(len(real), 1)) + bce(
            self.model.discriminator(fake.detach()), torch.zeros(len(real), 1))
        d_loss.backward()
        d_opt.step()
        g_opt.zero_grad()
        g_loss = bce(self.model.discriminator(fake), torch.ones(len(real), 1))
        g_loss.backward()
        g_opt.step()
        for scheduler in self.schedulers.values():
            scheduler.step()
        return {"loss": d_loss.detach() + g_loss.detach(), "d": d_loss.detach(), "g": g_loss.detach()}

    def criterion(self, outputs, targets):
        return torch.nn.functional.softplus(-outputs[0]).mean()

    def metrics(self, outputs, targets):
        return {"main": torch.sigmoid(outputs[0]).mean()}
'''


def gan(tmp_path) -> str:
    (tmp_path / "gan.py").write_text(GAN)
    return str(tmp_path / "gan.py")


def load(path) -> dict:
    return torch.load(path, weights_only=False)


def test_a_gan_trains_with_two_optimizers_and_resumes_exactly_mid_epoch(tmp_path):
    # GIVEN a GAN stopped at step 13 (epoch 2, batch 3), and the same run straight through
    common = ["--model", gan(tmp_path), *DATA, "--epochs", "3", "--batch-size", "32"]
    trainer = build([*common, "--run-dir", str(tmp_path / "stopped")])
    original = trainer.socket.train_step

    def train_step(inputs, targets):
        result = original(inputs, targets)
        if trainer.state.step == 12:  # this is the 13th step: the stop is applied at its end
            trainer.control.request("stop", id="t1")
        return result

    trainer.socket.train_step = train_step
    assert trainer.fit() == "stopped"
    trainer.close()
    assert load(tmp_path / "stopped/checkpoints/last.pt")["step"] == 13
    assert train(["--resume", str(tmp_path / "stopped"), "--headless"]) == 0
    assert train([*common, "--run-dir", str(tmp_path / "straight")]) == 0
    # THEN weights, both optimizers and both schedulers are the same, bit for bit
    a, b = load(tmp_path / "stopped/checkpoints/last.pt"), load(tmp_path / "straight/checkpoints/last.pt")
    assert a["step"] == b["step"] == 30
    assert all(torch.equal(a["model_state"][k], b["model_state"][k]) for k in a["model_state"])
    for name in ("generator", "discriminator"):
        sa, sb = a["optimizer_state"]["optimizers"][name]["state"], b["optimizer_state"]["optimizers"][name]["state"]
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k]["exp_avg"], sb[k]["exp_avg"]) for k in sa)
        assert a["optimizer_state"]["schedulers"][name] == b["optimizer_state"]["schedulers"][name]
    assert a["optimizer_state"]["schedulers"]["generator"]["last_epoch"] == 30
    # AND the step events carry both losses
    steps = [e for e in read_events(tmp_path / "straight") if e["type"] == "step"]
    assert steps and all({"d", "g"} == set(e["scalars"]) for e in steps)


def test_manual_optimisation_refuses_what_it_cannot_do_around_the_step(tmp_path, capsys):
    assert train(["--model", gan(tmp_path), *DATA, "--clip-grad-norm", "1", "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "Socket.train_step steps its own optimizers (manual optimisation), so --clip-grad-norm/--clip-grad-value" in err
    assert not (tmp_path / "run").exists()
