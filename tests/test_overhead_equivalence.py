"""bench/overhead.py compares like with like: scorch trains exactly what the hand-written loop trains,
and its hot path reads nothing back from the device per step unless something asks for it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.runs import ROOT, read_events

SYNCING_METHODS = ("item", "tolist", "numpy", "__float__", "__int__", "__bool__", "__index__")
PER_EPOCH_READS = 8  # reads an epoch may make whatever its length: 4 today, room for a few more


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models train fastest on one intra-op thread, and on a busy machine two threads can stall each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def load_bench():
    """bench/overhead.py as a module (bench/ is not a package)."""
    name = "scorch_bench_overhead"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / "overhead.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up by name
        spec.loader.exec_module(module)
    return sys.modules[name]


def scorch_trainer(job, run_dir: Path):
    """A scorch Trainer for the bench's job, telemetry on (TensorBoard off: it only adds files)."""
    from scorch.cli import build_parser
    from scorch.config import from_namespace
    from scorch.trainer import build

    argv = job.scorch_argv(str(run_dir), telemetry=True, tensorboard=False)
    return build(from_namespace(build_parser().parse_args(argv)))


def count_reads(monkeypatch: pytest.MonkeyPatch) -> dict:
    """Count calls of every tensor method that makes a GPU wait for its result, while `counter["on"]`."""
    counter = {"on": False, "calls": 0}

    def counted(method):
        def wrapper(self, *args, **kwargs):
            if counter["on"]:
                counter["calls"] += 1
            return method(self, *args, **kwargs)

        return wrapper

    for name in SYNCING_METHODS:
        monkeypatch.setattr(torch.Tensor, name, counted(getattr(torch.Tensor, name)))
    return counter


JOBS = {
    # The tiny two-input model: no dropout, SGD with momentum.
    "tiny": dict(dataset_args={"size": 2000}, epochs=2),
    # The bench CNN on digits: dropout draws from the global RNG every step.
    "cnn": dict(epochs=2, max_train_iterations=15),
}


@pytest.mark.parametrize("name", sorted(JOBS))
def test_scorch_with_telemetry_trains_the_same_weights_as_the_plain_loop(tmp_path, name):
    bench = load_bench()
    base = bench.workload(name, quick=True)
    job = bench.Job(**{**base.__dict__, **JOBS[name]})
    # GIVEN the bench's job, trained by scorch with telemetry on
    trainer = scorch_trainer(job, tmp_path / "scorch")
    try:
        assert trainer.fit() == "completed"
    finally:
        trainer.close()
    # WHEN the hand-written loop of the bench trains the same job with the same seed
    setup = bench.plain_setup(job)
    plain_losses = bench.plain_train(setup, job, str(tmp_path / "plain"))
    # THEN every weight and momentum buffer is identical, bit for bit
    plain_state = setup.network.state_dict()
    for key, value in trainer.network.state_dict().items():
        assert torch.equal(value, plain_state[key]), key
    scorch_momentum = [s["momentum_buffer"] for s in trainer.socket.optimizer.state_dict()["state"].values()]
    plain_momentum = [s["momentum_buffer"] for s in setup.socket.optimizer.state_dict()["state"].values()]
    assert len(scorch_momentum) == len(plain_momentum) > 0
    assert all(torch.equal(a, b) for a, b in zip(scorch_momentum, plain_momentum))
    # AND both saw the same number of steps and report the same epoch losses
    epochs = [e for e in read_events(tmp_path / "scorch") if e["type"] == "epoch_end"]
    steps_per_epoch = len(setup.loaders["train"]) if job.max_train_iterations < 0 else job.max_train_iterations
    assert epochs[-1]["step"] == job.epochs * steps_per_epoch
    assert [e["train_loss"] for e in epochs] == pytest.approx(plain_losses, rel=1e-9)
    # AND the checkpoint scorch kept holds those weights
    saved = torch.load(tmp_path / "scorch" / "checkpoints" / "last.pt", weights_only=False)["model_state"]
    assert all(torch.equal(value, plain_state[key]) for key, value in saved.items())


def test_training_reads_the_device_once_per_published_step_not_once_per_step(tmp_path, monkeypatch):
    bench = load_bench()
    # GIVEN a run of a few hundred steps with telemetry on and nothing asking for per-step values
    # (no --on-nan skip), and every tensor method that makes a GPU wait for its result counted
    job = bench.Job(**{**bench.workload("tiny", quick=True).__dict__, "dataset_args": {"size": 6000}, "epochs": 2})
    trainer = scorch_trainer(job, tmp_path / "run")
    counting = count_reads(monkeypatch)
    train_epoch = trainer.train_epoch

    def counted_epoch():
        counting["on"] = True
        try:
            return train_epoch()
        finally:
            counting["on"] = False

    monkeypatch.setattr(trainer, "train_epoch", counted_epoch)
    # WHEN it trains
    try:
        assert trainer.fit() == "completed"
    finally:
        trainer.close()
    events = read_events(tmp_path / "run")
    steps = [e for e in events if e["type"] == "epoch_end"][-1]["step"]
    published = sum(e["type"] == "step" for e in events)
    assert steps == 2 * 150
    # THEN the training loop read values back at most once per published `step` event (its window's loss),
    # plus a few per epoch that do not grow with its length (the sampler's order, the data loader's seed,
    # the epoch's mean loss and its all-reduce): a read per step would add 150 an epoch
    assert counting["calls"] <= published + PER_EPOCH_READS * job.epochs, (counting["calls"], published)
    assert counting["calls"] < steps


def test_the_counter_sees_every_kind_of_read(monkeypatch):
    # GIVEN the counting wrappers of the test above (which must be able to fail)
    counter = count_reads(monkeypatch)
    counter["on"] = True
    # WHEN a loop reads the loss the naive ways, ten steps
    loss = torch.tensor(1.5)
    for _ in range(10):
        loss.item(), float(loss), int(loss), bool(loss), loss.tolist()
    # THEN every read is counted
    assert counter["calls"] == 50


def example_items(name: str, count: int = 8) -> list:
    """The first `count` training items of an example dataset."""
    spec = importlib.util.spec_from_file_location(f"items_{name}", ROOT / "examples" / name / "dataset.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    args = {"size": 64} if name == "two_inputs" else {}
    data = module.DataSet(module.DataSetIndex(str(ROOT / "examples" / name), **args), "train")
    return [data[i] for i in range(count)]


def same_batch(a, b) -> bool:
    """Equal structure, types, dtypes and values, all the way down."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same_batch(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return type(a) is type(b) and a.keys() == b.keys() and all(same_batch(a[k], b[k]) for k in a)
    return a == b


MIXED_ITEMS = {
    "numbers, strings and arrays": [([torch.full((3,), float(i)), i, f"id{i}"], [np.float32(i), np.arange(i, i + 2)])
                                    for i in range(5)],
    "tuples": [((torch.ones(2) * i, torch.tensor(i)), (torch.tensor([i, -i]),)) for i in range(4)],
    "nested lists": [([[torch.ones(1), torch.zeros(1)]], [torch.tensor(i)]) for i in range(3)],
    "dicts": [{"x": torch.ones(2) * i, "y": i} for i in range(3)],
}


@pytest.mark.parametrize("items", [example_items("two_inputs"), example_items("digits")] + list(MIXED_ITEMS.values()),
                         ids=["two_inputs", "digits"] + list(MIXED_ITEMS))
def test_the_training_collate_builds_what_default_collate_builds(items):
    from torch.utils.data import default_collate

    from scorch.batches import collate

    # GIVEN a batch of dataset items, as the 2018 contract has them or otherwise
    # WHEN scorch's collate and torch's both build the batch
    # THEN the two are the same: types, dtypes and values
    assert same_batch(collate(items), default_collate(items))


@pytest.mark.parametrize("items", [
    [([torch.ones(2)], [1]), ([torch.ones(2), torch.ones(1)], [1])],  # a different number of inputs
    [([torch.ones(2)], [1]), ([torch.ones(3)], [1])],  # different shapes
    [([torch.ones(2)], [1]), ([None], [1])],  # something default_collate cannot batch
], ids=["parts", "shapes", "none"])
def test_a_batch_the_collate_cannot_build_fails_with_torchs_own_error(items):
    from torch.utils.data import default_collate

    from scorch.batches import collate

    # GIVEN items that do not batch
    with pytest.raises(Exception) as theirs:
        default_collate(items)
    # WHEN scorch's collate tries: THEN it raises what torch raises, word for word
    with pytest.raises(type(theirs.value)) as ours:
        collate(items)
    assert str(ours.value) == str(theirs.value)


def test_loader_workers_collate_as_torch_does():
    from torch.utils.data import DataLoader, default_collate

    from scorch.batches import collate

    # GIVEN a loader with a worker process, collating with scorch's collate
    items = example_items("two_inputs", 16)
    loader = DataLoader(items, batch_size=8, num_workers=1, collate_fn=collate)
    # WHEN it loads the batches in the worker (where default_collate writes to shared memory)
    batches = list(loader)
    # THEN they are torch's batches
    assert len(batches) == 2
    assert all(same_batch(b, default_collate(items[i * 8 : (i + 1) * 8])) for i, b in enumerate(batches))
