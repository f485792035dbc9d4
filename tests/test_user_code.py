"""The 2018 contract: every breach gets one message naming file, class/method, expected, found."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest
from helpers.runs import EXAMPLES, scorch_cmd, scorch_env, tiny_args, train

from scorch import user_code
from scorch.errors import ScorchError, UserCodeError

GOOD_NETWORK = """
import torch

class Network(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 2)

    def forward(self, inputs):
        return [self.layer(inputs[0])]
"""

GOOD_SOCKET = """
class Socket:
    def __init__(self, model):
        self.model = model
        self.train_modules = torch.nn.ModuleList([model])
        self.optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    def criterion(self, outputs, targets):
        return torch.nn.functional.cross_entropy(outputs[0], targets[0])

    def metrics(self, outputs, targets):
        return {"main": (outputs[0].argmax(1) == targets[0]).float().mean()}
"""

GOOD_DATASET = """
import torch

class DataSet:
    def __init__(self, index, mode="train"):
        self.x = torch.randn(8, 4)
        self.y = torch.arange(8) % 2

    def __len__(self):
        return 8

    def __getitem__(self, i):
        return [self.x[i]], [self.y[i]]
"""


def write(tmp_path: Path, name: str, source: str) -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return str(path)


BROKEN_MODELS = {
    "no Network": ("import torch\n" + GOOD_SOCKET, "no class Network"),
    "Network not a Module": ("import torch\nclass Network:\n    pass\n" + GOOD_SOCKET, "must subclass torch.nn.Module"),
    "Network is a function": ("import torch\ndef Network():\n    pass\n" + GOOD_SOCKET, "Network should be a class"),
    "no Socket": (GOOD_NETWORK, "no class Socket"),
    "no criterion": (GOOD_NETWORK + GOOD_SOCKET.replace("def criterion", "def criterium"), "Socket has no method criterion"),
    "no metrics": (GOOD_NETWORK + GOOD_SOCKET.replace("def metrics", "def metricz"), "Socket has no method metrics"),
    "no optimizer": (GOOD_NETWORK + GOOD_SOCKET.replace("self.optimizer =", "self.optimiser ="), "Socket.optimizer must be a torch.optim.Optimizer"),
    "optimizer is a class": (
        GOOD_NETWORK + GOOD_SOCKET.replace("torch.optim.SGD(model.parameters(), lr=0.1)", "torch.optim.SGD"),
        "found type",
    ),
    "no train_modules": (GOOD_NETWORK + GOOD_SOCKET.replace("self.train_modules =", "self.modules ="), "Socket has no train_modules"),
    "train_modules not modules": (
        GOOD_NETWORK + GOOD_SOCKET.replace("torch.nn.ModuleList([model])", "'everything'"),
        "train_modules must be a torch.nn.ModuleList, found str",
    ),
    "scheduler without step": (
        GOOD_NETWORK + GOOD_SOCKET.replace("self.model = model", "self.model = model\n        self.scheduler = 3"),
        "Socket.scheduler must be a torch.optim.lr_scheduler object",
    ),
    "syntax error": (GOOD_NETWORK + "def broken(:\n", "syntax error at line"),
}


@pytest.mark.parametrize("case", sorted(BROKEN_MODELS))
def test_broken_model_file_is_explained(tmp_path, case):
    # GIVEN a model file that breaks the contract in one way
    source, expected = BROKEN_MODELS[case]
    path = write(tmp_path, "model.py", source)
    # WHEN scorch loads it
    with pytest.raises(ScorchError) as err:
        user_code.load_model(path, {})
    # THEN one message names the file and what is wrong
    assert expected in err.value.message
    assert str(path) in err.value.message or "--model" in err.value.message


def test_model_args_that_network_rejects_name_the_class(tmp_path):
    path = write(tmp_path, "model.py", GOOD_NETWORK + GOOD_SOCKET)
    with pytest.raises(UserCodeError) as err:
        user_code.load_model(path, {"width": 3})
    assert "Network(**{'width': 3})" in err.value.message
    assert "unexpected keyword argument 'width'" in err.value.message


def test_error_inside_user_code_shows_only_their_frames(tmp_path):
    # GIVEN a Network whose constructor raises deep in the user's own helper
    source = GOOD_NETWORK.replace("super().__init__()", "super().__init__()\n        helper()") + GOOD_SOCKET
    source += "\ndef helper():\n    raise ValueError('bad width')\n"
    path = write(tmp_path, "model.py", source)
    with pytest.raises(UserCodeError) as err:
        user_code.load_model(path, {})
    tb = err.value.user_traceback
    # THEN the traceback names their file and lines, and none of scorch's or torch's
    assert "model.py" in tb and "in helper" in tb and "ValueError: bad width" in tb
    assert "scorch/" not in tb and "site-packages" not in tb


BROKEN_DATASETS = {
    "no DataSet": ("import torch\nclass Data:\n    pass\n", "no class DataSet"),
    "no __getitem__": ("class DataSet:\n    def __init__(self, index, mode):\n        pass\n    def __len__(self):\n        return 3\n", "DataSet has no __getitem__"),
    "item not a pair": (GOOD_DATASET.replace("return [self.x[i]], [self.y[i]]", "return self.x[i]"), "must return (inputs, targets), two lists; found Tensor"),
    "inputs not a list": (GOOD_DATASET.replace("return [self.x[i]], [self.y[i]]", "return self.x[i], [self.y[i]]"), "must return inputs as a list"),
    "targets not a list": (GOOD_DATASET.replace("return [self.x[i]], [self.y[i]]", "return [self.x[i]], self.y[i]"), "must return targets as a list"),
    "empty train set": (GOOD_DATASET.replace("return 8", "return 0"), "the train DataSet is empty"),
    "mode not accepted": (GOOD_DATASET.replace('def __init__(self, index, mode="train"):', "def __init__(self, index):"), "DataSet(index, mode='train')"),
}


@pytest.mark.parametrize("case", sorted(BROKEN_DATASETS))
def test_broken_dataset_file_is_explained(tmp_path, case):
    source, expected = BROKEN_DATASETS[case]
    path = write(tmp_path, "dataset.py", source)
    with pytest.raises(ScorchError) as err:
        user_code.load_datasets(path, str(tmp_path), {})
    assert expected in err.value.message


def test_dataset_without_index_gets_the_path(tmp_path):
    # GIVEN a dataset file with no DataSetIndex
    source = "class DataSet:\n    def __init__(self, index, mode):\n        self.index = index\n    def __len__(self):\n        return 1\n    def __getitem__(self, i):\n        return [1.0], [0]\n"
    path = write(tmp_path, "dataset.py", source)
    # WHEN loaded, THEN each DataSet receives the dataset path in the index's place
    datasets = user_code.load_datasets(path, str(tmp_path), {})
    assert {ds.index for ds in datasets.values()} == {str(tmp_path)}


@pytest.mark.parametrize("bad, message", [
    ("--model-args=[1]", "--model-args must be a JSON object"),
    ("--model-args={width: 3}", "--model-args must be a JSON object"),
])
def test_model_args_must_be_json_objects(tmp_path, capsys, bad, message):
    with pytest.raises(SystemExit) as exit_info:
        train(tiny_args(tmp_path / "run", bad))
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_missing_model_file_message(tmp_path, capsys):
    code = train(["--model", str(tmp_path / "nope.py"), "--dataset", "d.py", "--dataset-path", ".", "--run-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2
    assert f"--model {tmp_path / 'nope.py'}: no such file" in err


def test_cli_without_socket_exits_nonzero_without_traceback(tmp_path):
    # GIVEN a model file with a Network but no Socket
    model = write(tmp_path, "model.py", GOOD_NETWORK)
    folder = EXAMPLES / "two_inputs"
    # WHEN scorch-train runs it as a user would
    result = subprocess.run(
        scorch_cmd("--model", model, "--dataset", str(folder / "dataset.py"), "--dataset-path", str(folder),
                   "--run-dir", str(tmp_path / "run")),
        capture_output=True, text=True, env=scorch_env(), timeout=120,
    )
    # THEN it exits non-zero with one message naming Socket, and no traceback
    assert result.returncode == 2
    assert "Socket" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_bug_in_forward_is_reported_with_users_frames(tmp_path, capsys):
    # GIVEN a Network whose forward has a shape bug
    source = GOOD_NETWORK.replace("return [self.layer(inputs[0])]", "return [self.layer(inputs[0].t())]") + GOOD_SOCKET
    model = write(tmp_path, "model.py", source)
    dataset = write(tmp_path, "dataset.py", GOOD_DATASET)
    # WHEN training starts
    code = train(["--model", model, "--dataset", dataset, "--dataset-path", str(tmp_path), "--run-dir", str(tmp_path / "run"),
                  "--headless", "--batch-size", "3"])
    err = capsys.readouterr().err
    # THEN the error names their line in forward, without scorch's frames
    assert code == 3
    assert "your code raised RuntimeError" in err
    assert 'model.py", line 10, in forward' in err
    assert "trainer.py" not in err


def test_forward_must_return_a_list(tmp_path, capsys):
    source = GOOD_NETWORK.replace("return [self.layer(inputs[0])]", "return self.layer(inputs[0])") + GOOD_SOCKET
    source = source.replace("outputs[0]", "outputs")
    model = write(tmp_path, "model.py", source)
    dataset = write(tmp_path, "dataset.py", GOOD_DATASET)
    code = train(["--model", model, "--dataset", dataset, "--dataset-path", str(tmp_path), "--run-dir", str(tmp_path / "run"), "--headless"])
    assert code == 2
    assert "Network.forward must return a list of tensors, found Tensor" in capsys.readouterr().err


def test_metrics_without_main_is_explained(tmp_path, capsys):
    source = (GOOD_NETWORK + GOOD_SOCKET).replace('{"main":', '{"accuracy":')
    model = write(tmp_path, "model.py", source)
    dataset = write(tmp_path, "dataset.py", GOOD_DATASET)
    code = train(["--model", model, "--dataset", dataset, "--dataset-path", str(tmp_path), "--run-dir", str(tmp_path / "run"), "--headless"])
    assert code == 2
    assert "Socket.metrics returned keys ['accuracy'] but no 'main'" in capsys.readouterr().err


def test_criterion_must_return_a_scalar(tmp_path, capsys):
    source = (GOOD_NETWORK + GOOD_SOCKET).replace(
        "torch.nn.functional.cross_entropy(outputs[0], targets[0])",
        "torch.nn.functional.cross_entropy(outputs[0], targets[0], reduction='none')")
    model = write(tmp_path, "model.py", source)
    dataset = write(tmp_path, "dataset.py", GOOD_DATASET)
    code = train(["--model", model, "--dataset", dataset, "--dataset-path", str(tmp_path), "--run-dir", str(tmp_path / "run"),
                  "--headless", "--batch-size", "4"])
    assert code == 2
    assert "Socket.criterion must return a scalar tensor (0-d, e.g. loss.mean()), found Tensor of shape (4,)" in capsys.readouterr().err
