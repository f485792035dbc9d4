"""One small facade over the distributed engine: single process (default), Horovod, torch.distributed.

Every method marked "all ranks" must be called by every process at the same
point, or the job hangs in the collective. `create(backend)` picks the engine:
`auto` follows the launcher (mpirun/horovodrun: Horovod; torchrun and
SLURM's srun: torch.distributed; nothing: one process).

How gradients are averaged, the same way on both engines: the user's optimizer
stays the one that steps (its state, its scheduler and the checkpoint format are
unchanged); `wrap_optimizer` returns an `AveragedOptimizer` whose `step()` first
replaces each trainable gradient by its exact mean over ranks (sum, then divide
by the number of ranks). Only the parameters of `Socket.train_modules` take
part; frozen ones have `requires_grad=False` and never travel. Horovod starts
each gradient's allreduce from a backward hook, so communication overlaps the
rest of the backward pass; torch.distributed allreduces one flat buffer per
dtype and device at `step()` (DDP would overlap too, but it wraps the model,
renames its state_dict keys and averages only what the forward used; one
flat allreduce is exact, simple, and on CPU/gloo as fast for the models here).

Importing this module is cheap: torch and Horovod load only when an engine starts.
"""

from __future__ import annotations

import atexit
import os
import re
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from scorch.errors import ScorchError

INSTALL_HOROVOD = "bash scripts/install-horovod.sh"
BACKENDS = ("auto", "none", "horovod", "torch")


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
        """All ranks: reduce `tensor` (op: sum|mean|max|min) across ranks; returns the result."""
        return tensor

    def allgather_object(self, obj: Any) -> list:
        """All ranks: every rank's `obj` (picklable), in rank order."""
        return [obj]

    def broadcast_object(self, obj: Any, root: int = 0) -> Any:
        """All ranks: `root`'s `obj`."""
        return obj

    def gather_object(self, obj: Any, root: int = 0) -> list | None:
        """All ranks: every rank's `obj` in rank order on `root`, None on the others (which receive nothing:
        N objects travel, not N x N as with allgather_object)."""
        return [obj]

    def barrier(self) -> None:
        """All ranks: wait until every rank gets here."""

    def wrap_optimizer(self, optimizer: Any, named_parameters: list, backward_passes: int = 1) -> Any:
        """All ranks: an optimizer that steps on gradients averaged across ranks.

        `named_parameters`: the (name, parameter) pairs that train (Socket.train_modules);
        `backward_passes`: backward() calls per step (gradient accumulation)."""
        return optimizer

    def average_gradients(self, optimizer: Any) -> None:
        """All ranks: average the gradients now, before anything reads them (the AMP scaler's
        inf check); `step()` does it itself when this was not called."""
        if isinstance(optimizer, AveragedOptimizer):
            optimizer.synchronize()

    def broadcast_state(self, model: Any, optimizer: Any) -> None:
        """All ranks: copy parameters, buffers and optimizer state from rank 0."""

    def hosts(self) -> list[str]:
        """All ranks: the host name of every rank, in rank order."""
        return self.allgather_object(socket.gethostname())

    def shutdown(self) -> None:
        pass


class AveragedOptimizer:
    """The user's optimizer, stepping on gradients averaged over ranks.

    Everything but `step` and `synchronize` goes to the user's optimizer
    (param_groups, state_dict, load_state_dict, zero_grad), so schedulers, the
    AMP scaler and checkpoints see the optimizer they know."""

    def __init__(self, optimizer: Any, average: Callable[[], None]) -> None:
        self.optimizer = optimizer
        self._average = average
        self._averaged = False

    def synchronize(self) -> None:
        """All ranks: average the gradients of the last backward pass(es), once per step."""
        if not self._averaged:
            self._average()
            self._averaged = True

    def step(self, closure: Any = None) -> Any:
        self.synchronize()
        self._averaged = False
        return self.optimizer.step() if closure is None else self.optimizer.step(closure)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self._averaged = False  # also after a step the AMP scaler skipped
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def __getattr__(self, name: str) -> Any:
        if name == "optimizer":  # not set yet (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.optimizer, name)


class Horovod(Single):
    """Horovod (horovod.torch), under mpirun or horovodrun: MPI or Gloo, NCCL on GPUs."""

    name = "horovod"

    def __init__(self, device: str = "cpu") -> None:
        import horovod.torch as hvd
        import torch
        from horovod.common.exceptions import HorovodInternalError

        if (device == "cuda" or (device == "auto" and torch.cuda.is_available())) and not hvd.cuda_built():
            raise ScorchError(f"--device {device}: this Horovod was built for CPUs only; rebuild it for GPUs with "
                              f"`HOROVOD_GPU_OPERATIONS=NCCL {INSTALL_HOROVOD} --force`, train on CPUs with "
                              "--device cpu, or launch with torchrun instead")
        hvd.init()
        self.hvd = hvd
        self.rank, self.local_rank, self.size = hvd.rank(), hvd.local_rank(), hvd.size()
        self._lost = HorovodInternalError
        self._ops = {"sum": hvd.Sum, "mean": hvd.Average, "max": getattr(hvd, "Max", None), "min": getattr(hvd, "Min", None)}

    @contextmanager
    def _peers(self) -> Iterator[None]:
        """A collective whose peers may be gone: say so in one line instead of a Horovod traceback."""
        try:
            yield
        except self._lost as exc:
            raise _peer_lost(self.rank, exc) from None

    def allreduce(self, tensor: Any, op: str = "sum") -> Any:
        with self._peers():
            return self.hvd.allreduce(tensor, op=self._ops[op])

    # Horovod pairs ranks' operations by name, and its default name is the object's type,
    # which differs between the root (a dict) and the others (None): always name them.
    def allgather_object(self, obj: Any) -> list:
        with self._peers():
            return self.hvd.allgather_object(obj, name="scorch.allgather_object")

    def broadcast_object(self, obj: Any, root: int = 0) -> Any:
        with self._peers():
            return self.hvd.broadcast_object(obj, root_rank=root, name="scorch.broadcast_object")

    def gather_object(self, obj: Any, root: int = 0) -> list | None:
        # Horovod has no gather: an alltoall in which every rank sends its bytes to `root` and nothing elsewhere.
        import pickle

        import torch

        data = torch.frombuffer(bytearray(pickle.dumps(obj)), dtype=torch.uint8)
        splits = torch.zeros(self.size, dtype=torch.int32)
        splits[root] = len(data)
        with self._peers():
            received, sizes = self.hvd.alltoall(data, splits=splits, name="scorch.gather_object")
        if self.rank != root:
            return None
        raw, out, start = memoryview(received.numpy()), [], 0
        for size in sizes.tolist():
            out.append(pickle.loads(raw[start : start + size]))
            start += size
        return out

    def barrier(self) -> None:
        with self._peers():
            self.hvd.barrier()

    def wrap_optimizer(self, optimizer: Any, named_parameters: list, backward_passes: int = 1) -> Any:
        # Horovod wants a name for every parameter the optimizer holds; the frozen ones
        # (requires_grad=False) get placeholder names and no hook, so they never travel.
        named = list(named_parameters)
        listed = {id(p) for _, p in named}
        named += [(f"scorch.unlisted.{i}.{j}", p) for i, group in enumerate(optimizer.param_groups)
                  for j, p in enumerate(group["params"]) if id(p) not in listed]
        # The Horovod optimizer only averages (hooks start each allreduce during backward);
        # the user's optimizer keeps stepping, so its state is the one checkpoints save.
        averager = self.hvd.DistributedOptimizer(optimizer, named_parameters=named,
                                                 backward_passes_per_step=backward_passes, op=self.hvd.Average)

        def average() -> None:
            with self._peers():
                averager.synchronize()

        return AveragedOptimizer(optimizer, average)

    def broadcast_state(self, model: Any, optimizer: Any) -> None:
        with self._peers():
            self.hvd.broadcast_parameters(model.state_dict(), root_rank=0)
        state = self.broadcast_object(_to_cpu(optimizer.state_dict()) if self.rank == 0 else None)
        if self.rank != 0:
            optimizer.load_state_dict(state)

    def shutdown(self) -> None:
        self.hvd.shutdown()


class TorchDistributed(Single):
    """torch.distributed under torchrun: gloo on CPU, nccl on GPUs (objects always travel over gloo)."""

    name = "torch"

    def __init__(self, device: str) -> None:
        import torch
        import torch.distributed as td

        if in_srun_step():
            os.environ.update(slurm_rendezvous())
        missing = [v for v in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
        if missing:
            raise ScorchError(f"--backend torch: not started by torchrun ({', '.join(missing)} not set); run "
                              "`torchrun --nproc-per-node N --no-python scorch-train ...`, or use --backend none")
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
        if use_cuda and torch.cuda.is_available():
            torch.cuda.set_device(self.local_rank % torch.cuda.device_count())
        # nccl refuses two ranks on one GPU ("Duplicate GPU detected"): with more ranks on this host than GPUs,
        # gloo carries the CUDA tensors (slower, but the job runs, as on a one-GPU workstation).
        nccl = use_cuda and int(os.environ.get("LOCAL_WORLD_SIZE", "1")) <= max(1, torch.cuda.device_count())
        td.init_process_group(backend="nccl" if nccl else "gloo", **_restart_store(td))
        self.td, self.torch = td, torch
        self.rank, self.size = td.get_rank(), td.get_world_size()
        # Objects (control requests, metrics' inputs) and CPU tensors go over gloo, never through the GPU.
        self._cpu_group = td.new_group(backend="gloo") if nccl else None
        self._ops = {"sum": td.ReduceOp.SUM, "mean": td.ReduceOp.SUM, "max": td.ReduceOp.MAX, "min": td.ReduceOp.MIN}
        atexit.register(self.shutdown)

    @contextmanager
    def _peers(self) -> Iterator[None]:
        try:
            yield
        except RuntimeError as exc:  # gloo/nccl: "Connection closed by peer", DistBackendError, ...
            raise _peer_lost(self.rank, exc) from None

    def _group(self, tensor: Any) -> Any:
        return self._cpu_group if tensor.device.type == "cpu" else None

    def allreduce(self, tensor: Any, op: str = "sum") -> Any:
        result = tensor.clone()
        with self._peers():
            self.td.all_reduce(result, op=self._ops[op], group=self._group(result))
        return result / self.size if op == "mean" else result

    def allgather_object(self, obj: Any) -> list:
        gathered: list = [None] * self.size
        with self._peers():
            self.td.all_gather_object(gathered, obj, group=self._cpu_group)
        return gathered

    def broadcast_object(self, obj: Any, root: int = 0) -> Any:
        box = [obj]
        with self._peers():
            self.td.broadcast_object_list(box, src=root, group=self._cpu_group)
        return box[0]

    def gather_object(self, obj: Any, root: int = 0) -> list | None:
        gathered: list | None = [None] * self.size if self.rank == root else None
        with self._peers():
            self.td.gather_object(obj, gathered, dst=root, group=self._cpu_group)
        return gathered

    def barrier(self) -> None:
        with self._peers():
            self.td.barrier(group=self._cpu_group)

    def wrap_optimizer(self, optimizer: Any, named_parameters: list, backward_passes: int = 1) -> Any:
        params = [p for _, p in named_parameters if p.requires_grad]

        def average() -> None:
            from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

            for p in params:  # a parameter this rank's forward did not use still takes part (as zeros)
                if p.grad is None:
                    p.grad = self.torch.zeros_like(p)
            buckets: dict = {}
            for p in params:
                buckets.setdefault((p.grad.device, p.grad.dtype), []).append(p.grad)
            with self._peers():
                for grads in buckets.values():
                    flat = _flatten_dense_tensors(grads)
                    self.td.all_reduce(flat, group=self._group(flat))
                    flat /= self.size
                    for grad, mean in zip(grads, _unflatten_dense_tensors(flat, grads)):
                        grad.copy_(mean)

        return AveragedOptimizer(optimizer, average)

    def broadcast_state(self, model: Any, optimizer: Any) -> None:
        with self._peers():
            for tensor in model.state_dict().values():
                self.td.broadcast(tensor, src=0, group=self._group(tensor))
        state = self.broadcast_object(_to_cpu(optimizer.state_dict()) if self.rank == 0 else None)
        if self.rank != 0:
            optimizer.load_state_dict(state)

    def shutdown(self) -> None:
        if self.td.is_initialized():
            self.td.destroy_process_group()


def _restart_store(td: Any) -> dict:
    """After a torchrun elastic restart: the agent's store, under a prefix of this attempt's own.

    The workers of every attempt share the agent's TCPStore without a prefix, so the new group can read
    the addresses the killed one published there and fail to connect (gloo: "connectFullMesh failed ...
    Connection refused" to the dead rank's port: two restarts of three here). Nothing to do on a
    first start or without torchrun's agent store."""
    env = os.environ
    attempt = env.get("TORCHELASTIC_RESTART_COUNT", "0")
    if env.get("TORCHELASTIC_USE_AGENT_STORE") != "True" or attempt in ("", "0"):
        return {}
    from datetime import timedelta

    store = td.TCPStore(env["MASTER_ADDR"], int(env["MASTER_PORT"]), int(env["WORLD_SIZE"]), is_master=False,
                        timeout=timedelta(minutes=30))
    return {"store": td.PrefixStore(f"scorch/attempt-{attempt}", store), "rank": int(env["RANK"]),
            "world_size": int(env["WORLD_SIZE"])}


def launcher() -> tuple[str, int]:
    """Which launcher started this process, and how many processes it started: ("", 1) for none."""
    env = os.environ
    if "TORCHELASTIC_RUN_ID" in env or ("LOCAL_RANK" in env and "WORLD_SIZE" in env):
        return "torchrun", int(env.get("WORLD_SIZE", "1"))
    if "HOROVOD_SIZE" in env:
        return "horovodrun", int(env["HOROVOD_SIZE"])
    for var in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE"):  # OpenMPI, MPICH/Intel MPI, MVAPICH
        if var in env:
            return "mpirun", int(env[var])
    if in_srun_step():
        return "srun", int(env["SLURM_STEP_NUM_TASKS"])
    return "", 1


def in_srun_step() -> bool:
    """True in a task that `srun` started. The batch script itself (which has SLURM_PROCID=0 and
    SLURM_NTASKS=N too) is not one: only srun sets SLURM_STEP_NUM_TASKS, so a scorch-train
    started there without srun trains alone instead of waiting for N-1 ranks that never come."""
    env = os.environ
    return "SLURM_STEP_NUM_TASKS" in env and "SLURM_PROCID" in env and env.get("SLURM_JOB_NAME") not in ("bash", "interactive")


def restart_count() -> int:
    """How often the launcher has started this job again: SLURM's requeues (SLURM_RESTART_COUNT), torchrun's
    elastic restarts (TORCHELASTIC_RESTART_COUNT). A restarted job resumes its run by itself (--resume auto)."""
    for var in ("SLURM_RESTART_COUNT", "TORCHELASTIC_RESTART_COUNT"):
        value = os.environ.get(var, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 0


def lasting_run_name(stem: str) -> str | None:
    """A default run folder name that a restarted job finds again: `STEM-slurmJOBID` in a SLURM job (a requeued
    job keeps its id), `STEM-torchrun-RUNID` under torchrun with --max-restarts (the rendezvous id outlives the
    restarts); None elsewhere (the usual date-time name)."""
    env = os.environ
    if env.get("SLURM_JOB_ID", "").isdigit():
        return f"{stem}-slurm{env['SLURM_JOB_ID']}"
    if env.get("TORCHELASTIC_MAX_RESTARTS", "0") not in ("", "0") and env.get("TORCHELASTIC_RUN_ID"):
        return f"{stem}-torchrun-{re.sub(r'[^A-Za-z0-9_.-]', '_', env['TORCHELASTIC_RUN_ID'])[:64]}"
    return None


def requeue_slurm_job() -> str:
    """`scontrol requeue` this SLURM job (as Lightning's SLURMEnvironment(auto_requeue=True) does on SIGUSR1);
    '' when done, else why not. SLURM then ends every task (SIGTERM) and starts the job again, with
    SLURM_RESTART_COUNT one higher: the same command resumes from the checkpoint just saved."""
    import subprocess

    job = os.environ.get("SLURM_JOB_ID", "")
    try:
        done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"scontrol requeue {job}: {exc}"
    return "" if done.returncode == 0 else f"scontrol requeue {job}: {(done.stderr or done.stdout).strip()[:300]}"


def first_slurm_host(nodelist: str) -> str:
    """The first host of a SLURM node list: `node[07-09,12],gpu3` -> `node07`, `a,b` -> `a`."""
    match = re.match(r"\s*([^,\[\s]+)(?:\[([^\]]*)\])?", nodelist)
    if match is None:
        return "127.0.0.1"
    prefix, ranges = match.groups()
    return prefix + re.split(r"[,-]", ranges)[0] if ranges else prefix


def slurm_rendezvous(env: dict | None = None) -> dict[str, str]:
    """torch.distributed's variables for an srun task, from SLURM's own (those already set win):
    RANK=SLURM_PROCID, WORLD_SIZE=SLURM_STEP_NUM_TASKS, LOCAL_RANK=SLURM_LOCALID, MASTER_ADDR the
    step's first node, MASTER_PORT 15000 + the job id's last 4 digits (Lightning's choice: every task
    computes the same port, and a requeued job, which keeps its id, finds it again)."""
    env = dict(os.environ) if env is None else env
    nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST") or "127.0.0.1"
    job = env.get("SLURM_JOB_ID", "")
    found = {"RANK": env["SLURM_PROCID"], "WORLD_SIZE": env.get("SLURM_STEP_NUM_TASKS", env.get("SLURM_NTASKS", "1")),
             "LOCAL_RANK": env.get("SLURM_LOCALID", "0"), "MASTER_ADDR": first_slurm_host(nodes),
             "MASTER_PORT": str(15000 + int(job[-4:])) if job[-4:].isdigit() else "12910"}
    return {key: env.get(key, value) for key, value in found.items()}


# Set by the launchers in every process they start: one process or many, no terminal of its own to draw on.
LAUNCHER_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMI_RANK", "PMIX_RANK", "MV2_COMM_WORLD_SIZE", "HOROVOD_RANK",
                      "SLURM_JOB_ID", "SLURM_PROCID", "TORCHELASTIC_RUN_ID", "LOCAL_RANK")


def launched() -> bool:
    """Whether a launcher (mpirun, horovodrun, srun or an sbatch job, torchrun) started this process."""
    return any(name in os.environ for name in LAUNCHER_VARIABLES)


def launcher_rank() -> int:
    """This process's rank as its launcher tells it, before any engine starts (0 without one)."""
    for name in ("RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "MV2_COMM_WORLD_RANK", "HOROVOD_RANK", "SLURM_PROCID"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 0


def create(backend: str = "auto", device: str = "auto") -> Single:
    """The engine for `--backend` (auto: the launcher's)."""
    started_by, size = launcher()
    if backend == "auto":
        backend = {"torchrun": "torch", "srun": "torch", "horovodrun": "horovod", "mpirun": "horovod"}.get(
            started_by, "none") if size > 1 else "none"
        if backend == "horovod":
            _check_horovod(f"{started_by} started {size} processes, which train together with Horovod, but")
    if backend == "none":
        if size > 1:
            raise ScorchError(f"--backend none: {started_by} started {size} processes, which would each train alone and "
                              "write the same run folder; use --backend auto, or start one process")
        return Single()
    if backend == "horovod":
        _check_horovod("--backend horovod:")
        return Horovod(device)
    if backend == "torch":
        return TorchDistributed(device)
    raise ScorchError(f"--backend {backend}: unknown; use one of {', '.join(BACKENDS)}")


def share_from_rank_zero(engine: Single, work: Callable[[], Any], for_others: Callable[[Any], Any] | None = None) -> Any:
    """All ranks: `work()` run on rank 0 alone; rank 0 gets its result, the other ranks
    `for_others(result)` (default: the result itself).

    For files only rank 0 may have (checkpoints live where rank 0 wrote them). A
    ScorchError raised there is raised on every rank, so none waits for a value
    that will never come."""
    if engine.size == 1:
        return work()
    result, error = None, None
    if engine.is_global_zero:
        try:
            result = work()
        except ScorchError as exc:
            error = (exc.message, exc.exit_code)
    shared = for_others(result) if for_others is not None and engine.is_global_zero and error is None else result
    shared, error = engine.broadcast_object((shared, error))
    if error is not None:
        message, code = error
        raise ScorchError(message, code, everywhere=True)
    return result if engine.is_global_zero else shared


def scale_learning_rate(optimizer: Any, scheduler: Any, factor: float) -> None:
    """--scale-lr: multiply every param group's learning rate (and a scheduler's base rates) by `factor`."""
    for group in optimizer.param_groups:
        group["lr"] *= factor
        if "initial_lr" in group:
            group["initial_lr"] *= factor
    if scheduler is not None and hasattr(scheduler, "base_lrs"):
        scheduler.base_lrs = [lr * factor for lr in scheduler.base_lrs]


def _check_horovod(context: str) -> None:
    try:
        import horovod.torch  # noqa: F401
    except Exception as exc:  # not installed, or built against another torch (undefined symbol)
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ScorchError(f"{context} Horovod cannot be imported ({why}); install it with `{INSTALL_HOROVOD}` "
                          "(from the scorch repository; builds Horovod 0.28.1 against your torch)") from None


def _peer_lost(rank: int, exc: BaseException) -> ScorchError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ScorchError(f"rank {rank}: another rank left the job, so this one stops too ({first[:200]}); "
                       "that rank's own message says why", exit_code=1)


def _to_cpu(obj: Any) -> Any:
    """A copy of a (nested) state dict with every tensor on the CPU: safe to pickle to any rank's device."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj
