"""TrainConfig: every option of scorch-train once, its default and help beside it.

The command line is built from this dataclass, checkpoints store it as a dict,
and `from_dict` refuses unknown keys and wrong types by name.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from scorch.errors import ScorchError


def opt(default: Any, help: str, *flags: str, choices: tuple | None = None, metavar: str | None = None) -> Any:
    """A config field: its default, its --help text, extra flag spellings, allowed values."""
    meta = {"help": help, "flags": flags, "choices": choices, "metavar": metavar}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    # What to train: the 2018 contract's two files and the data folder.
    model: str = opt("", "model file defining Network and Socket", metavar="FILE")
    dataset: str = opt("", "dataset file defining DataSet (and optionally DataSetIndex)", metavar="FILE")
    dataset_path: str = opt("", "folder (or file) handed to DataSetIndex / DataSet", metavar="PATH")
    model_args: dict = opt({}, "JSON object of keyword arguments for Network(...)", metavar="JSON")
    dataset_args: dict = opt({}, "JSON object of keyword arguments for DataSetIndex(path, ...)", metavar="JSON")

    # How long and how big.
    epochs: int = opt(10, "number of epochs to train (with --resume: the total, counting those done)")
    batch_size: int = opt(32, "samples per batch on each rank", "-b")
    max_train_iterations: int = opt(-1, "cap on training batches per epoch (-1: all)")
    max_valid_iterations: int = opt(-1, "cap on validation batches per epoch (-1: all)")
    max_test_iterations: int = opt(-1, "cap on test batches per epoch (-1: all; 0: skip test inference)")
    validate_on_train: bool = opt(False, "also compute the metrics on the training set each epoch")
    valid: str = opt("whole", "validation metrics: whole (Socket.metrics sees every output of the set at once; exact for any "
                     "metric) or streaming (Socket.metric_state per batch, summed: memory of one batch; for large sets)",
                     choices=("whole", "streaming"))
    sanity_batches: int = opt(2, "before training, run N validation batches through Socket.metrics and one test batch "
                              "through Socket.process, so a bug there shows in seconds, not after an epoch (0: skip)")
    seed: int = opt(-1, "random seed for torch, numpy, random and shuffling (-1: pick one and record it)")
    no_shuffle: bool = opt(False, "keep the training set in order")
    workers: int = opt(0, "data loader worker processes per rank")
    device: str = opt("auto", "where to train: auto picks cuda when available", choices=("auto", "cpu", "cuda"))
    amp: str = opt("off", "mixed precision: bf16 autocast, or fp16 autocast with loss scaling", choices=("off", "bf16", "fp16"))
    accumulate: int = opt(1, "accumulate gradients over N batches per optimizer step")
    clip_grad_norm: float = opt(0.0, "before each optimizer step, scale the gradients down so their total norm is at most X "
                                "(after the average over ranks, unscaled under --amp fp16); step events log the norm "
                                "before clipping (0: off)", metavar="X")
    clip_grad_value: float = opt(0.0, "before each optimizer step, clip every gradient element to [-X, X] (0: off)",
                                 metavar="X")
    log_grad_norm: bool = opt(False, "log the gradients' total norm in step events without clipping them")

    # Several processes (mpirun, horovodrun, torchrun): see docs/distributed.md.
    backend: str = opt("auto", "distributed engine; auto follows the launcher: mpirun/horovodrun -> horovod, torchrun -> torch, "
                       "no launcher -> none (one process)", choices=("auto", "none", "horovod", "torch"))
    scale_lr: bool = opt(False, "multiply each learning rate by the number of ranks (the usual start for N times the batch)")

    # Where things go.
    run_dir: str = opt("", "run folder (default runs/<date>-<time>-<model stem>)", metavar="DIR")
    checkpoint: str = opt("", "load model weights from this checkpoint before training (2018's -c)", "-c", metavar="FILE")
    resume: str = opt("", "continue a run exactly: a run folder or a checkpoint file", metavar="RUN_DIR_OR_FILE")
    dump_period: int = opt(1, "save checkpoints/last.pt every N epochs")
    keep: int = opt(0, "also keep the N most recent epoch checkpoints as epoch-K.pt (0: none)")
    tensorboard: bool = opt(True, "write tensorboardX files to RUN_DIR/tensorboard (--no-tensorboard to skip)")

    # Live telemetry (rank 0): a ZeroMQ stream for scorch-tui and scorch-ctl.
    telemetry: bool = opt(True, "publish events and take commands over ZeroMQ (--no-telemetry to turn off)")
    bind: str = opt("127.0.0.1:0", "telemetry address HOST:PORT: stream on PORT, control on PORT+1 (port 0: free ports)",
                    metavar="HOST:PORT")
    curve_keys: str = opt("", "folder made by `scorch-ctl keygen`: encrypt telemetry with CURVE (needed beyond 127.0.0.1)",
                          metavar="DIR")

    # What counts as better, and when to give up.
    monitor: str = opt("main", "metric that decides best.pt and early stopping")
    mode: str = opt("auto", "whether a larger or smaller monitored metric is better; auto: smaller for a name that reads "
                    "as a loss or an error (loss, error, mse, mae, perplexity, nll, ...), else larger",
                    choices=("auto", "max", "min"))
    early_stop_patience: int = opt(0, "stop after N epochs without improvement (0: never)")
    min_delta: float = opt(0.0, "smallest change of the monitored metric that counts as improvement")
    on_save_error: str = opt("stop", "when a checkpoint cannot be written (disk full, no permission): stop, or continue without it",
                             choices=("stop", "continue"))
    stall_timeout: float = opt(0.0, "end the run (exit 6) when a rank makes no progress for S seconds, printing where it is stuck (0: off)",
                               metavar="S")
    on_nan: str = opt("stop", "on a NaN/inf loss: stop (checkpoint kept) or skip the batch", choices=("stop", "skip"))

    # Output.
    headless: bool = opt(False, "plain log lines instead of a progress bar (automatic without a TTY)")
    log_interval: float = opt(5.0, "seconds between progress lines in headless mode")
    debug: bool = opt(False, "show full tracebacks for errors")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name: f for f in dataclasses.fields(cls)}
        for key, value in data.items():
            if key not in known:
                raise ScorchError(f"unknown config key '{key}'; known keys: {', '.join(known)}")
            expected = known[key].type
            if not _type_ok(value, expected):
                raise ScorchError(f"config key '{key}' must be {expected}, got {type(value).__name__} {value!r}")
        return cls(**data)


def _type_ok(value: Any, expected: str) -> bool:
    if expected == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, {"str": str, "bool": bool, "dict": dict}[expected])


def _json_object(flag: str):
    def parse(text: str) -> dict:
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{flag} must be a JSON object, e.g. '{{\"width\": 64}}': {exc}") from None
        if not isinstance(value, dict):
            raise argparse.ArgumentTypeError(f"{flag} must be a JSON object, got {type(value).__name__}")
        return value

    return parse


def add_arguments(parser: argparse.ArgumentParser, cls: type = TrainConfig) -> None:
    """One flag per config field: --field-name, with the field's default and help."""
    for f in dataclasses.fields(cls):
        meta = f.metadata
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        names = [flag, *meta.get("flags", ())]
        if f.type == "bool":
            # Off by default: a plain switch. On by default: --name and --no-name.
            action = argparse.BooleanOptionalAction if default else "store_true"
            parser.add_argument(*names, dest=f.name, action=action, default=default, help=meta["help"])
            continue
        shown = " (default: %(default)s)" if default not in ("", {}) else ""
        kwargs: dict[str, Any] = {"dest": f.name, "default": default, "help": meta["help"] + shown, "metavar": "N"}
        if f.type == "dict":
            kwargs["type"] = _json_object(flag)
        else:
            kwargs["type"] = {"int": int, "float": float, "str": str}[f.type]
            if f.type != "int":
                kwargs.pop("metavar")
        if meta.get("choices"):
            kwargs["choices"] = meta["choices"]
            kwargs.pop("metavar", None)
        if meta.get("metavar"):
            kwargs["metavar"] = meta["metavar"]
        parser.add_argument(*names, **kwargs)


def from_namespace(ns: argparse.Namespace, cls: type = TrainConfig) -> Any:
    return cls(**{f.name: getattr(ns, f.name) for f in dataclasses.fields(cls)})
