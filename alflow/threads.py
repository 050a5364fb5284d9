"""Thread pools sized to the cores a worker was given: one function every step calls.

A worker that runs more compute threads than it has cores is slowed many-fold, not by the
ratio: OpenMP teams spin and wait for each other. Measured on the lj7 example: one
committee member trained in 642 s on a 1-core Slurm block where torch ran its default 2
threads, and in about 20 s with one thread.

The cores a worker was given (:func:`cores_given`) are the CPUs it may run on (its
affinity), capped by the CPUs Slurm allocated to the job on this node
(``SLURM_CPUS_ON_NODE``: a non-exclusive block's affinity may show the whole node) and
divided among the workers of its Parsl pool (``PARSL_WORKER_COUNT``). :func:`size_thread_pools`
then sets torch's intra-op threads, the BLAS/OpenMP pools already loaded (threadpoolctl) and
the ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` / ``OPENBLAS_NUM_THREADS`` of child processes.
No Parsl, no campaign: science modules and apps may call it.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _int_env(name: str) -> int | None:
    try:
        v = int(os.environ.get(name, ""))
    except ValueError:
        return None
    return v if v > 0 else None


def cores_given() -> int:
    """Cores this process may use (at least 1): its CPU affinity, capped by Slurm's CPUs of
    the job on this node, divided by the workers of its Parsl worker pool."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    slurm = _int_env("SLURM_CPUS_ON_NODE")
    if slurm is not None:
        n = min(n, slurm)
    return max(1, n // (_int_env("PARSL_WORKER_COUNT") or 1))


def size_thread_pools(threads: int | None = None) -> int:
    """Use ``threads`` compute threads in this process (default :func:`cores_given`): torch's
    intra-op threads, the loaded BLAS/OpenMP pools, and the environment of child processes.
    Returns the number set."""
    n = max(1, int(threads or cores_given()))
    for var in ENV_VARS:
        os.environ[var] = str(n)
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=n)
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        log.debug("threadpoolctl not installed: BLAS pools follow OMP_NUM_THREADS at start")
    return n


__all__ = ["cores_given", "size_thread_pools"]
