"""The GPU path on a real GPU: device placement, 2018 metrics on GPU outputs, GPU checkpoints on a
CPU-only machine, fp16 AMP with loss scaling, no host-device sync per step, two ranks on one GPU.

Every test here needs CUDA and is skipped, with the reason, where torch sees none.
`bash bench/gpu_check.sh` runs them on a GPU machine (with the examples and the overhead bench).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from helpers.runs import EXAMPLES, example_args, read_events, scorch_cmd, scorch_env, train

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)"),
]

# A 2018-style model file: metrics and process work on numpy, as the 2018 examples did.
NUMPY_MODEL = '''
import numpy as np
import torch


class Network(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))

    def forward(self, inputs):
        return [self.body(inputs[0])]


class Socket:
    def __init__(self, model):
        self.model = model
        self.train_modules = torch.nn.ModuleList([model])
        self.optimizer = torch.optim.Adam(self.train_modules.parameters(), lr=3e-3)

    def criterion(self, outputs, targets):
        # The loop hands the batch over on the training device.
        assert outputs[0].is_cuda and targets[0].is_cuda, (outputs[0].device, targets[0].device)
        return torch.nn.functional.cross_entropy(outputs[0], targets[0])

    def metrics(self, outputs, targets):
        guesses = outputs[0].numpy().argmax(axis=1)   # 2018 style: .numpy() straight on the outputs
        return {"main": float((guesses == targets[0].numpy()).mean())}

    def process(self, inputs, outputs):
        return {"texts": {"guess": str(int(outputs[0].cpu().numpy()[0].argmax()))}}
'''


def numpy_model(tmp_path: Path) -> Path:
    path = tmp_path / "numpy_model.py"
    path.write_text(NUMPY_MODEL)
    return path


def digits_args(run_dir: Path, model: Path, *extra: str) -> list[str]:
    folder = EXAMPLES / "digits"
    return ["--model", str(model), "--dataset", str(folder / "dataset.py"), "--dataset-path", str(folder),
            "--run-dir", str(run_dir), "--headless", "--device", "cuda", "--seed", "1", *extra]


def test_batches_reach_the_gpu_and_2018_numpy_metrics_work(tmp_path):
    # GIVEN a 2018-style model file whose metrics call .numpy() on the outputs and targets
    run_dir = tmp_path / "run"
    # WHEN it trains on the GPU
    code = train(digits_args(run_dir, numpy_model(tmp_path), "--epochs", "2", "--no-telemetry"))
    # THEN criterion saw CUDA tensors (it asserts so), metrics got host tensors, and the run completed
    assert code == 0
    ends = [e for e in read_events(run_dir) if e["type"] == "epoch_end"]
    assert len(ends) == 2 and 0.5 < ends[-1]["metrics"]["main"] <= 1.0
    assert json.loads((run_dir / "run.json").read_text())["device"].startswith("cuda")


def test_a_gpu_checkpoint_loads_and_resumes_on_a_cpu_only_machine(tmp_path):
    # GIVEN a checkpoint written by a run on the GPU
    run_dir = tmp_path / "run"
    assert train(example_args("digits", run_dir, "--device", "cuda", "--epochs", "1", "--no-telemetry", "--seed", "1")) == 0
    # WHEN a process that sees no GPU loads it, and resumes the run on the CPU
    env = scorch_env()
    env["CUDA_VISIBLE_DEVICES"] = ""
    probe = ("import sys, torch; from scorch import checkpoint; s = checkpoint.load(sys.argv[1]); "
             "assert not torch.cuda.is_available(); "
             "assert all(t.device.type == 'cpu' for t in s['model_state'].values()); print(s['epoch'])")
    loaded = subprocess.run([sys.executable, "-c", probe, str(run_dir / "checkpoints/last.pt")], env=env,
                            capture_output=True, text=True, timeout=120)
    resumed = subprocess.run(scorch_cmd("--resume", str(run_dir), "--epochs", "2", "--device", "cpu"), env=env,
                             capture_output=True, text=True, timeout=300)
    # THEN the weights land on the CPU and the run goes on there
    assert loaded.returncode == 0 and loaded.stdout.strip() == "1", loaded.stderr[-2000:]
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert torch.load(run_dir / "checkpoints/last.pt", map_location="cpu", weights_only=False)["epoch"] == 2


def test_fp16_amp_scales_the_loss_on_the_gpu(tmp_path):
    # GIVEN fp16 autocast with a GradScaler on the GPU
    run_dir = tmp_path / "run"
    code = train(example_args("digits", run_dir, "--device", "cuda", "--amp", "fp16", "--epochs", "2", "--no-telemetry",
                              "--seed", "1"))
    # THEN it trains (finite losses, a useful accuracy) and the checkpoint keeps the scaler's state
    assert code == 0
    ends = [e for e in read_events(run_dir) if e["type"] == "epoch_end"]
    assert all(e["train_loss"] == e["train_loss"] for e in ends) and ends[-1]["metrics"]["main"] > 0.8
    state = torch.load(run_dir / "checkpoints/last.pt", map_location="cpu", weights_only=False)
    assert state["scaler_state"].get("scale", 0) > 0


def test_bf16_amp_trains_on_the_gpu(tmp_path):
    run_dir = tmp_path / "run"
    assert train(example_args("digits", run_dir, "--device", "cuda", "--amp", "bf16", "--epochs", "2", "--no-telemetry",
                              "--seed", "1")) == 0
    assert [e for e in read_events(run_dir) if e["type"] == "epoch_end"][-1]["metrics"]["main"] > 0.8


def test_no_host_device_sync_per_step(tmp_path):
    # GIVEN CUDA's sync debug mode, which warns at every operation that waits for the GPU
    run_dir = tmp_path / "run"
    steps = 400
    args = example_args("two_inputs", run_dir, "--dataset-args", '{"size": 20000}', "--device", "cuda", "--epochs", "1",
                        "--max-train-iterations", str(steps), "--max-valid-iterations", "2", "--max-test-iterations", "0",
                        "--no-telemetry", "--no-tensorboard", "--seed", "1")
    from scorch.trainer import Trainer

    counted: dict[str, int] = {}
    real = Trainer.train_epoch

    def counting_train_epoch(self):  # the training epoch alone: validation may sync
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                return real(self)
            finally:
                torch.cuda.set_sync_debug_mode("default")
                counted["syncs"] = sum("synchroniz" in str(w.message) for w in caught)

    Trainer.train_epoch = counting_train_epoch
    try:
        code = train(args)
    finally:
        Trainer.train_epoch = real
    # THEN the epoch of 400 steps waited for the GPU only at its few `step` events and its end
    assert code == 0
    step_events = sum(e["type"] == "step" for e in read_events(run_dir))
    assert counted["syncs"] <= 3 * step_events + 10, (counted, step_events)
    assert counted["syncs"] < steps / 4, counted


@pytest.mark.slow
def test_two_ranks_share_one_gpu(tmp_path):
    # GIVEN torchrun with 2 ranks and --device cuda on a machine with fewer GPUs than ranks
    if torch.cuda.device_count() >= 2:
        pytest.skip("this machine has a GPU per rank; the shared-GPU fallback is not exercised")
    run_dir = tmp_path / "run"
    env = scorch_env()
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "scorch.cli",
           *example_args("two_inputs", run_dir, "--dataset-args", '{"size": 640}', "--device", "cuda", "--epochs", "1",
                         "--batch-size", "16", "--no-telemetry", "--seed", "1")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    # THEN both ranks train on the one GPU (gloo carries the CUDA tensors: nccl refuses two ranks on one device)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    info = json.loads((run_dir / "run.json").read_text())
    assert info["world_size"] == 2 and info["device"].startswith("cuda")
    assert os.path.exists(run_dir / "checkpoints/last.pt")
