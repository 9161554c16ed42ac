"""torch.distributed for flowkit's commands: who this process is, and the few collectives they use.

flowkit runs on torchrun (``python -m torch.distributed.run``), which starts one process per rank
and sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``. A process
group is created only then (:func:`launched`: ``WORLD_SIZE > 1`` and ``MASTER_ADDR`` set); a plain
process, or a Slurm array job sharded with ``--shard I/N``, never waits for peers. Without a group
every helper here is the one-process identity (``gather`` returns ``[obj]``, sums are the value), so
callers need no second code path.

Backends: gloo on the CPU, nccl when the work runs on CUDA (:func:`init`). Objects are gathered
with ``all_gather_object`` over gloo-compatible pickles; tensors for ``all_reduce`` live on the
group's device (CPU for gloo, this rank's GPU for nccl).
"""
from __future__ import annotations

import atexit
import gc
import os
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from .errors import FlowkitError

# Extraction ranks finish their shares hours apart on big datasets; the final gather must wait.
# torchrun tears the group down if a peer dies, so a long timeout never hides a dead rank.
LONG_WAIT = timedelta(days=7)


@dataclass(frozen=True)
class Launch:
    """This process's place in a torchrun launch: ``rank`` of ``world_size``, ``local_rank`` on
    its node (the GPU it takes). ``(0, 1, 0)`` for a plain process."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> "Launch":
        """Read ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK``; FlowkitError when they are not integers
        or inconsistent."""
        try:
            rank = int(os.environ.get("RANK", 0))
            world = int(os.environ.get("WORLD_SIZE", 1))
            local = int(os.environ.get("LOCAL_RANK", 0))
        except ValueError as exc:
            raise FlowkitError(f"RANK/WORLD_SIZE/LOCAL_RANK must be integers: {exc}") from None
        if not (world >= 1 and 0 <= rank < world and local >= 0):
            raise FlowkitError(f"inconsistent launch: RANK={rank}, WORLD_SIZE={world}, "
                               f"LOCAL_RANK={local}")
        return cls(rank, world, local)

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that logs, writes checkpoints and prints summaries."""
        return self.rank == 0


def launched() -> bool:
    """True under torchrun with several ranks (``WORLD_SIZE > 1`` and ``MASTER_ADDR`` set)."""
    return Launch.from_env().world_size > 1 and bool(os.environ.get("MASTER_ADDR"))


def active() -> bool:
    """True when a process group is up (so collectives reach the other ranks)."""
    return dist.is_available() and dist.is_initialized()


def local_device(device: str) -> str:
    """``"cuda"`` -> ``"cuda:LOCAL_RANK"`` under a launcher (each local rank takes its own GPU);
    any other device, or an explicit ``cuda:N``, unchanged."""
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        return f"cuda:{Launch.from_env().local_rank}"
    return device


def init(device: str | torch.device = "cpu", timeout: timedelta | None = None) -> bool:
    """Join the torchrun process group when launched (:func:`launched`); returns :func:`active`.

    The backend is nccl when ``device`` is CUDA, else gloo. For nccl the rank's GPU is made the
    current device first. Idempotent: an existing group is kept. The group is left at the
    latest when the interpreter exits (:func:`shutdown` at exit), whatever ends the process.
    """
    if active() or not launched():
        return active()
    if not dist.is_available():
        raise FlowkitError("this torch build has no torch.distributed; install a build with it to "
                           "run under torchrun")
    device = torch.device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(device)
    kw = {"timeout": timeout} if timeout is not None else {}
    dist.init_process_group(backend, **kw)
    # Every way out, not only the commands' happy path: an error (exit 2), a traceback, Ctrl-C or
    # sys.exit before their own shutdown() would leave the group to the interpreter's teardown,
    # where gloo aborts the rank (see shutdown). atexit runs before that teardown; it is
    # registered once (shutdown is a no-op once the group is gone).
    atexit.unregister(shutdown)
    atexit.register(shutdown)
    return True


def shutdown() -> None:
    """Leave the process group (no-op without one), once the objects that hold it are gone: a
    DistributedDataParallel wrapper (:meth:`Trainer.fit <flowkit.train.Trainer.fit>` releases
    its own) or the graph of an autograd collective keep the group alive past
    ``destroy_process_group``, and gloo's threads then abort the process as the interpreter ends
    (SIGABRT, "terminate called without an active exception"). Unreachable ones are collected
    here first; the caller drops the rest."""
    if active():
        gc.collect()
        dist.destroy_process_group()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def _device() -> torch.device:
    """Where collective tensors live: the current GPU for nccl, the CPU otherwise."""
    if active() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def gather(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank; ``[obj]`` without a group."""
    if not active():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def sum_values(values: list[float]) -> list[float]:
    """Element-wise sum over ranks (float64); the values themselves without a group."""
    if not active():
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_device())
    dist.all_reduce(t)
    return t.cpu().tolist()


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on at least one (a stop request seen by one rank
    stops all of them at the same step)."""
    if not active():
        return bool(flag)
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


# Stop reasons by strength (see :class:`flowkit.progress.StopFlag`): the strongest one seen by any
# rank is every rank's, so a SIGTERM that reached one rank ends all of them as terminated (143).
STOP_REASONS = ("", "interrupted", "terminated")


def strongest_reason(reason: str) -> str:
    """The strongest stop reason over ranks (:data:`STOP_REASONS`; "" when no rank stops, a reason
    not listed counts as "interrupted"); ``reason`` itself without a group."""
    code = STOP_REASONS.index(reason) if reason in STOP_REASONS else 1
    if not active():
        return reason
    t = torch.tensor([code], dtype=torch.int32, device=_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return STOP_REASONS[int(t.item())]


# What a collective raises when a peer is gone (killed, crashed, its node lost): gloo's transport
# ("Read error [IP]:PORT: Connection reset by peer", "Connection closed by peer", a timeout) and
# nccl's ("remote process exited", an aborted communicator). Matched on the text because torch
# raises them as RuntimeError (gloo) or DistBackendError, as it also does for real bugs.
_PEER_LOST = ("connection reset", "connection closed", "connection refused", "broken pipe",
              "remote process exited", "communicator was aborted", "ncclremoteerror")


def peer_failure(exc: BaseException) -> str | None:
    """What a lost peer made a collective raise (``exc``'s first sentence, without gloo's
    source location), or None: no group, or ``exc`` is not such an error (a shape mismatch, a
    bad input: real bugs keep their traceback)."""
    if not (active() and isinstance(exc, RuntimeError)):
        return None
    text = str(exc)
    low = text.lower()
    hung = "timed out" in low and ("gloo" in low or "nccl" in low)  # a peer that stopped answering
    if not (isinstance(exc, getattr(dist, "DistNetworkError", ()))
            or hung or any(k in low for k in _PEER_LOST)):
        return None
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    first = re.sub(r"^\[[^\]]*\]\s*", "", first)  # "[.../pair.cc:537] Read error ..."
    return first.split(". ")[0].rstrip(".")


def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers of ``module`` (batch norm's running statistics) into every
    rank's ``module``, in place; no-op without a group. DistributedDataParallel does this only at
    the start of each training forward, so after an optimiser step each rank holds the statistics
    of its own clips: call this before the plain module is used outside DDP (validation), so every
    rank computes with the model rank ``src`` saves."""
    if not active():
        return
    with torch.no_grad():
        for buffer in module.buffers():
            dist.broadcast(buffer, src)


def barrier() -> None:
    """Wait for every rank (no-op without a group)."""
    if active():
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()
