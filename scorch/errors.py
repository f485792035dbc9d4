"""The one error type users see: a short message that says how to fix it, and an exit code."""

from __future__ import annotations


class ScorchError(Exception):
    """A user-facing failure, printed once by `main()` without a traceback.

    The message names the file, flag or thing at fault and how to fix it.
    """

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class UserCodeError(ScorchError):
    """The user's model or dataset code raised: carries their trimmed traceback."""

    def __init__(self, message: str, user_traceback: str = "", exit_code: int = 3) -> None:
        super().__init__(message, exit_code)
        self.user_traceback = user_traceback


class NonFiniteLoss(ScorchError):
    """Loss became NaN or infinite."""

    def __init__(self, message: str) -> None:
        super().__init__(message, exit_code=4)
