"""Items beyond fixed-shape pairs: a DataSet's collate_fn, variable lengths, (inputs, targets, ids), no test targets."""

from __future__ import annotations

import pytest
import torch
from helpers.runs import build, read_events, train

TAGGER = '''
import torch

class Network(torch.nn.Module):
    """An LSTM tagger: a tag for every token of a sequence."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(20, 8, padding_idx=0)
        self.lstm = torch.nn.LSTM(8, 16, batch_first=True)
        self.tag = torch.nn.Linear(16, 5)

    def forward(self, inputs):
        hidden, _ = self.lstm(self.embed(inputs[0]))
        return [self.tag(hidden)]


class Socket:
    seen = []  # what metrics received: (type of the outputs column, its length)

    def __init__(self, model):
        self.model = model
        self.train_modules = torch.nn.ModuleList([model])
        self.optimizer = torch.optim.Adam(model.parameters(), lr=0.01)

    def criterion(self, outputs, targets):
        return torch.nn.functional.cross_entropy(outputs[0].reshape(-1, 5), targets[0].reshape(-1), ignore_index=-1)

    def metrics(self, outputs, targets):
        Socket.seen.append((type(outputs[0]).__name__, len(outputs[0])))
        correct = total = 0
        for out, tags in zip(outputs[0], targets[0]):  # rows of a tensor, or one tensor per sequence
            keep = tags != -1
            correct += int((out.argmax(-1)[keep] == tags[keep]).sum())
            total += int(keep.sum())
        return {"main": correct / total, "tokens": total}

    def process(self, inputs, outputs):
        return {"texts": {"tags": str(outputs[0].argmax(-1)[0].tolist())}}
'''

SEQUENCES = '''
import torch

class DataSetIndex:
    def __init__(self, path, pad=False, ids=False, dicts=False):
        g = torch.Generator().manual_seed(0)
        self.sequences = [torch.randint(1, 20, (int(torch.randint(3, 13, (1,), generator=g)),), generator=g) for _ in range(120)]
        self.pad, self.ids, self.dicts = pad, ids, dicts

class DataSet:
    calls = 0  # batches collate_fn built

    def __init__(self, index, mode="train"):
        self.index, self.mode = index, mode
        self.sequences = {"train": index.sequences[:80], "valid": index.sequences[80:110], "test": index.sequences[110:]}[mode]
        if index.pad:
            self.collate_fn = self.pad_batch

    def __len__(self):
        return len(self.sequences)

    def __getitem__(self, i):
        tokens = self.sequences[i]
        if self.index.dicts:
            return {"tokens": tokens, "tags": tokens % 5}
        if self.mode == "test":
            return [tokens]  # no targets
        if self.index.ids:
            return [tokens], [tokens % 5], f"sequence-{i}"
        return [tokens], [tokens % 5]

    def pad_batch(self, items):
        DataSet.calls += 1
        if self.mode == "test":
            return [torch.nn.utils.rnn.pad_sequence([item[0] for item in items], batch_first=True)], []
        tokens = torch.nn.utils.rnn.pad_sequence([item[0][0] for item in items], batch_first=True)
        tags = torch.nn.utils.rnn.pad_sequence([item[1][0] for item in items], batch_first=True, padding_value=-1)
        return [tokens], [tags]
'''


def files(tmp_path, dataset: str = SEQUENCES, model: str = TAGGER) -> list[str]:
    (tmp_path / "model.py").write_text(model)
    (tmp_path / "dataset.py").write_text(dataset)
    return ["--model", str(tmp_path / "model.py"), "--dataset", str(tmp_path / "dataset.py"), "--dataset-path", str(tmp_path),
            "--seed", "2", "--headless", "--no-telemetry"]


def fit(args: list[str]):
    trainer = build(args)
    status = trainer.fit()
    trainer.close()
    return trainer, status


def test_collate_fn_pads_each_batch_and_validation_takes_variable_lengths(tmp_path):
    # GIVEN variable-length sequences padded per batch by DataSet.collate_fn
    trainer, status = fit([*files(tmp_path), "--dataset-args", '{"pad": true}', "--epochs", "2", "--batch-size", "8",
                           "--run-dir", str(tmp_path / "run")])
    # THEN the run used it for every set and completed
    assert status == "completed"
    dataset_cls = type(trainer.datasets["train"])
    assert dataset_cls.calls >= 2 * (10 + 4) + 1
    # AND metrics got the whole validation set, one tensor per sequence (the batches' lengths differ)
    assert trainer.socket.seen[-1] == ("list", 30)
    metrics = [e["metrics"] for e in read_events(tmp_path / "run") if e["type"] == "epoch_end"]
    assert metrics[-1]["tokens"] == sum(len(s) for s in trainer.datasets["valid"].sequences)


def test_batch_size_one_lstm_trains_and_validates_sequences_of_any_length(tmp_path):
    # GIVEN unpadded sequences of different lengths, batch size 1 (no collate_fn needed)
    trainer, status = fit([*files(tmp_path), "--epochs", "1", "--batch-size", "1", "--run-dir", str(tmp_path / "run")])
    # THEN training, validation and test inference all run; metrics see 30 sequences
    assert status == "completed"
    assert trainer.socket.seen[-1] == ("list", 30)
    events = read_events(tmp_path / "run")
    assert [e["type"] for e in events][-1] == "run_ended" and events[-1]["status"] == "completed"


def test_items_with_ids_train_like_items_without(tmp_path):
    # GIVEN the late-2018 templates' (inputs, targets, ids) items, and the same data as pairs
    with_ids = files(tmp_path)
    assert train([*with_ids, "--dataset-args", '{"ids": true}', "--epochs", "1", "--batch-size", "1",
                  "--run-dir", str(tmp_path / "ids"), "--no-tensorboard"]) == 0
    assert train([*with_ids, "--epochs", "1", "--batch-size", "1", "--run-dir", str(tmp_path / "pairs"),
                  "--no-tensorboard"]) == 0
    # THEN the ids are left aside: the same weights, bit for bit
    a = torch.load(tmp_path / "ids/checkpoints/last.pt", weights_only=False)["model_state"]
    b = torch.load(tmp_path / "pairs/checkpoints/last.pt", weights_only=False)["model_state"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_dict_items_get_a_message_that_says_how_to_adapt_them(tmp_path, capsys):
    assert train([*files(tmp_path), "--dataset-args", '{"dicts": true}', "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "DataSet.__getitem__(0) in mode 'train' returned a dict (keys 'tokens', 'tags')" in err
    assert "return e.g. [item['tokens']], [item[...]]" in err and "collate_fn" in err and "Traceback" not in err


BAD_COLLATES = {
    "returns a tensor": ("return [tokens], [tags]", "return tokens", "DataSet.collate_fn in mode 'train' must return (inputs, targets)"),
    "raises": ("return [tokens], [tags]", "raise KeyError('tag')", "your code raised KeyError while calling DataSet.collate_fn"),
}


@pytest.mark.parametrize("case", sorted(BAD_COLLATES))
def test_a_wrong_collate_fn_is_explained(tmp_path, capsys, case):
    old, new, message = BAD_COLLATES[case]
    assert train([*files(tmp_path, SEQUENCES.replace(old, new)), "--dataset-args", '{"pad": true}',
                  "--run-dir", str(tmp_path / "run")]) in (2, 3)
    err = capsys.readouterr().err
    assert message in err and "internal error" not in err


def test_a_test_item_without_targets_in_2018_train_mode_is_still_refused(tmp_path, capsys):
    # GIVEN a train set whose items have no targets: THEN the 2018 message, naming what to return
    source = SEQUENCES.replace('if self.mode == "test":\n            return [tokens]', 'if True:\n            return [tokens]')
    assert train([*files(tmp_path, source), "--run-dir", str(tmp_path / "run")]) == 2
    assert "DataSet.__getitem__(0) in mode 'train' must return (inputs, targets), two lists" in capsys.readouterr().err
