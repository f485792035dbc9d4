"""Checkpoint storage: atomic writes survive kill -9; policy keeps last/best/keep-N."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from conftest import scorch_env

from scorch import checkpoint as ckpt
from scorch.errors import ScorchError

WRITER = textwrap.dedent("""
    import sys, torch
    from scorch.checkpoint import atomic_save
    path = sys.argv[1]
    i = 0
    while True:
        i += 1
        atomic_save({"model_state": {"w": torch.full((1_000_000,), float(i))}, "epoch": i}, path)
        print(i, flush=True)
""")


@pytest.mark.slow
def test_kill_9_mid_save_leaves_a_loadable_checkpoint(tmp_path):
    # GIVEN a process that rewrites a 4 MB checkpoint in a loop
    path = tmp_path / "last.pt"
    rng = random.Random(0)
    for trial in range(8):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, env=scorch_env())
        proc.stdout.readline()  # at least one complete save
        # WHEN it is killed with SIGKILL at a random instant
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        # THEN the file loads and is one whole checkpoint, never a mix or a torn file
        state = ckpt.load(str(path))
        w = state["model_state"]["w"]
        assert w.numel() == 1_000_000 and bool((w == float(state["epoch"])).all()), f"trial {trial}"


def test_atomic_save_failure_keeps_previous(tmp_path, monkeypatch):
    # GIVEN a good checkpoint
    path = tmp_path / "last.pt"
    ckpt.atomic_save({"model_state": {}, "epoch": 1}, str(path))

    # WHEN the next write fails half way (a full disk)
    def full_disk(obj, fh):
        fh.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError):
        ckpt.atomic_save({"model_state": {}, "epoch": 2}, str(path))
    monkeypatch.undo()
    # THEN the old one is intact and no temporary file is left behind
    assert ckpt.load(str(path))["epoch"] == 1
    assert os.listdir(tmp_path) == ["last.pt"]
    assert "the disk is full" in ckpt.describe_write_error(OSError(28, "x"), str(path))


def test_loading_garbage_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ScorchError, match="could not be read"):
        ckpt.load(str(bad))
    with pytest.raises(ScorchError, match="no such file"):
        ckpt.load(str(tmp_path / "missing.pt"))


def test_policy_writes_last_every_period_best_on_improvement_and_prunes(tmp_path):
    policy = ckpt.CheckpointPolicy(str(tmp_path), dump_period=2, keep=2)
    assert policy.at_epoch_end(0, improved=True, last_epoch=False) == [("best.pt", "best"), ("epoch-1.pt", "keep")]
    assert policy.at_epoch_end(1, improved=False, last_epoch=False) == [("last.pt", "epoch"), ("epoch-2.pt", "keep")]
    assert policy.at_epoch_end(2, improved=False, last_epoch=True)[0] == ("last.pt", "epoch")
    for n in (1, 2, 3):
        (tmp_path / f"epoch-{n}.pt").write_bytes(b"")
    policy.prune(2)
    assert sorted(os.listdir(tmp_path)) == ["epoch-2.pt", "epoch-3.pt"]
