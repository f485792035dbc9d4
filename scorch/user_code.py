"""Load the user's model and dataset files, check the 2018 contract, explain any breach.

Every breach is one `ScorchError` naming the file, the class or method, what
was expected and what was found. An exception raised inside the user's own
code is reported with a traceback trimmed to their frames (`user_traceback`).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import traceback
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from scorch.errors import ScorchError, UserCodeError

MODES = ("train", "valid", "test")
_SCORCH_DIR = os.path.dirname(os.path.abspath(__file__))
_user_dirs: set[str] = set()


def _kind(value: Any) -> str:
    """What a value is, in a few words, for error messages."""
    if isinstance(value, (list, tuple)):
        inner = ", ".join(_kind(v) for v in value[:3]) + (", ..." if len(value) > 3 else "")
        return f"{type(value).__name__} of {len(value)} [{inner}]"
    shape = getattr(value, "shape", None)
    if shape is not None and hasattr(value, "dtype"):
        return f"{type(value).__name__} of shape {tuple(shape)}"
    return type(value).__name__


def is_user_frame(filename: str) -> bool:
    path = os.path.abspath(filename)
    if path.startswith(_SCORCH_DIR + os.sep) or "site-packages" in path or "dist-packages" in path:
        return False
    return any(path.startswith(d + os.sep) for d in _user_dirs)


def user_traceback(exc: BaseException) -> str:
    """The traceback of `exc` with only the user's own frames, or '' if none is theirs."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if is_user_frame(f.filename)]
    if not frames:
        return ""
    lines = traceback.format_list(frames)
    return "Traceback (your code only):\n" + "".join(lines) + "".join(traceback.format_exception_only(type(exc), exc))


def as_user_error(exc: BaseException, doing: str) -> UserCodeError | None:
    """A UserCodeError for an exception raised in the user's code while `doing`, else None."""
    tb = user_traceback(exc)
    if not tb:
        return None
    return UserCodeError(f"your code raised {type(exc).__name__} while {doing}: {exc}", tb)


def call_user(doing: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call into user code at set-up time; their exceptions become one clear error."""
    try:
        return fn(*args, **kwargs)
    except ScorchError:
        raise
    except Exception as exc:
        err = as_user_error(exc, doing)
        if err is None:
            err = UserCodeError(f"{doing} failed with {type(exc).__name__}: {exc}")
        raise err from exc


def check_file(path: str, flag: str) -> None:
    """The file named by `flag` exists and is a Python file (checked before anything is imported)."""
    if not path:
        raise ScorchError(f"{flag} is required: pass the path of a Python file, e.g. {flag} examples/digits/model.py")
    if not os.path.isfile(path):
        raise ScorchError(f"{flag} {path}: no such file; check the path (relative to {os.getcwd()})")
    if not path.endswith(".py"):
        raise ScorchError(f"{flag} {path}: expected a Python file ending in .py")


def load_file(path: str, flag: str) -> ModuleType:
    """Import a Python file by path as a fresh module."""
    check_file(path, flag)
    path = os.path.abspath(path)
    folder = os.path.dirname(path)
    _user_dirs.add(folder)
    if folder not in sys.path:
        sys.path.insert(0, folder)  # so the user's file can import its neighbours
    name = "scorch_user_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None  # a path ending in .py always has one
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # data loader workers that spawn can find it by name
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise ScorchError(f"{flag} {path}: syntax error at line {exc.lineno}: {exc.msg}") from None
    except Exception as exc:
        raise UserCodeError(f"{flag} {path}: importing it raised {type(exc).__name__}: {exc}", user_traceback(exc)) from exc
    return module


def _class(module: ModuleType, name: str, path: str, what: str, required: bool = True) -> Any:
    obj = getattr(module, name, None)
    if obj is None:
        if required:
            raise ScorchError(f"{path}: no class {name}; expected {what}")
        return None
    if not isinstance(obj, type):
        raise ScorchError(f"{path}: {name} should be a class ({what}), found {type(obj).__name__}")
    return obj


@dataclass
class UserModel:
    """The loaded model side: the network and the Socket that knows how to train it."""

    path: str
    network: Any
    socket: Any
    has_process: bool


def load_model(path: str, model_args: dict, facts: Any = None) -> UserModel:
    """Network(**model_args) and Socket(network); `facts` (a RunFacts) is `Socket.scorch` while Socket is built."""
    import torch

    module = load_file(path, "--model")
    network_cls = _class(module, "Network", path, "a torch.nn.Module subclass whose forward takes a list and returns a list")
    if not issubclass(network_cls, torch.nn.Module):
        raise ScorchError(f"{path}: class Network must subclass torch.nn.Module, found bases {network_cls.__bases__}")
    socket_cls = _class(module, "Socket", path, "a class Socket(model) with criterion, metrics, optimizer and train_modules")
    network = call_user(f"building Network(**{model_args}) from {path}", network_cls, **model_args)
    if facts is not None and "scorch" not in vars(socket_cls):  # a Socket of its own `scorch` keeps it
        socket_cls.scorch = facts
    socket = call_user(f"building Socket(model) from {path}", socket_cls, network)

    for method in ("criterion", "metrics"):
        if not callable(getattr(socket, method, None)):
            raise ScorchError(
                f"{path}: Socket has no method {method}(outputs, targets); expected it to take two lists of tensors"
            )
    if callable(getattr(socket, "train_step", None)):  # manual optimisation: scorch/manual.py
        from scorch import manual

        manual.check(socket, path)
    optimizer = getattr(socket, "optimizer", None)
    from scorch.manual import Optimizers

    if not isinstance(optimizer, (torch.optim.Optimizer, Optimizers)):
        raise ScorchError(
            f"{path}: Socket.optimizer must be a torch.optim.Optimizer set in Socket.__init__, "
            f"e.g. self.optimizer = torch.optim.Adam(self.train_modules.parameters()); found {_kind(optimizer)}"
        )
    modules = getattr(socket, "train_modules", None)
    if modules is None:
        raise ScorchError(
            f"{path}: Socket has no train_modules; expected a torch.nn.ModuleList of the modules to train, "
            "e.g. self.train_modules = torch.nn.ModuleList([model])"
        )
    if isinstance(modules, (list, tuple)) and all(isinstance(m, torch.nn.Module) for m in modules):
        socket.train_modules = modules = torch.nn.ModuleList(modules)
    if not isinstance(modules, torch.nn.Module):
        raise ScorchError(f"{path}: Socket.train_modules must be a torch.nn.ModuleList, found {_kind(modules)}")
    scheduler = getattr(socket, "scheduler", None)
    if isinstance(scheduler, (list, tuple)):
        raise ScorchError(f"{path}: Socket.scheduler must be one scheduler object, found {_kind(scheduler)}; chain "
                          "several with torch.optim.lr_scheduler.SequentialLR (one after another, e.g. a warmup then a "
                          "decay) or ChainedScheduler (all at once)")
    if scheduler is not None and not callable(getattr(scheduler, "step", None)):
        raise ScorchError(f"{path}: Socket.scheduler must be a torch.optim.lr_scheduler object with step(), found {_kind(scheduler)}")
    from scorch.schedules import Schedule

    Schedule(socket, path)  # refuses a wrong scheduler_interval now, before the run folder exists
    process = getattr(socket, "process", None)
    if process is not None and not callable(process):
        raise ScorchError(f"{path}: Socket.process must be a method process(inputs, outputs), found {_kind(process)}")
    return UserModel(path, network, socket, process is not None)


def load_datasets(path: str, dataset_path: str, dataset_args: dict) -> dict[str, Any]:
    """DataSet(index, mode) for train/valid/test, the index shared between them."""
    module = load_file(path, "--dataset")
    if not dataset_path:
        raise ScorchError("--dataset-path is required: the folder or file your DataSetIndex/DataSet reads")
    missing = not os.path.exists(dataset_path)  # fine for a DataSetIndex that makes it (a download, say)
    dataset_cls = _class(module, "DataSet", path, "a class DataSet(index, mode) with __len__ and __getitem__")
    for method in ("__len__", "__getitem__"):
        if getattr(dataset_cls, method, None) is None:
            raise ScorchError(f"{path}: DataSet has no {method}; expected a map-style dataset")
    index_cls = _class(module, "DataSetIndex", path, "", required=False)
    if index_cls is not None:
        try:
            index = call_user(f"building DataSetIndex({dataset_path!r}) from {path}", index_cls, dataset_path, **dataset_args)
        except UserCodeError as exc:
            if missing:
                exc.message += f" (--dataset-path {dataset_path} does not exist)"
            raise
    elif missing:
        raise ScorchError(f"--dataset-path {dataset_path}: no such file or folder ({path} has no DataSetIndex that "
                          "could make it)")
    elif dataset_args:
        raise ScorchError(f"--dataset-args given but {path} has no DataSetIndex to receive them")
    else:
        index = dataset_path
    datasets = {}
    for mode in MODES:
        ds = call_user(f"building DataSet(index, mode={mode!r}) from {path}", dataset_cls, index, mode)
        n = call_user(f"calling len() of the {mode} DataSet from {path}", len, ds)
        if mode == "train" and n == 0:
            raise ScorchError(f"{path}: the train DataSet is empty (len 0); check --dataset-path {dataset_path}")
        if n:
            item = call_user(f"reading item 0 of the {mode} DataSet from {path}", ds.__getitem__, 0)
            own = own_collate(ds, path)
            if own is None:
                check_item(item, path, mode, 0)
            else:  # items are the DataSet's business; what its collate_fn makes of them is checked instead
                check_batch(call_user(f"calling DataSet.collate_fn on item 0 of the {mode} set from {path}", own, [item]),
                            path, mode)
        datasets[mode] = ds
    return datasets


def own_collate(dataset: Any, path: str) -> Any:
    """The DataSet's own `collate_fn` (a list of items -> (inputs, targets)), or None to use scorch's."""
    own = getattr(dataset, "collate_fn", None)
    if own is not None and not callable(own):
        raise ScorchError(f"{path}: DataSet.collate_fn must be a function of a list of items, found {_kind(own)}")
    return own


def check_item(item: Any, path: str, mode: str, index: int) -> None:
    """An item is (inputs, targets), two lists of tensors/arrays/numbers; also (inputs, targets, ids) as in the
    late-2018 templates (the ids are the DataSet's own, not used); test items may leave the targets out."""
    where = f"{path}: DataSet.__getitem__({index}) in mode {mode!r}"
    if isinstance(item, dict):
        raise ScorchError(
            f"{where} returned a dict (keys {', '.join(map(repr, list(item)[:6]))}); scorch expects (inputs, targets), "
            f"two lists in the order Network.forward and Socket.criterion take them: return e.g. [item[{list(item)[0]!r}]], "
            "[item[...]], or give DataSet a collate_fn(items) that turns a list of such dicts into (inputs, targets)")
    if mode == "test" and without_targets(item):
        return
    if not isinstance(item, (list, tuple)) or len(item) not in (2, 3):
        test = "; a test item without targets may be [inputs] or (inputs, None)" if mode == "test" else ""
        raise ScorchError(f"{where} must return (inputs, targets), two lists; found {_kind(item)}{test}")
    for name, part in zip(("inputs", "targets"), item):
        if not isinstance(part, (list, tuple)):
            raise ScorchError(f"{where} must return {name} as a list (of tensors), found {_kind(part)}; wrap it: [{name[:-1]}]")


def without_targets(item: Any) -> bool:
    """A test item with inputs only: a list of tensors `[x1, x2]`, `(inputs,)` or `(inputs, None)`."""
    if not isinstance(item, (list, tuple)) or not item:
        return False
    if isinstance(item, list) and not any(isinstance(part, (list, tuple, dict)) for part in item):
        return True  # [x1, x2]
    return isinstance(item[0], (list, tuple)) and (len(item) == 1 or (len(item) == 2 and item[1] is None))


def as_pair(item: Any) -> tuple:
    """Any accepted item as (inputs, targets): ids dropped, missing targets an empty list."""
    if isinstance(item, (list, tuple)) and len(item) >= 2 and isinstance(item[0], (list, tuple)) and item[1] is not None:
        return item[0], item[1]
    if isinstance(item, list) and not (item and isinstance(item[0], (list, tuple))):
        return item, []
    return item[0], []


def check_batch(batch: Any, path: str, mode: str) -> None:
    """What DataSet.collate_fn returns: (inputs, targets) lists, or (inputs,) for a test set."""
    if not isinstance(batch, (list, tuple)) or not 1 <= len(batch) <= 3 or not all(isinstance(p, (list, tuple)) for p in batch[:2]):
        raise ScorchError(f"{path}: DataSet.collate_fn in mode {mode!r} must return (inputs, targets), two lists of batched "
                          f"tensors; found {_kind(batch)}")


def check_outputs(outputs: Any, path: str) -> None:
    if not isinstance(outputs, (list, tuple)):
        raise ScorchError(f"{path}: Network.forward must return a list of tensors, found {_kind(outputs)}; return [output]")


def check_loss(loss: Any, path: str, manual: bool = False) -> None:
    """criterion's loss: a 0-d tensor with a gradient; train_step's (manual optimisation): a 0-d tensor to log."""
    import torch

    method = "train_step" if manual else "criterion"
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
        raise ScorchError(
            f"{path}: Socket.{method} must return a scalar tensor (0-d, e.g. loss.mean()), found {_kind(loss)}"
        )
    if not manual and not loss.requires_grad:
        raise ScorchError(f"{path}: Socket.criterion returned a tensor with no gradient; compute it from the outputs")


def split_loss(result: dict, path: str) -> tuple[Any, dict]:
    """Socket.criterion's dict: the loss to train on (key 'loss'), and the other scalars to log, detached."""
    if "loss" not in result:
        raise ScorchError(f"{path}: Socket.criterion returned a dict with keys {sorted(map(str, result))} but no 'loss'; "
                          "put the value to train on under 'loss' (the other keys are logged each step)")
    extra = {}
    for key, value in result.items():
        if key == "loss":
            continue
        if hasattr(value, "detach") and value.numel() == 1:
            extra[str(key)] = value.detach().float().reshape(())
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            extra[str(key)] = float(value)
        else:
            raise ScorchError(f"{path}: Socket.criterion returned {key!r} as {_kind(value)}; the scalars beside 'loss' "
                              "must be numbers or one-element tensors")
    return result["loss"], extra


def check_metric_state(state: Any, path: str) -> None:
    """Socket.metric_state returns {name: number or numeric tensor}: the batch's sums and counts."""
    import numbers

    if not isinstance(state, dict):
        raise ScorchError(f"{path}: Socket.metric_state must return a dict of sums and counts, e.g. "
                          f"{{'correct': 3, 'seen': 8}}; found {_kind(state)}")
    for key, value in state.items():
        dtype = getattr(value, "dtype", None)
        ok = isinstance(value, numbers.Real) or (dtype is not None and (
            getattr(dtype, "kind", "") in "biuf" if hasattr(dtype, "kind") else not dtype.is_complex))  # numpy | torch
        if not isinstance(key, str) or not ok:
            raise ScorchError(f"{path}: Socket.metric_state returned {key!r} as {_kind(value)}; each value must be a "
                              "number or a numeric tensor (summed over batches and ranks)")


def check_metrics(metrics: Any, path: str) -> None:
    if not isinstance(metrics, dict):
        raise ScorchError(
            f"{path}: Socket.metrics must return a dict of numbers with a 'main' key, e.g. {{'main': accuracy}}; "
            f"found {_kind(metrics)}"
        )
    if "main" not in metrics:
        raise ScorchError(f"{path}: Socket.metrics returned keys {sorted(metrics)} but no 'main'; add 'main' (the value to monitor)")


def metric_values(metrics: Any, path: str) -> dict[str, float]:
    """Socket.metrics' dict as numbers: floats, ints, numpy scalars and one-element tensors as they are; a longer vector
    (tensor, array, list) as one number per element, `name/0`, `name/1`, ... (never averaged); anything else refused."""
    check_metrics(metrics, path)
    values: dict[str, float] = {}
    for key, value in metrics.items():
        where = f"{path}: Socket.metrics returned {key!r}"
        if not isinstance(key, str):
            raise ScorchError(f"{path}: Socket.metrics returned a key {key!r} ({type(key).__name__}); keys must be strings")
        numbers = _numbers(value)
        if numbers is None:
            hint = (f"; flatten a nested dict into keys like '{key}/name'" if isinstance(value, dict) else
                    "; compute it, or leave the key out" if value is None else "")
            raise ScorchError(f"{where} as {_kind(value)}; every value must be a number (a float, a numpy scalar or a "
                              f"0-d tensor){hint}")
        if len(numbers) == 1:  # 0-d, or one element of any shape: the value itself, as in 2018
            values[key] = numbers[0]
        elif key == "main" or not numbers:
            raise ScorchError(f"{where} as a vector of {len(numbers)} values; 'main' is the one monitored number: return "
                              "a single value (e.g. their mean) under 'main', and the vector under another key"
                              if key == "main" else f"{where} as an empty vector; return a number")
        else:
            values.update({f"{key}/{i}": number for i, number in enumerate(numbers)})
    return values


def _numbers(value: Any) -> list[float] | None:
    """The number(s) in a metric value, or None when it holds something else."""
    import numbers

    if isinstance(value, numbers.Real):  # bool, int, float, numpy scalars
        return [float(value)]
    if hasattr(value, "detach"):  # a tensor
        value = value.detach().float().cpu().numpy()
    if hasattr(value, "dtype") and hasattr(value, "ndim"):  # an ndarray
        if value.dtype.kind not in "biuf":
            return None
        return [float(v) for v in value.reshape(-1)]
    if isinstance(value, (list, tuple)) and all(isinstance(v, numbers.Real) for v in value):
        return [float(v) for v in value]
    return None


def check_processed(result: Any, path: str) -> None:
    """Socket.process returns None or {"images": {tag: tensor}, "texts": {tag: str}, "scalars": {tag: number}}."""
    if result and not isinstance(result, dict):
        raise ScorchError(f"{path + ': ' if path else ''}Socket.process must return a dict like {{'images': {{tag: tensor}}, 'texts': "
                          f"{{tag: str}}}}, found {_kind(result)}")


def _shapes(part: Any) -> list:
    return [tuple(x.shape) if hasattr(x, "shape") else type(x).__name__ for x in part]


def explain_batch_failure(exc: BaseException, dataset: Any, indices: list[int], path: str, mode: str) -> ScorchError:
    """Why a batch of the `mode` set could not be loaded, found by reading its items here, one by one."""
    from torch.utils.data import default_collate

    own = own_collate(dataset, path)
    items = []
    for index in indices:
        try:
            item = dataset[index]
        except Exception as item_exc:  # noqa: BLE001 - the user's own error, reported with their frames
            return UserCodeError(
                f"{path}: DataSet.__getitem__({index}) in mode {mode!r} raised {type(item_exc).__name__}: {item_exc}",
                user_traceback(item_exc),
            )
        if own is None:
            check_item(item, path, mode, index)
        items.append((index, item))
    if own is not None:
        try:
            own([item for _, item in items])
        except Exception as collate_exc:  # noqa: BLE001
            return UserCodeError(f"{path}: DataSet.collate_fn raised {type(collate_exc).__name__} on the {mode} set's items "
                                 f"{indices[:4]}: {collate_exc}", user_traceback(collate_exc))
    try:
        if own is None:
            default_collate([as_pair(item) for _, item in items])
    except Exception as collate_exc:  # noqa: BLE001
        first_index, first = items[0]
        for index, item in items[1:]:
            for name, a, b in zip(("inputs", "targets"), as_pair(first), as_pair(item)):
                if len(a) != len(b) or _shapes(a) != _shapes(b):
                    return ScorchError(
                        f"{path}: the {mode} set's items cannot be batched: item {index} has {name} {_shapes(b)} but item "
                        f"{first_index} has {_shapes(a)}; DataSet.__getitem__ must return the same shapes for every item "
                        "(resize or pad them), or DataSet needs a collate_fn(items) that pads each batch"
                    )
        return ScorchError(f"{path}: the {mode} set's items {indices[:4]}... cannot be batched: {collate_exc}")
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ScorchError(
        f"a data loader worker died ({text}) on the {mode} set, though its items load here; it may have run out of "
        "memory or crashed in native code: try --workers 0, or fewer workers"
    )
