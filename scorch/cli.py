"""Command-line entry points: argparse -> TrainConfig -> run. `main()` returns the exit code."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback
from typing import Any

from scorch import __version__
from scorch.config import TrainConfig, add_arguments, from_namespace
from scorch.dist import launcher, launcher_rank
from scorch.errors import EXIT_CODES, ScorchError, UserCodeError
from scorch.fileio import WRITE_ERRORS, write_failure

EXIT_FAILED = 1


class _Parser(argparse.ArgumentParser):
    """A usage error is the same on every rank of a job (the same command line): rank 0 alone prints it."""

    def error(self, message: str) -> None:  # type: ignore[override]
        if launcher_rank() != 0:
            sys.exit(2)
        super().error(message)


def build_parser() -> argparse.ArgumentParser:
    codes = "\n".join(f"  {code:>3}  {meaning}" for code, meaning in EXIT_CODES.items())
    parser = _Parser(
        prog="scorch-train",
        usage="%(prog)s --model FILE --dataset FILE --dataset-path PATH [options]\n"
        "       %(prog)s --resume RUN_DIR [options]",
        description="Train a PyTorch model from a model file and a dataset file (the scorch contract).",
        epilog="example:\n  scorch-train --model examples/digits/model.py --dataset examples/digits/dataset.py "
        f"--dataset-path examples/digits\n\nexit codes:\n{codes}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # --epoch must not quietly mean --epochs
    )
    parser.add_argument("--version", action="version", version=f"scorch {__version__}")
    add_arguments(parser)
    return parser


def explicit_flags(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """The config fields the user set on this command line (to override a resumed run's config)."""
    quiet = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for action in parser._actions:
        if action.dest in ("help", "version"):
            continue
        kwargs: dict[str, Any] = {"dest": action.dest, "default": argparse.SUPPRESS}
        if isinstance(action, argparse.BooleanOptionalAction):
            quiet.add_argument(*action.option_strings, action=argparse.BooleanOptionalAction, **kwargs)
        elif isinstance(action, argparse._StoreTrueAction):
            quiet.add_argument(*action.option_strings, action="store_true", **kwargs)
        else:
            quiet.add_argument(*action.option_strings, **kwargs)
    known, _ = quiet.parse_known_args(argv)
    return set(vars(known))


def _prefix() -> str:
    """`scorch-train: error: ` for one process; with several, the rank that had the error is named."""
    return f"scorch-train: error: rank {launcher_rank()}: " if launcher()[1] > 1 else "scorch-train: error: "


def report(exc: BaseException, debug: bool) -> int:
    """Print a failure the way users should see it, once: an error every rank has is printed by rank 0
    alone, any other by the rank that had it, tagged with its rank. Returns the exit code."""
    if isinstance(exc, ScorchError) and exc.everywhere and launcher_rank() != 0:
        return exc.exit_code
    if isinstance(exc, ScorchError) and exc.exit_code == 0:  # nothing went wrong: the run has nothing to do
        print(f"scorch-train: {exc.message}")
        return 0
    if debug:
        traceback.print_exception(exc)
    if isinstance(exc, UserCodeError):
        print(f"{_prefix()}{exc.message}", file=sys.stderr)
        if exc.user_traceback and not debug:
            print(exc.user_traceback.rstrip(), file=sys.stderr)
        return exc.exit_code
    if isinstance(exc, ScorchError):
        print(f"{_prefix()}{exc.message}", file=sys.stderr)
        return exc.exit_code
    if isinstance(exc, RuntimeError) and "DataLoader worker" in str(exc):  # raised from torch's SIGCHLD handler
        first = str(exc).strip().splitlines()[0]
        return report(ScorchError(f"a data loader worker died ({first}); it may have run out of memory or crashed in "
                                  "native code: try --workers 0, or fewer workers"), debug)
    from scorch.user_code import as_user_error

    err = as_user_error(exc, "training")
    if err is not None:
        return report(err, False) if not debug else err.exit_code
    if isinstance(exc, OSError) and exc.errno in WRITE_ERRORS:  # the event log or run.json on a full disk
        return report(ScorchError(f"{write_failure(exc)}; free space, then --resume the run", exit_code=5), debug)
    if not debug:
        traceback.print_exception(exc)
        print(f"{_prefix()}internal error (a scorch bug); please report it with the traceback above", file=sys.stderr)
    return EXIT_FAILED


def _one_line_excepthook(kind: type, value: BaseException, tb: object) -> None:
    print(f"scorch-train: warning: a background thread failed: {kind.__name__}: {value} (--debug shows where)", file=sys.stderr)


def train_main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    config: TrainConfig = from_namespace(parser.parse_args(argv))
    if not config.resume:
        missing = [f"--{name.replace('_', '-')}" for name in ("model", "dataset", "dataset_path") if not getattr(config, name)]
        if missing:
            parser.error(f"{', '.join(missing)} required (or --resume RUN_DIR to continue a run)")
    try:
        config.check(writer=launcher_rank() == 0)  # flags and paths, before torch is imported: a typo answers at once
    except ScorchError as exc:
        exc.everywhere = True  # the same command line on every rank
        return report(exc, config.debug)
    trainer = None
    old_handlers: dict = {}
    old_excepthook = sys.excepthook
    if not config.debug:
        # Library threads (multiprocessing's resource sharer when a loader worker dies) report through
        # sys.excepthook: one line for the user, the traceback with --debug. The real error comes from main.
        sys.excepthook = _one_line_excepthook
    try:
        from scorch.trainer import build

        trainer = build(config, explicit_flags(parser, argv))
        old_handlers = trainer.install_signal_handlers()
        status = trainer.fit()
    except KeyboardInterrupt:
        print("scorch-train: interrupted", file=sys.stderr)
        return 130
    except BaseException as exc:  # noqa: BLE001 - every failure is reported once, here
        if isinstance(exc, SystemExit):
            raise
        return report(exc, config.debug)
    finally:
        sys.excepthook = old_excepthook
        for sig, handler in old_handlers.items():
            signal.signal(sig, handler)
        if trainer is not None:
            trainer.close()
    if status == "preempted" and _requeues(trainer):  # last: SLURM's SIGTERM may come at once
        from scorch import dist

        print(f"scorch-train: SIGUSR1 in SLURM job {os.environ['SLURM_JOB_ID']}: checkpoint saved, requeueing the job; "
              f"it resumes from {trainer.config.run_dir} by itself", file=sys.stderr, flush=True)
        failure = dist.requeue_slurm_job()
        if failure:
            print(f"scorch-train: error: could not requeue: {failure}; submit the same job again and it resumes "
                  f"(--resume auto --run-dir {trainer.config.run_dir})", file=sys.stderr)
            return EXIT_FAILED
    return 0 if status != "failed" else EXIT_FAILED


def _requeues(trainer: Any) -> bool:
    """Rank 0 of a SLURM job that got SIGUSR1 (sbatch --signal=USR1@N: the time limit is near) requeues it."""
    return (trainer.config.requeue and trainer.preempted_by == "SIGUSR1" and trainer.dist.is_global_zero
            and os.environ.get("SLURM_JOB_ID", "").isdigit())


def main() -> None:
    sys.exit(train_main())


if __name__ == "__main__":
    main()
