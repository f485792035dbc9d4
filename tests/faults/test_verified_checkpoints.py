"""Verified checkpoints on real processes: a byte flipped inside a weight is refused by name on every
load (--resume, -c), and --resume falls back to the newest intact checkpoint, saying which it skipped;
prev.pt is a file of its own, not another name of last.pt."""

from __future__ import annotations

import os
import struct
import zipfile
from pathlib import Path

import pytest
import torch
from helpers.faults import Job, of_type, run_args

from scorch import checkpoint as ckpt
from scorch.errors import ScorchError


def weight_offset(path: Path) -> int:
    """The file offset of the middle of the largest tensor stored in a torch checkpoint."""
    with zipfile.ZipFile(path) as archive:
        info = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        header = fh.read(30)
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    return info.header_offset + 30 + name_len + extra_len + info.file_size // 2 // 4 * 4 + 3  # a float32's top byte


def flip(path: Path, offset: int, mask: int = 0x40) -> None:
    """Change one byte in place, as a disk or a copy fault would (the inode and its other names too)."""
    with open(path, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)[0]
        fh.seek(offset)
        fh.write(bytes([byte ^ mask]))


@pytest.fixture
def trained(tmp_path) -> Path:
    """A finished three-epoch run folder."""
    run_dir = tmp_path / "run"
    with Job(run_dir, run_args(run_dir, "--epochs", "3", size=1000), logs=tmp_path) as job:
        assert job.wait() == 0, job.stderr()
    return run_dir


@pytest.mark.slow
def test_a_corrupted_last_pt_is_refused_and_resume_falls_back_to_an_intact_file(trained, tmp_path):
    last, prev = trained / "checkpoints" / "last.pt", trained / "checkpoints" / "prev.pt"
    # GIVEN epoch 3's last.pt and epoch 2's prev.pt, a file of its own
    assert ckpt.load(str(last))["epoch"] == 3 and ckpt.load(str(prev))["epoch"] == 2
    assert os.stat(last).st_ino != os.stat(prev).st_ino
    # WHEN one byte inside a weight of last.pt changes
    flip(last, weight_offset(last))
    # THEN loading it is refused by name
    with pytest.raises(ScorchError, match=f"checkpoint {last} is damaged"):
        ckpt.load(str(last))
    # AND --resume skips it (and any other name of the same damaged file), says so, and resumes from prev.pt
    with Job(trained, ["--resume", str(trained), "--headless", "--epochs", "4"], logs=tmp_path) as job:
        code = job.wait()
    assert code == 0, job.stderr()
    events = job.events()
    started = of_type(events, "run_started")[-1]
    assert started["resumed_from"] == str(prev) and started["start_epoch"] == 2
    skipped = [e["message"] for e in of_type(events, "log") if e["message"].startswith("--resume skipped")]
    assert skipped and f"--resume skipped {last}: checkpoint {last} is damaged" in skipped[0], skipped
    assert f"resumed from {prev}" in skipped[0]
    # AND the run trained on to epoch 4 from there, leaving intact checkpoints
    assert of_type(events, "run_ended")[-1]["status"] == "completed"
    assert ckpt.load(str(last))["epoch"] == 4


@pytest.mark.slow
@pytest.mark.parametrize("how", ["-c", "--resume FILE"])
def test_a_damaged_checkpoint_named_outright_is_refused_by_name(trained, tmp_path, how):
    # GIVEN a copy of a checkpoint with one byte of a weight changed
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes((trained / "checkpoints" / "last.pt").read_bytes())
    digest = trained / "checkpoints" / "last.pt.sha256"
    if digest.exists():  # the copy's digest goes with it, renamed
        (tmp_path / "damaged.pt.sha256").write_text(digest.read_text().replace("last.pt", "damaged.pt"))
    flip(damaged, weight_offset(damaged))
    # WHEN a run is started from it
    if how == "-c":
        args = run_args(tmp_path / "new", "--epochs", "1", "-c", str(damaged), size=1000)
    else:
        args = ["--resume", str(damaged), "--headless", "--run-dir", str(tmp_path / "new")]
    with Job(tmp_path / "new", args, logs=tmp_path) as job:
        code = job.wait()
    # THEN it is refused with exit 2 and one line naming the file, nothing trained
    err = job.stderr()
    assert code == 2 and f"checkpoint {damaged} is damaged" in err and "Traceback" not in err and err.count("\n") == 1, err


def test_a_checkpoint_without_a_digest_is_checked_against_its_zip_crcs(tmp_path):
    # GIVEN a torch.save file with no .sha256 beside it (copied elsewhere, or from before digests)
    path = tmp_path / "plain.pt"
    torch.save({"model_state": {"w": torch.full((1000,), 0.06)}, "epoch": 1}, path)
    assert ckpt.load(str(path))["epoch"] == 1
    # WHEN one byte inside the weight changes (torch.load alone would read 0.06 as something else)
    flip(path, weight_offset(path))
    assert torch.load(path, weights_only=False)["model_state"]["w"].max() > 1
    # THEN it is refused by name
    with pytest.raises(ScorchError, match=f"checkpoint {path} is damaged: the CRC"):
        ckpt.load(str(path))


def test_the_digest_matches_at_every_step_of_replacing_a_checkpoint(tmp_path, monkeypatch):
    # GIVEN a checkpoint, replaced by another whose rename is cut short (a crash between the steps)
    path = tmp_path / "last.pt"
    ckpt.atomic_save({"model_state": {"w": torch.ones(3)}, "epoch": 1}, str(path))
    real_replace = os.replace

    def crash_before_rename(src, dst):
        if dst == str(path):
            raise KeyboardInterrupt  # the process dies here: the digest file already lists the new digest
        return real_replace(src, dst)

    monkeypatch.setattr(ckpt.os, "replace", crash_before_rename)
    with pytest.raises(KeyboardInterrupt):
        ckpt.atomic_save({"model_state": {"w": torch.zeros(3)}, "epoch": 2}, str(path))
    monkeypatch.undo()
    # THEN the old file still verifies, and the next save leaves one digest that matches
    assert len(ckpt.read_digests(str(path))) == 2 and ckpt.load(str(path))["epoch"] == 1
    ckpt.atomic_save({"model_state": {"w": torch.zeros(3)}, "epoch": 3}, str(path))
    assert len(ckpt.read_digests(str(path))) == 1 and ckpt.load(str(path))["epoch"] == 3
