"""MPI batch driver: label a structure file across MPI ranks; rank 0 alone writes the store.

Run under any MPI launcher (one process per rank)::

    mpiexec -n 8 python -m alflow.labelling.batch STRUCTURES --store DATA.h5 \
        --method pyscf:pbe/def2-svp [--threads 2] [--tag state=planar]
    srun -n 8 python -m alflow.labelling.batch ...

Design
- Dynamic distribution (master/worker): every rank asks rank 0 for one configuration at a
  time, so a slow SCF never idles the others. Rank 0 also labels, in a helper thread (n ranks
  = n workers; ``--no-master-work`` reserves rank 0 for dispatching).
- Rank 0 runs :func:`alflow.labelling.batch.label_many` with an MPI ``submit``: stored keys are
  skipped, duplicates computed once, keys claimed against other writers of the store, and
  each finished label is committed to the store as soon as it arrives (a background thread;
  within 1 s, whatever comes next), by rank 0 only (HDF5 is single-writer; nothing relies on
  file locks across nodes). On SIGTERM (a scheduler's time limit, ``mpiexec`` forwarding a
  kill) rank 0 commits what has finished and exits at once. Killing the job loses at most the
  labels in flight; a rerun computes only those.
- Waiting ranks poll with ``Iprobe`` + sleep (``--poll``, default 20 ms) instead of blocking in
  ``recv``, which in Open MPI spins a core that a neighbouring rank's SCF needs.
- Threads per rank are set explicitly (OpenMP, BLAS, ``OMP_NUM_THREADS``): ``--threads``, else
  ``OMP_NUM_THREADS``, else the cores this rank may use divided by the ranks sharing them.
- Bad input (unreadable structures, unknown method, element missing from the basis) stops all
  ranks with exit code 2 before any label is computed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import sys
import threading
import time
from collections import deque
from concurrent.futures import Future
from typing import Any

log = logging.getLogger(__name__)

TAG = 17


class MPIPool:
    """``submit(fn, *args) -> Future`` over MPI ranks (rank 0 side); see the module docstring.

    A dispatcher thread on rank 0 is the only thread making MPI calls (needs
    MPI_THREAD_SERIALIZED). ``fn`` and ``args`` are pickled to the workers (use module-level
    functions such as :func:`alflow.labelling.batch.label_one`).
    """

    def __init__(self, comm, local_worker: bool = True, poll_s: float = 0.02):
        from mpi4py import MPI

        if comm.Get_size() > 1 and MPI.Query_thread() < MPI.THREAD_SERIALIZED:
            raise RuntimeError("the MPI library must provide MPI_THREAD_SERIALIZED")
        if comm.Get_size() == 1 and not local_worker:
            raise ValueError("one rank and no master work: nobody would label")
        self.comm = comm
        self.poll_s = poll_s
        self._lock = threading.Lock()
        self._pending: deque[tuple[Future, Any, tuple]] = deque()
        self._closing = threading.Event()
        self.tasks_per_rank = [0] * comm.Get_size()
        self._local_q: queue.Queue | None = None
        self._local_done: queue.Queue = queue.Queue()
        self._threads = [threading.Thread(target=self._dispatch, name="mpi-dispatch",
                                          daemon=True)]
        if local_worker:
            self._local_q = queue.Queue()
            self._threads.append(threading.Thread(target=self._local, name="rank0-worker",
                                                  daemon=True))
        for t in self._threads:
            t.start()

    def submit(self, fn, *args) -> Future:
        fut: Future = Future()
        with self._lock:
            self._pending.append((fut, fn, args))
        return fut

    def shutdown(self, cancel_pending: bool = False) -> None:
        """Stop the workers once every submitted task is done (or, with ``cancel_pending``,
        once the tasks already running are)."""
        if cancel_pending:
            with self._lock:
                while self._pending:
                    self._pending.popleft()[0].cancel()
        self._closing.set()
        for t in self._threads:
            t.join()

    def _local(self) -> None:
        while True:
            item = self._local_q.get()
            if item is None:
                return
            fut, fn, args = item
            try:
                self._local_done.put((fut, fn(*args), None))
            except Exception as err:  # reported through the future
                self._local_done.put((fut, None, err))

    def _dispatch(self) -> None:
        from mpi4py import MPI

        comm, status = self.comm, MPI.Status()
        remote_busy: dict[int, Future] = {}
        idle: deque[int] = deque()
        local_busy: Future | None = None
        workers = comm.Get_size() - 1
        stopped = 0
        while True:
            active = False
            while comm.Iprobe(source=MPI.ANY_SOURCE, tag=TAG, status=status):
                src = status.Get_source()
                kind, payload = comm.recv(source=src, tag=TAG)
                active = True
                if kind in ("result", "error"):
                    fut = remote_busy.pop(src)
                    self.tasks_per_rank[src] += 1
                    if kind == "result":
                        _annotate(payload, src)
                        fut.set_result(payload)
                    else:
                        fut.set_exception(RuntimeError(f"rank {src}: {payload}"))
                idle.append(src)
            while not self._local_done.empty():
                fut, res, err = self._local_done.get()
                local_busy = None
                self.tasks_per_rank[0] += 1
                active = True
                if err is None:
                    _annotate(res, 0)
                    fut.set_result(res)
                else:
                    fut.set_exception(err)
            with self._lock:
                if self._local_q is not None and local_busy is None and self._pending:
                    item = self._pending.popleft()
                    local_busy = item[0]
                    self._local_q.put(item)
                    active = True
                while idle and self._pending:
                    fut, fn, args = self._pending.popleft()
                    dest = idle.popleft()
                    remote_busy[dest] = fut
                    comm.send(("task", (fn, args)), dest=dest, tag=TAG)
                    active = True
                nothing_left = not self._pending and not remote_busy and local_busy is None
            if self._closing.is_set() and nothing_left:
                while stopped < workers:  # every worker says ready once more, or already did
                    if not idle:  # a worker that has not said "ready" yet
                        comm.recv(source=MPI.ANY_SOURCE, tag=TAG, status=status)
                        idle.append(status.Get_source())
                    comm.send(("stop", None), dest=idle.popleft(), tag=TAG)
                    stopped += 1
                if self._local_q is not None:
                    self._local_q.put(None)
                return
            if not active:
                time.sleep(self.poll_s)


def _annotate(rec: Any, rank: int) -> None:
    prov = getattr(rec, "provenance", None)
    if isinstance(prov, dict):
        prov["mpi_rank"] = rank


def worker_loop(comm, poll_s: float = 0.02) -> int:
    """Rank > 0: ask rank 0 for tasks until told to stop; returns the number done."""
    done = 0
    comm.send(("ready", None), dest=0, tag=TAG)
    while True:
        while not comm.Iprobe(source=0, tag=TAG):
            time.sleep(poll_s)
        kind, payload = comm.recv(source=0, tag=TAG)
        if kind == "stop":
            return done
        fn, args = payload
        try:
            msg = ("result", fn(*args))
        except Exception as err:  # reported to rank 0, the batch goes on
            msg = ("error", f"{type(err).__name__}: {err}")
        comm.send(msg, dest=0, tag=TAG)
        done += 1


def choose_threads(requested: int | None, comm) -> int:
    """Threads per rank: ``requested``, else OMP_NUM_THREADS, else usable cores / local ranks
    (a rank bound to a core set by the launcher uses that set)."""
    from mpi4py import MPI

    if requested:
        return requested
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    usable = len(os.sched_getaffinity(0))
    if usable < (os.cpu_count() or usable):
        return max(1, usable)  # the launcher bound this rank
    local = comm.Split_type(MPI.COMM_TYPE_SHARED).Get_size()
    return max(1, usable // local)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m alflow.labelling.batch",
        description="Label every structure of a file across MPI ranks into an HDF5 label "
                    "store (rank 0 writes).")
    p.add_argument("structures", help="structure file ASE can read")
    p.add_argument("--store", required=True, help="HDF5 label store (created if missing)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--method", help="shorthand, e.g. pyscf:pbe/def2-svp or ase:emt "
                                    "[default: pyscf:pbe/def2-svp]")
    g.add_argument("--config", help="YAML file of LabellerConfig fields")
    p.add_argument("--tag", action="append", default=[], help="key=value (repeatable)")
    p.add_argument("--threads", type=int, default=None, help="threads per rank")
    p.add_argument("--retry-failed", action="store_true", help="recompute stored failures")
    p.add_argument("--no-master-work", action="store_true",
                   help="rank 0 only dispatches and writes")
    p.add_argument("--poll", type=float, default=0.02, help="polling interval, s")
    p.add_argument("--summary-json", help="also write the summary to this JSON file")
    return p


def _setup(args, threads: int):
    """Rank 0: structures, store, labeller, tags; raises AlflowError on bad input."""
    from alflow.config import load_yaml_model
    from alflow.dataset import LabelStore
    from alflow.labelling import DEFAULT_METHOD, LabellerConfig
    from alflow.labelling.tags import image_tags, parse_tags
    from alflow.labelling.validate import validate_method
    from alflow.structures import read_structures

    method = (load_yaml_model(LabellerConfig, args.config) if args.config
              else args.method or DEFAULT_METHOD)
    tags = parse_tags(args.tag)
    images = read_structures(args.structures)
    labeller = validate_method(method, images, threads=threads)
    return images, LabelStore(args.store), labeller, image_tags(images, tags)


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from mpi4py import MPI

    from alflow.errors import AlflowError
    from alflow.labelling.base import set_threads
    from alflow.labelling.commit import sigterm_raises

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    threads = choose_threads(args.threads, comm)
    set_threads(threads)
    if rank != 0:
        msg = comm.bcast(None, root=0)
        if msg is not None:
            sys.exit(2)
        worker_loop(comm, args.poll)
        return

    from alflow.labelling.batch import label_many

    try:
        images, store, labeller, tags = _setup(args, threads)
        comm.bcast(None, root=0)
    except AlflowError as err:
        comm.bcast(str(err), root=0)
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    t0 = time.perf_counter()
    pool = MPIPool(comm, local_worker=not args.no_master_work or size == 1, poll_s=args.poll)
    cached = [0]
    try:
        with sigterm_raises():
            records = label_many(images, labeller, store, tags, submit=pool.submit,
                                 retry_failed=args.retry_failed,
                                 on_result=lambda i, r, c: cached.__setitem__(0, cached[0] + c))
    except SystemExit as stop:  # SIGTERM: label_many committed every finished label
        sys.stderr.flush()
        os._exit(int(stop.code or 1))  # the job is ending: do not wait for labels in flight
    except BaseException:
        pool.shutdown(cancel_pending=True)
        raise
    pool.shutdown()
    wall = time.perf_counter() - t0
    summary = {
        "structures": len(images), "ok": sum(r.status == "ok" for r in records),
        "failed": sum(r.status == "failed" for r in records), "reused": cached[0],
        "computed": sum(pool.tasks_per_rank), "tasks_per_rank": pool.tasks_per_rank,
        "ranks": size, "threads_per_rank": threads, "wall_s": round(wall, 3),
        "store": str(store.path), "method": labeller.name,
    }
    print(json.dumps(summary), flush=True)
    if args.summary_json:
        with open(args.summary_json, "w") as fh:
            json.dump(summary, fh, indent=1)
