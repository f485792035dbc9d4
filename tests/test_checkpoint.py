"""Checkpoint storage: atomic writes survive kill -9; policy keeps last/best/keep-N."""

from __future__ import annotations

import os
import random
import signal
import stat
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from helpers.runs import scorch_env

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
    assert sorted(os.listdir(tmp_path)) == ["last.pt", "last.pt.sha256"]
    assert "the disk is full" in ckpt.describe_write_error(OSError(28, "x"), str(path))


def test_a_linked_name_keeps_its_checkpoint_when_the_first_name_is_written_again(tmp_path):
    last, best = str(tmp_path / "last.pt"), str(tmp_path / "best.pt")
    # GIVEN epoch 1's last.pt, and best.pt made a second name of it
    ckpt.atomic_save({"model_state": {"w": torch.ones(3)}, "epoch": 1}, last)
    ckpt.atomic_link(last, best)
    assert os.stat(best).st_ino == os.stat(last).st_ino
    # WHEN epoch 2 writes last.pt, and links best.pt to it twice (the second time both names are one file already)
    ckpt.atomic_save({"model_state": {"w": torch.zeros(3)}, "epoch": 2}, last)
    assert ckpt.load(best)["epoch"] == 1 and ckpt.load(last)["epoch"] == 2
    ckpt.atomic_link(last, best)
    ckpt.atomic_link(last, best)
    # THEN best.pt is epoch 2, and no temporary name is left behind
    assert ckpt.load(best)["epoch"] == 2
    assert sorted(os.listdir(tmp_path)) == ["best.pt", "best.pt.sha256", "last.pt", "last.pt.sha256"]
    # AND checkpoints are readable like the rest of the run folder (the temporary file they start as is 0600)
    assert stat.S_IMODE(os.stat(best).st_mode) == 0o644


def test_a_linked_name_is_a_copy_where_the_file_system_has_no_hard_links(tmp_path, monkeypatch):
    last, best = str(tmp_path / "last.pt"), str(tmp_path / "best.pt")
    ckpt.atomic_save({"model_state": {"w": torch.arange(5.0)}, "epoch": 3}, last)
    # GIVEN a file system that refuses hard links
    def no_links(src, dst):
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(ckpt.os, "link", no_links)
    # WHEN best.pt is made the same checkpoint as last.pt
    ckpt.atomic_link(last, best)
    # THEN it is a file of its own with the same bytes
    assert os.stat(best).st_ino != os.stat(last).st_ino
    assert open(best, "rb").read() == open(last, "rb").read()
    assert stat.S_IMODE(os.stat(best).st_mode) == 0o644
    assert torch.equal(ckpt.load(best)["model_state"]["w"], torch.arange(5.0))
    assert sorted(os.listdir(tmp_path)) == ["best.pt", "best.pt.sha256", "last.pt", "last.pt.sha256"]


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
