"""Small helpers for torch.distributed data parallelism (shared by MLIP and flow training).

Two ways to get a process group:

* ``torchrun --nproc-per-node N script.py``: each process calls :func:`init_from_env`, which
  reads ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_ADDR``/``MASTER_PORT``.
* :func:`spawn` (torch.multiprocessing, start method ``spawn``): starts ``nproc`` fresh
  processes on this node, each already in a process group, and returns rank 0's result.

The backend follows the device: ``nccl`` for CUDA, ``gloo`` for CPU. Each rank of a CUDA run
uses ``cuda:<local_rank>``.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import socket
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """Rank of this process, number of processes, rank on this node, and its torch device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(device: str | torch.device = "cpu", local_rank: int = 0) -> torch.device:
    """``"auto"`` -> CUDA if available else CPU; bare ``"cuda"`` -> ``cuda:<local_rank>``."""
    if str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            from alflow.errors import ConfigError

            raise ConfigError(f"device {device!r} requested but CUDA is not available")
        if dev.index is None:
            dev = torch.device("cuda", local_rank % torch.cuda.device_count())
    return dev


def backend_for(device: str | torch.device) -> str:
    """``nccl`` for CUDA devices, ``gloo`` otherwise."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on ``host`` (for MASTER_PORT)."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def current() -> DistInfo:
    """The DistInfo of an initialised process group (or the single-process default)."""
    if dist.is_available() and dist.is_initialized():
        local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
        dev = torch.device(os.environ.get("ALFLOW_DIST_DEVICE", "cpu"))
        return DistInfo(dist.get_rank(), dist.get_world_size(), local, dev)
    return DistInfo()


def init_process_group(rank: int, world_size: int, device: str | torch.device = "cpu",
                       master_addr: str = "127.0.0.1", master_port: int | None = None,
                       local_rank: int | None = None, timeout_s: float = 600.0) -> DistInfo:
    """Join (or create) the default process group; backend chosen from ``device``."""
    local_rank = rank if local_rank is None else local_rank
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    os.environ.setdefault("MASTER_ADDR", master_addr)
    if master_port is not None:
        os.environ["MASTER_PORT"] = str(master_port)
    os.environ.setdefault("MASTER_PORT", "29500")
    os.environ["ALFLOW_DIST_DEVICE"] = str(dev)
    os.environ["LOCAL_RANK"] = str(local_rank)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend_for(dev), rank=rank, world_size=world_size,
                                timeout=datetime.timedelta(seconds=timeout_s))
    return DistInfo(rank, world_size, local_rank, dev)


def init_from_env(device: str | torch.device = "cpu") -> DistInfo:
    """Process group from torchrun's environment; single process if ``WORLD_SIZE`` is unset.

    With several ranks, each uses its share of this node's cores as torch threads (torchrun
    itself sets one thread per rank)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    if world > 1:
        torch.set_num_threads(threads_per_process(int(os.environ.get("LOCAL_WORLD_SIZE",
                                                                     world))))
    return init_process_group(rank, world, device, local_rank=local)


def destroy() -> None:
    """Leave the process group if one is active."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def finish() -> None:
    """Leave the process group after a successful run: wait for every rank first, so that no
    rank tears down its connections while a peer still uses them (gloo aborts the process)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
    destroy()


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks (no-op with one process); returns the reduced tensor."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


def threads_per_process(nproc: int) -> int:
    """CPU threads each of ``nproc`` processes on this node should use (at least 1)."""
    try:
        ncpu = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        ncpu = os.cpu_count() or 1
    return max(1, ncpu // max(1, nproc))


def _entry(rank: int, fn: Callable[..., Any], world: int, port: int, device: str,
           args: tuple, queue: Any, threads: int) -> None:
    torch.set_num_threads(threads)
    try:
        info = init_process_group(rank, world, device, master_port=port)
        out = fn(info, *args)
    except BaseException as err:  # report to the parent, which raises
        queue.put(("error", rank, f"{type(err).__name__}: {err}\n{traceback.format_exc()}"))
        raise  # no destroy here: peers may still be inside a collective (it would deadlock)
    queue.put(("ok", rank, out if rank == 0 else None))
    finish()


def spawn(fn: Callable[..., Any], nproc: int, *args: Any, device: str = "cpu",
          threads: int | None = None) -> Any:
    """Run ``fn(info: DistInfo, *args)`` in ``nproc`` new processes in one process group.

    ``fn`` and ``args`` must be picklable (module-level function). Returns rank 0's return
    value; raises RuntimeError if any rank fails. Each process gets ``threads`` torch threads
    (default ``cpus // nproc``).
    A crash after every rank has returned (in the C++ teardown of the process group) does not
    lose the result: it is logged and rank 0's value returned.
    """
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    port = free_port()
    threads = threads or threads_per_process(nproc)
    crash: BaseException | None = None
    procs = mp.start_processes(_entry, args=(fn, nproc, port, device, args, queue, threads),
                               nprocs=nproc, join=False, start_method="spawn")
    reports: list[tuple] = []
    while True:  # read while the ranks run: a large result must not block in the pipe
        while not queue.empty():
            reports.append(queue.get())
        try:
            if procs.join(timeout=0.2):
                break
        except (mp.ProcessRaisedException, mp.ProcessExitedException) as err:
            crash = err
            break
    while not queue.empty():
        reports.append(queue.get())
    errors = [r for r in reports if r[0] == "error"]
    finished = {r[1]: r[2] for r in reports if r[0] == "ok"}
    if errors:
        raise RuntimeError(f"distributed run failed on rank {errors[0][1]}: {errors[0][2]}")
    if len(finished) < nproc:
        raise RuntimeError(f"distributed run failed: {crash or 'a rank returned no result'}")
    if crash is not None:
        log.warning("all %d ranks finished but one crashed while exiting (%s); result kept",
                    nproc, str(crash).splitlines()[0])
    return finished[0]


__all__ = ["DistInfo", "all_reduce_sum", "backend_for", "current", "destroy", "finish",
           "free_port", "init_from_env", "init_process_group", "resolve_device", "spawn",
           "threads_per_process"]
