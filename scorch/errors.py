"""The one error type users see: a short message that says how to fix it, and an exit code."""

from __future__ import annotations

# scorch-train's exit codes: `--help` prints them and the README lists the same (tests/test_cli.py checks both).
EXIT_CODES = {
    0: "completed, stopped, early-stopped or preempted (or --resume of a run that is already complete)",
    1: "failed: a scorch bug (please report it), or another rank failed",
    2: "bad input: flags, files, the model/dataset contract",
    3: "your code raised",
    4: "non-finite loss",
    5: "a checkpoint or the run folder could not be written",
    6: "a rank made no progress for --stall-timeout seconds",
    130: "a second Ctrl-C",
}


class MessageError(Exception):
    """A failure told in one short message (`message`), never a traceback: the base of every such error
    (ScorchError here, ClientError for the telemetry client, SourceError for the dashboard)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ScorchError(MessageError):
    """A user-facing failure, printed once by `main()` without a traceback.

    The message names the file, flag or thing at fault and how to fix it. `everywhere`: every rank of a
    job raises this same error (a bad flag, an agreed NaN, what rank 0 read and shared), so rank 0 alone
    prints it; any other error is printed by the rank that had it, tagged with that rank.
    """

    def __init__(self, message: str, exit_code: int = 2, everywhere: bool = False) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.everywhere = everywhere


class UserCodeError(ScorchError):
    """The user's model or dataset code raised: carries their trimmed traceback."""

    def __init__(self, message: str, user_traceback: str = "", exit_code: int = 3) -> None:
        super().__init__(message, exit_code)
        self.user_traceback = user_traceback


class NonFiniteLoss(ScorchError):
    """Loss became NaN or infinite."""

    def __init__(self, message: str, everywhere: bool = False) -> None:
        super().__init__(message, exit_code=4, everywhere=everywhere)


class RunComplete(ScorchError):
    """--resume of a run that has done all its epochs: nothing to do, and how to train on (exit 0)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, exit_code=0, everywhere=True)
