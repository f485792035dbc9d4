"""One small facade over the distributed engine: single process (default), Horovod, torch.distributed.

Every method marked "all ranks" must be called by every process at the same
point, or the job hangs in the collective.
"""

from __future__ import annotations

import socket
from typing import Any

from scorch.errors import ScorchError


class Single:
    """One process, no engine: every collective is the identity."""

    name = "none"
    rank = 0
    local_rank = 0
    size = 1

    @property
    def is_global_zero(self) -> bool:
        return self.rank == 0

    def allreduce(self, tensor: Any, op: str = "sum") -> Any:
        """All ranks: reduce `tensor` (op: sum|mean) across ranks; returns the result."""
        return tensor

    def allgather_object(self, obj: Any) -> list:
        """All ranks: every rank's `obj`, in rank order."""
        return [obj]

    def broadcast_object(self, obj: Any, root: int = 0) -> Any:
        """All ranks: `root`'s `obj`."""
        return obj

    def barrier(self) -> None:
        """All ranks: wait until every rank gets here."""

    def wrap_optimizer(self, optimizer: Any, named_parameters: list) -> Any:
        """All ranks: an optimizer that averages gradients across ranks."""
        return optimizer

    def broadcast_state(self, model: Any, optimizer: Any) -> None:
        """All ranks: copy parameters and optimizer state from rank 0."""

    def wrap_model(self, model: Any) -> Any:
        return model

    def hosts(self) -> list[str]:
        """All ranks: the host name of every rank, in rank order."""
        return self.allgather_object(socket.gethostname())

    def shutdown(self) -> None:
        pass


def create(backend: str = "auto") -> Single:
    """The engine for `--backend` (auto: detect the launcher)."""
    if backend in ("auto", "none"):
        return Single()
    raise ScorchError(f"--backend {backend}: not available in this build; use --backend none")
