"""Bad data and bad code: one clear message naming the user's file, line and sample index; non-zero exit."""

from __future__ import annotations

import subprocess
import textwrap

import pytest
from helpers.runs import EXAMPLES, read_events, scorch_cmd, scorch_env

DATASET = textwrap.dedent('''
    import os
    import signal

    import torch


    class DataSet:
        def __init__(self, index, mode="train"):
            self.mode = mode

        def __len__(self):
            return 64

        def __getitem__(self, i):
            BAD
            return [torch.full((16,), float(i)), torch.zeros(5, 8)], [torch.tensor(i % 4), torch.tensor(0.0)]
''')


def run_with(tmp_path, bad_line: str, *extra: str) -> tuple[int, str]:
    dataset = tmp_path / "dataset.py"
    dataset.write_text(DATASET.replace("BAD", bad_line))
    args = ["--model", str(EXAMPLES / "two_inputs/model.py"), "--dataset", str(dataset), "--dataset-path", str(tmp_path),
            "--run-dir", str(tmp_path / "run"), "--headless", "--no-telemetry", "--no-shuffle", "--epochs", "1", *extra]
    result = subprocess.run(scorch_cmd(*args), capture_output=True, text=True, env=scorch_env(), timeout=120)
    return result.returncode, result.stderr


def test_item_of_the_wrong_shape_names_the_item(tmp_path):
    # GIVEN a dataset whose item 37 is shorter than the others
    code, err = run_with(tmp_path, "if i == 37: return [torch.zeros(15), torch.zeros(5, 8)], [torch.tensor(0), torch.tensor(0.0)]")
    # THEN the run stops with a message naming the item, the shapes and the fix; no traceback
    assert code == 2
    assert "item 37 has inputs [(15,), (5, 8)] but item 32 has [(16,), (5, 8)]" in err
    assert "dataset.py" in err and "Traceback" not in err


def test_item_of_the_wrong_type_names_the_item(tmp_path):
    # (train mode only: the sanity pass reads validation items first, and would name mode 'valid')
    code, err = run_with(tmp_path, "if self.mode == 'train' and i == 5: return 'oops'")
    assert code == 2
    assert "DataSet.__getitem__(5) in mode 'train' must return (inputs, targets), two lists; found str" in err


@pytest.mark.parametrize("workers", ["0", "2"])
def test_exception_in_getitem_names_file_line_and_index(tmp_path, workers):
    # GIVEN a dataset that raises on training item 40 (in the main process, or in a worker)
    code, err = run_with(tmp_path, "if self.mode == 'train' and i == 40: raise KeyError('label missing')", "--workers", workers)
    # THEN the user's file, line and the sample index are named, with their frames only
    assert code == 3
    assert "DataSet.__getitem__(40) in mode 'train' raised KeyError" in err
    assert 'dataset.py", line 16, in __getitem__' in err
    assert "torch/utils" not in err


@pytest.mark.slow
def test_worker_that_dies_is_explained(tmp_path):
    # GIVEN a data loader worker that is killed (as the OOM killer would), though the item loads in the main process
    code, err = run_with(tmp_path, "if i == 40 and torch.utils.data.get_worker_info() is not None: os.kill(os.getpid(), signal.SIGKILL)",
                         "--workers", "2")
    assert code == 2, err
    # (torch reports it from its SIGCHLD handler or from the loader's next(): either way, the same words)
    assert "a data loader worker died (DataLoader worker (pid" in err and "try --workers 0" in err, err
    assert "Traceback" not in err
    events = read_events(tmp_path / "run")
    assert events[-1]["type"] == "run_ended" and events[-1]["status"] == "failed"


def test_a_bad_validation_item_is_named_before_training(tmp_path):
    # GIVEN a dataset whose item 40 raises in every mode
    code, err = run_with(tmp_path, "if i == 40: raise KeyError('label missing')")
    # THEN the sanity pass, which reads validation batches before the first step, names it in mode 'valid'
    assert code == 3
    assert "DataSet.__getitem__(40) in mode 'valid' raised KeyError" in err
    assert not any(e["type"] == "step" for e in read_events(tmp_path / "run"))
