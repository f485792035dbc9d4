"""Real models on 2 ranks: clipping after the gradient average; variable-length validation outputs gathered whole."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch
from helpers.runs import example_args, read_events, scorch_env, train

pytestmark = pytest.mark.slow

# 640 samples: 512 to train, so 2 ranks x 16 and 1 rank x 32 take the same 16 steps on the same samples.
CLIPPED = ("--dataset-args", '{"size": 640}', "--seed", "1", "--no-shuffle", "--epochs", "1", "--no-tensorboard",
           "--no-telemetry", "--clip-grad-norm", "0.05")


def launch(cmd: list[str], timeout: float = 240) -> tuple[int, str]:
    """Run a launcher and its ranks in their own session; all of them end with it."""
    env = scorch_env()
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        out = ""
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    return proc.returncode, out


def torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "scorch.cli", *args]


def mpirun(*args: str) -> list[str]:
    root = ["--allow-run-as-root"] if os.geteuid() == 0 else []
    return [shutil.which("mpirun"), *root, "--oversubscribe", "--bind-to", "none", "-np", "2", sys.executable, "-m",
            "scorch.cli", *args]


HOROVOD = shutil.which("mpirun") is not None and importlib.util.find_spec("horovod") is not None
LAUNCHERS = [pytest.param(torchrun, id="torchrun"),
             pytest.param(mpirun, id="mpirun-horovod", marks=pytest.mark.skipif(not HOROVOD, reason="needs mpirun and Horovod"))]


@pytest.fixture(scope="module")
def one_rank_clipped(tmp_path_factory) -> dict:
    run_dir = tmp_path_factory.mktemp("one") / "run"
    assert train(example_args("two_inputs", run_dir, "--batch-size", "32", *CLIPPED)) == 0
    return torch.load(run_dir / "checkpoints/last.pt", weights_only=False)


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_two_ranks_clip_the_averaged_gradient_like_one_rank(one_rank_clipped, tmp_path, launcher):
    # GIVEN 2 ranks of batch 16 clipping the gradient norm to 0.05 (far below the gradients' own norm)
    run_dir = tmp_path / "run"
    code, out = launch(launcher(*example_args("two_inputs", run_dir, "--batch-size", "16", *CLIPPED)))
    assert code == 0, out[-3000:]
    # THEN they end with the weights of one rank of batch 32 clipped alike: each rank clipped the averaged gradient
    state = torch.load(run_dir / "checkpoints/last.pt", weights_only=False)
    assert state["step"] == one_rank_clipped["step"] == 16
    difference = max((state["model_state"][k] - one_rank_clipped["model_state"][k]).abs().max().item()
                     for k in state["model_state"])
    assert difference < 1e-5
    # AND rank 0's step events carry the norm before clipping
    norms = [e["grad_norm"] for e in read_events(run_dir) if e["type"] == "step"]
    assert norms and all(n > 0.05 for n in norms)


def test_two_ranks_validate_variable_length_outputs_over_the_whole_set(tmp_path):
    # GIVEN the LSTM tagger on sequences of different lengths, padded per batch by DataSet.collate_fn, on 2 ranks
    from test_data import SEQUENCES, TAGGER

    (tmp_path / "model.py").write_text(TAGGER.replace("Socket.seen.append", "print('metrics saw', len(outputs[0]), flush=True) or Socket.seen.append"))
    (tmp_path / "dataset.py").write_text(SEQUENCES)
    run_dir = tmp_path / "run"
    code, out = launch(torchrun("--model", str(tmp_path / "model.py"), "--dataset", str(tmp_path / "dataset.py"),
                                "--dataset-path", str(tmp_path), "--dataset-args", '{"pad": true}', "--batch-size", "4",
                                "--epochs", "1", "--seed", "1", "--headless", "--no-telemetry", "--no-tensorboard",
                                "--run-dir", str(run_dir)))
    assert code == 0, out[-3000:]
    # THEN Socket.metrics saw all 30 validation sequences once (one tensor each), and counted every token
    assert "metrics saw 30" in out
    tokens = [e["metrics"]["tokens"] for e in read_events(run_dir) if e["type"] == "epoch_end"]
    assert tokens == [expected_valid_tokens()]


def expected_valid_tokens() -> int:
    """Tokens of the 30 validation sequences, built as the dataset file builds them."""
    import types

    from test_data import SEQUENCES

    module = types.ModuleType("sequences")
    exec(SEQUENCES, module.__dict__)
    return sum(len(s) for s in module.DataSetIndex(".").sequences[80:110])


def test_two_ranks_streaming_equals_two_ranks_whole_set(tmp_path):
    # GIVEN the same 2-rank run validated over the whole set (gathered to rank 0) and streaming (summed states)
    from helpers.runs import EXAMPLES
    from test_streaming import STATE

    (tmp_path / "model.py").write_text((EXAMPLES / "two_inputs/model.py").read_text() + STATE)
    metrics = {}
    for name in ("whole", "streaming"):
        run_dir = tmp_path / name
        code, out = launch(torchrun("--model", str(tmp_path / "model.py"), "--dataset", str(EXAMPLES / "two_inputs/dataset.py"),
                                    "--dataset-path", str(EXAMPLES), "--dataset-args", '{"size": 700}', "--batch-size", "16",
                                    "--epochs", "1", "--seed", "1", "--headless", "--no-telemetry", "--no-tensorboard",
                                    "--valid", name, "--run-dir", str(run_dir)))
        assert code == 0, out[-3000:]
        metrics[name] = next(e["metrics"] for e in read_events(run_dir) if e["type"] == "epoch_end")
    # THEN the 70 validation samples were counted once each, and every count agrees exactly
    whole, streamed = metrics["whole"], metrics["streaming"]
    assert streamed["seen"] == whole["seen"] == 70.0
    assert all(streamed[k] == whole[k] for k in ("main", "per_class/0", "per_class/1", "per_class/2", "per_class/3"))
    assert streamed["loss"] == pytest.approx(whole["loss"], rel=1e-6)
