"""Thread pools follow the cores a worker was given; campaign steps on the local-threads
site run in the driver's worker processes, one torch thread each."""

import os

import parsl
import pytest
import torch

from alflow.campaign.sites import local_threads
from alflow.campaign.submit import ProcessPool, parsl_submitters
from alflow.threads import cores_given, size_thread_pools


def test_cores_given_follow_slurm_and_the_parsl_pool(monkeypatch):
    affinity = len(os.sched_getaffinity(0))
    monkeypatch.delenv("SLURM_CPUS_ON_NODE", raising=False)
    monkeypatch.delenv("PARSL_WORKER_COUNT", raising=False)
    assert cores_given() == affinity
    monkeypatch.setenv("SLURM_CPUS_ON_NODE", "1")  # a 1-core block on a bigger node
    assert cores_given() == 1
    monkeypatch.setenv("SLURM_CPUS_ON_NODE", str(4 * affinity))
    monkeypatch.setenv("PARSL_WORKER_COUNT", str(affinity))  # one worker per core
    assert cores_given() == 1


def test_size_thread_pools_sets_torch_and_child_environment(monkeypatch):
    before = torch.get_num_threads()
    try:
        assert size_thread_pools(1) == 1
        assert torch.get_num_threads() == 1
        assert os.environ["OMP_NUM_THREADS"] == os.environ["MKL_NUM_THREADS"] == "1"
    finally:
        torch.set_num_threads(before)


def _where(x: int) -> tuple[int, int, str, int]:
    return os.getpid(), torch.get_num_threads(), os.environ["OMP_NUM_THREADS"], x * x


def _fails() -> None:
    raise ValueError("bad step")


def test_local_threads_steps_run_in_worker_processes_with_one_thread(tmp_path):
    pool = ProcessPool(2)
    dfk = parsl.load(local_threads(tmp_path, max_threads=2))
    try:
        submit = parsl_submitters(dfk.config.executors, pool)
        futs = [submit["gpu"](_where, k) for k in range(4)]
        out = [f.result(timeout=120) for f in futs]
        assert [o[3] for o in out] == [0, 1, 4, 9]
        assert all(pid != os.getpid() for pid, *_ in out)  # not the driver's process
        assert {(n, env) for _, n, env, _ in out} == {(1, "1")}
        with pytest.raises(ValueError, match="bad step"):
            submit["cpu"](_fails).result(timeout=120)
    finally:
        dfk.cleanup()
        parsl.clear()
        pool.close()


def _die() -> None:
    os._exit(3)  # a worker killed mid-step


def test_a_dead_worker_fails_its_step_and_the_pool_recovers():
    from concurrent.futures.process import BrokenProcessPool

    pool = ProcessPool(1)
    try:
        with pytest.raises(BrokenProcessPool):
            pool.run(_die)
        assert pool.run(_where, 3)[3] == 9  # a fresh worker runs the next step
    finally:
        pool.close()
