"""Shared test settings: deterministic seeds, one BLAS thread per process, and no Parsl left
behind (a test that fails before its own cleanup leaves neither a loaded DataFlowKernel nor
an HTEX interchange or worker pool running)."""

import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")
# every process a test starts inherits this: at the end of the session, processes that still
# carry it (only this session's: other sessions may be testing at the same time) are stopped
SESSION_MARK = "ALFLOW_TEST_SESSION"
os.environ[SESSION_MARK] = str(os.getpid())

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    np.random.seed(0)
    torch.manual_seed(0)


def _loaded_dfk():
    """The loaded DataFlowKernel, or None (without importing Parsl if no test has)."""
    if "parsl" not in sys.modules:
        return None
    from parsl.dataflow.dflow import DataFlowKernelLoader

    return DataFlowKernelLoader._dfk


@pytest.fixture(autouse=True)
def _parsl_cleanup():
    """After each test: clean up and clear a DataFlowKernel the test loaded and left loaded
    (one a module-scoped fixture loaded before the test is that fixture's to clean up)."""
    before = _loaded_dfk()
    yield
    dfk = _loaded_dfk()
    if dfk is None or dfk is before:
        return
    import parsl

    try:
        dfk.cleanup()
    finally:
        parsl.clear()


def _session_leftovers() -> list:
    """Live processes started (directly or not) by this test session: they carry its mark.
    At the end of the session every one is a leak (Parsl's interchange, a worker pool, the
    pool's multiprocessing workers, a driver a test started)."""
    import psutil

    mine = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
            if "multiprocessing.resource_tracker" in cmd:  # pytest's own; exits with it
                continue
            if p.pid != os.getpid() and p.environ().get(SESSION_MARK) == str(os.getpid()):
                p.info["cmd"] = cmd
                mine.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return mine


def pytest_sessionfinish(session, exitstatus):
    """Stop (SIGTERM, then SIGKILL) processes this session started that outlived their test
    (e.g. an HTEX interchange or worker pool), and say so: a leak is a bug to fix."""
    import psutil

    left = _session_leftovers()
    if not left:
        return
    sys.stderr.write("\nconftest: stopping processes that outlived their test: "
                     f"{[(p.pid, p.info['cmd'][:80]) for p in left]}\n")
    for p in left:
        p.terminate()
    _, alive = psutil.wait_procs(left, timeout=10)
    for p in alive:
        p.kill()
