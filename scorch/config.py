"""TrainConfig: every option of scorch-train once, its default and help beside it.

The command line is built from this dataclass, checkpoints store it as a dict,
and `from_dict` refuses unknown keys and wrong types by name.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
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
    resume: str = opt("", "continue a run exactly: a run folder or a checkpoint file; `auto`: --run-dir's last checkpoint "
                      "if it has one, else start there (what a SLURM requeue or a torchrun elastic restart does by itself)",
                      metavar="RUN_DIR_OR_FILE|auto")
    restart: bool = opt(False, "start again in a --run-dir whose run ended before its first checkpoint (nothing to resume); "
                        "its event log is kept and continued")
    dump_period: int = opt(1, "save checkpoints/last.pt every N epochs")
    keep: int = opt(0, "also keep the N most recent epoch checkpoints as epoch-K.pt (0: none)")
    tensorboard: bool = opt(True, "write tensorboardX files to RUN_DIR/tensorboard (--no-tensorboard to skip)")

    # Live telemetry (rank 0): a ZeroMQ stream for scorch-tui and scorch-ctl.
    telemetry: bool = opt(True, "publish events and take commands over ZeroMQ (--no-telemetry to turn off)")
    requeue: bool = opt(True, "in a SLURM job, SIGUSR1 (sbatch --signal=USR1@SECONDS) checkpoints, then requeues the job "
                        "(scontrol requeue), which resumes by itself; --no-requeue: checkpoint and stop only")
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
    progress: str = opt("auto", "console progress: a bar, or plain lines; auto: a bar on a terminal, lines otherwise and "
                        "under any launcher (mpirun, srun, torchrun)", choices=("auto", "bar", "lines"))
    headless: bool = opt(False, "plain log lines, no progress bar (the same as --progress lines)")
    log_interval: float = opt(5.0, "seconds between progress lines in headless mode")
    debug: bool = opt(False, "show full tracebacks for errors")

    def check(self, writer: bool = True) -> None:
        """What can be checked from the flags alone, without torch: cli.py runs this before torch is imported,
        so a mistyped path answers at once, and `build` again on a resumed run's merged config.

        `writer`: this is rank 0, which alone reads checkpoints, publishes and writes the run folder (on
        several hosts the others may not have those files)."""
        for name in ("accumulate", "batch_size", "epochs"):
            if getattr(self, name) < 1:
                raise ScorchError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be at least 1")
        for flag, value in (("--clip-grad-norm", self.clip_grad_norm), ("--clip-grad-value", self.clip_grad_value)):
            if not value >= 0:  # NaN too
                raise ScorchError(f"{flag} {value}: must be a positive number (0: off)")
        if self.clip_grad_norm and self.clip_grad_value:
            raise ScorchError("--clip-grad-norm and --clip-grad-value: pick one (norm clipping keeps the gradient's direction)")
        for flag, path in (("--model", self.model), ("--dataset", self.dataset)):
            if path and not os.path.isfile(path):
                raise ScorchError(f"{flag} {path}: no such file; check the path (relative to {os.getcwd()})")
            if path and not path.endswith(".py"):
                raise ScorchError(f"{flag} {path}: expected a Python file ending in .py")
        if not writer:
            return
        if self.checkpoint and not os.path.isfile(self.checkpoint):
            raise ScorchError(f"-c/--checkpoint {self.checkpoint}: no such file")
        from scorch.dist import restart_count

        # --resume auto (said, or implied by a launcher's restart) is settled by build, where the ranks agree on it.
        auto = self.resume == "auto" or (not self.resume and restart_count() > 0)
        if self.resume and not auto and not os.path.exists(self.resume):
            raise ScorchError(f"--resume {self.resume}: no such run folder or checkpoint file")
        if self.run_dir and not self.resume and not auto:
            from scorch.run_folder import RunFolder

            RunFolder(self.run_dir).check_new(self.restart)
        if self.telemetry:
            from scorch.telemetry.publisher import check_bind

            check_bind(self.bind, self.curve_keys)  # before the run folder exists: a wrong flag leaves nothing behind

    def command(self, **changes: Any) -> str:
        """The scorch-train command line for this config (the flags that differ from the defaults), for messages."""
        argv, defaults = ["scorch-train"], TrainConfig()
        for f in dataclasses.fields(self):
            value = changes.get(f.name, getattr(self, f.name))
            if value == getattr(defaults, f.name):
                continue
            flag = "--" + f.name.replace("_", "-")
            if isinstance(value, bool):
                argv.append(flag if value else "--no-" + flag[2:])
            else:
                argv += [flag, json.dumps(value) if isinstance(value, dict) else str(value)]
        return shlex.join(argv)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name: f for f in dataclasses.fields(cls)}
        for key, value in data.items():
            if key not in known:
                raise ScorchError(f"unknown config key '{key}'; known keys: {', '.join(known)}")
            expected = str(known[key].type)  # a string: this module uses `from __future__ import annotations`
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


# `scorch-train --help` in these groups, in this order; every field is in one (tests/test_cli.py checks).
GROUPS: dict[str, tuple[str, ...]] = {
    "the files": ("model", "dataset", "dataset_path", "model_args", "dataset_args"),
    "the run": ("epochs", "batch_size", "max_train_iterations", "max_valid_iterations", "max_test_iterations",
                "validate_on_train", "seed", "no_shuffle", "device", "monitor", "mode", "early_stop_patience",
                "min_delta", "on_nan", "valid", "sanity_batches", "debug"),
    "checkpoints and resume": ("run_dir", "resume", "restart", "checkpoint", "dump_period", "keep", "on_save_error"),
    "distributed (mpirun, horovodrun, torchrun: docs/distributed.md)": ("backend", "scale_lr", "stall_timeout", "requeue"),
    "telemetry and output": ("telemetry", "bind", "curve_keys", "tensorboard", "progress", "headless", "log_interval"),
    "speed and gradients": ("workers", "amp", "accumulate", "clip_grad_norm", "clip_grad_value", "log_grad_norm"),
}
REQUIRED = ("model", "dataset", "dataset_path")  # unless --resume


def add_arguments(parser: argparse.ArgumentParser, cls: type = TrainConfig) -> None:
    """One flag per config field: --field-name, with the field's default and help, in its --help group."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    grouped = [name for names in GROUPS.values() for name in names if name in fields]
    groups = {}
    for title, names in GROUPS.items():
        group = parser.add_argument_group(title)
        groups.update(dict.fromkeys(names, group))
    for f in [fields[name] for name in grouped] + [f for name, f in fields.items() if name not in grouped]:
        _add_field(groups.get(f.name, parser), f)


def _add_field(parser: Any, f: dataclasses.Field) -> None:
    meta, kind = f.metadata, str(f.type)  # a string: this module uses `from __future__ import annotations`
    flag = "--" + f.name.replace("_", "-")
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[operator]
    names = [flag, *meta.get("flags", ())]
    required = " (required, unless --resume)" if f.name in REQUIRED else ""
    if kind == "bool":
        # Off by default: a plain switch. On by default: --name and --no-name.
        action = argparse.BooleanOptionalAction if default else "store_true"
        parser.add_argument(*names, dest=f.name, action=action, default=default, help=meta["help"])
        return
    shown = " (default: %(default)s)" if default not in ("", {}) else ""
    kwargs: dict[str, Any] = {"dest": f.name, "default": default, "help": meta["help"] + required + shown, "metavar": "N"}
    if kind == "dict":
        kwargs["type"] = _json_object(flag)
    else:
        kwargs["type"] = {"int": int, "float": float, "str": str}[kind]
        if kind != "int":
            kwargs.pop("metavar")
    if meta.get("choices"):
        kwargs["choices"] = meta["choices"]
        kwargs.pop("metavar", None)
    if meta.get("metavar"):
        kwargs["metavar"] = meta["metavar"]
    parser.add_argument(*names, **kwargs)


def from_namespace(ns: argparse.Namespace, cls: type = TrainConfig) -> Any:
    return cls(**{f.name: getattr(ns, f.name) for f in dataclasses.fields(cls)})
