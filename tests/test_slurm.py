"""Parsl apps on the real local Slurm through the `slurm` site (marker: slurm)."""

from __future__ import annotations

import os

import pytest
from parsl import bash_app, python_app
from slurm_support import require_slurm, site_overrides, wait_queue_without

from alflow.campaign.sites import (
    build_config,
    load_site,
    load_site_model,
    mpi_resource_spec,
    parsl_session,
)

pytestmark = pytest.mark.slurm


@python_app(executors=["cpu"])
def _where(x):
    import os
    import socket

    return {"x2": 2 * x, "job": os.environ.get("SLURM_JOB_ID"), "host": socket.gethostname(),
            "pid": os.getpid()}


def test_parsl_app_runs_as_slurm_job(tmp_path):
    require_slurm()
    cfg = load_site("slurm", tmp_path, site_overrides())
    with parsl_session(cfg) as dfk:
        results = [_where(i).result(timeout=120) for i in range(4)]
        provider = dfk.executors["cpu"].provider
        submitted = {str(j) for j in provider.resources}
        driver_pid = os.getpid()
    assert [r["x2"] for r in results] == [0, 2, 4, 6]
    jobs = {r["job"] for r in results}
    # every task ran inside a Slurm job that the SlurmProvider submitted, not in the driver
    assert None not in jobs and jobs <= submitted, (jobs, submitted)
    assert all(r["pid"] != driver_pid for r in results)
    # the block job's stdout/stderr and Parsl's runinfo live in the run directory
    outs = list((tmp_path / "runinfo").rglob("*.stdout"))
    assert outs, list((tmp_path / "runinfo").rglob("*"))
    # clean shutdown: the block was scancelled
    assert not wait_queue_without(submitted), "Parsl blocks still queued after cleanup"


@bash_app(executors=["dft"])
def _mpi_ranks(stdout=None, stderr=None, parsl_resource_specification=None):
    import sys

    from alflow.campaign.sites import mpi_command

    code = ("from mpi4py import MPI; import os; c = MPI.COMM_WORLD; "
            "print('rank', c.rank, 'of', c.size, 'sum', c.allreduce(c.rank), "
            "'job', os.environ.get('SLURM_JOB_ID'), 'step', os.environ.get('SLURM_STEP_ID'))")
    return mpi_command([sys.executable, "-c", code])


def test_mpi_task_through_srun_prefix(tmp_path):
    require_slurm()
    site = load_site_model("slurm", site_overrides(**{
        "classes.dft": {"executor": "mpi", "ranks_per_node": 2, "nodes_per_task": 1,
                        "slurm": {"cores_per_node": 2}}}))
    spec = mpi_resource_spec(site, "dft")
    out, err = tmp_path / "mpi.out", tmp_path / "mpi.err"
    with parsl_session(build_config(site, tmp_path)):
        rc = _mpi_ranks(stdout=str(out), stderr=str(err),
                        parsl_resource_specification=spec).result(timeout=180)
    text = out.read_text()
    assert rc == 0, err.read_text()
    # srun exits 0 even when a step fails to launch: check that both ranks really ran, in one step
    lines = sorted(ln for ln in text.splitlines() if ln.startswith("rank"))
    assert [ln.split()[:4] for ln in lines] == [["rank", "0", "of", "2"], ["rank", "1", "of", "2"]]
    assert all(ln.split()[5] == "1" for ln in lines)  # allreduce over both ranks
    assert len({ln.split()[9] for ln in lines}) == 1 and lines[0].split()[9] != "None"
