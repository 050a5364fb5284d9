"""How a campaign runs its work: an executor map, label -> ``submit(fn, *args) -> Future``.

The campaign's steps and labels (:mod:`alflow.campaign.steps`, :mod:`alflow.campaign.labels`)
are plain functions; a generation hands each one to the ``submit`` of its executor label
and waits on the Future. What a ``submit`` does is decided here, from the site, and
injected into :class:`alflow.campaign.tasks.Tasks`:

- :func:`inline_submitters`: call the function at once in the driver (tests, ``inline``).
- :func:`parsl_submitters`: one Parsl ``python_app`` per (function, label). On executors whose
  workers are processes (HTEX, MPI, Globus Compute) the app runs :func:`run_in_worker`, which
  sizes the worker's thread pools to its cores (:func:`alflow.threads.size_thread_pools`)
  before the function. On executors that run in the driver process (Parsl's
  ``ThreadPoolExecutor``, the ``local-threads`` site) the app hands the function to a pool of
  worker processes of the driver (:class:`ProcessPool`, one process per core, each with one
  torch thread): two steps in two threads of one process do not run at once (the GIL; the
  lj7 flows steps' small tensors keep Python busy) and share torch's process-wide RNG.

Each step's ``_t0`` (epoch s) becomes the time the worker started it, so the orchestration
overhead (wall time outside every task) counts the step's own imports as inside it.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

Submit = Callable[..., Future]


def run_in_worker(fn: Callable[..., Any], threads: int | None, progress_dir: str | None,
                  *args: Any, **kwargs: Any) -> Any:
    """Size this worker's thread pools (``threads``; None: the cores it was given), send its
    progress bars to ``progress_dir`` (:class:`alflow.progress.DirSink`; None: as set), then
    return ``fn(*args, **kwargs)``; a step's ``_t0`` becomes the moment the worker started
    it."""
    from alflow.threads import size_thread_pools

    t0 = time.time()
    size_thread_pools(threads)
    if progress_dir is not None:
        from alflow.progress import DirSink, set_sink

        set_sink(DirSink(progress_dir))
    out = fn(*args, **kwargs)
    if isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], dict) and "_t0" in out[0]:
        out[0]["_t0"] = min(float(out[0]["_t0"]), t0)
    return out


def inline_submitters(labels: Iterable[str]) -> dict[str, Submit]:
    """Every label runs the function at once, in the calling thread."""

    def submit(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future:
        fut: Future = Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except Exception as err:  # noqa: BLE001 - reported by fut.result()
            fut.set_exception(err)
        return fut

    return {label: submit for label in labels}


def _exit_with_parent(parent: int) -> None:
    """Pool-process initializer: leave when the driver is gone (kill -9 of the driver must
    not leave a step running on, writing into the run directory)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="alflow-parent-watch", daemon=True).start()


def _warm() -> None:
    """Import what every step needs (torch, the campaign's steps and labels)."""
    import alflow.campaign.labels  # noqa: F401
    import alflow.campaign.steps  # noqa: F401


class ProcessPool:
    """The driver's worker processes for steps of in-process executors: ``workers`` spawned
    processes (default: the driver's cores), reused by every step; :meth:`start` spawns them
    and imports the steps' modules in the background (else on first use)."""

    def __init__(self, workers: int | None = None):
        from alflow.threads import cores_given

        self.workers = max(1, workers or cores_given())
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                import multiprocessing

                self._pool = ProcessPoolExecutor(
                    self.workers, mp_context=multiprocessing.get_context("spawn"),
                    initializer=_exit_with_parent, initargs=(os.getpid(),))
            return self._pool

    def start(self) -> ProcessPool:
        """Spawn the workers now and let them import the steps' modules meanwhile."""
        pool = self._executor()
        for _ in range(self.workers):
            pool.submit(_warm)
        return self

    def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` in a worker process; wait for and return its result.
        A worker that died (killed, out of memory) fails this task and the pool is replaced,
        so a retry and the other steps run on fresh workers."""
        pool = self._executor()
        try:
            return pool.submit(fn, *args, **kwargs).result()
        except BrokenProcessPool:
            with self._lock:
                if self._pool is pool:
                    self._pool = None
            pool.shutdown(wait=False, cancel_futures=True)
            raise

    def close(self) -> None:
        """Stop the worker processes; a step still running (the driver is stopping) is
        killed, its result is not waited for."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is None:
            return
        procs = list(getattr(pool, "_processes", {}).values())  # (no public accessor)
        pool.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + 2.0
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
                p.join(1.0)


def parsl_submitters(executors: Iterable[Any], pool: ProcessPool | None = None,
                     progress_dir: str | None = None) -> dict[str, Submit]:
    """The executor map of a loaded Parsl config's ``executors`` (module doc). ``pool`` runs
    the functions of in-process executors (default: a new :class:`ProcessPool`; its workers
    use one thread each); workers report progress bars to ``progress_dir``."""
    from parsl import python_app
    from parsl.executors import ThreadPoolExecutor

    apps: dict[tuple[Any, str], Any] = {}
    lock = threading.Lock()
    pool = pool or ProcessPool()

    def in_pool(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return pool.run(run_in_worker, fn, 1, progress_dir, *args, **kwargs)

    def make(label: str, in_process: bool) -> Submit:
        body = in_pool if in_process else run_in_worker

        def submit(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future:
            with lock:
                app = apps.get((fn, label))
                if app is None:
                    app = apps[(fn, label)] = python_app(body, executors=[label])
            # run_in_worker's threads (None: the worker's cores) and progress directory
            extra = () if in_process else (None, progress_dir)
            return app(fn, *extra, *args, **kwargs)

        submit.__name__ = f"submit_{label}"
        return submit

    return {e.label: make(e.label, isinstance(e, ThreadPoolExecutor)) for e in executors}


@contextlib.contextmanager
def site_session(site: str, root: Path, progress_dir: str,
                 check: Callable[[set[str]], None],
                 warn: Callable[[str], None] | None = None) -> Iterator[dict[str, Submit]]:
    """The executor map of ``site`` (a site name or YAML file) inside its Parsl session,
    for a run directory ``root``: ``check(labels)`` first judges the site's executor labels
    (raises on a missing one); steps of in-process executors run in a :class:`ProcessPool`
    of the driver; workers' progress bars go to ``progress_dir``. On a ``slurm`` site with
    the driver in a Slurm job, a :class:`~alflow.campaign.blocks.BlockWatch` reports blocks
    that cannot start beside the driver's job through ``warn``."""
    from parsl.executors import ThreadPoolExecutor

    from alflow.campaign import sites
    from alflow.campaign.blocks import BlockWatch

    model = sites.load_site_model(site)
    pcfg = sites.build_config(model, root)
    check({e.label for e in pcfg.executors})
    driver_job = os.environ.get("ALFLOW_DRIVER_JOB_ID") or os.environ.get("SLURM_JOB_ID")
    in_driver = any(isinstance(e, ThreadPoolExecutor) for e in pcfg.executors)
    pool = ProcessPool().start() if in_driver else None
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(sites.parsl_session(pcfg))
            if model.kind == "slurm" and driver_job and warn is not None:
                stack.enter_context(BlockWatch(driver_job, str(Path(root) / "runinfo"), warn))
            yield parsl_submitters(pcfg.executors, pool, progress_dir)
    finally:
        if pool is not None:
            pool.close()


def submitter(submitters: Mapping[str, Submit], label: str) -> Submit:
    """The ``submit`` of executor ``label`` (a clear error for a label the map lacks)."""
    try:
        return submitters[label]
    except KeyError:
        from alflow.errors import ConfigError

        raise ConfigError(f"no executor labelled {label!r} (have: "
                          f"{', '.join(sorted(submitters))})") from None


__all__ = ["ProcessPool", "Submit", "inline_submitters", "parsl_submitters", "run_in_worker",
           "submitter"]
