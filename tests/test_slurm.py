"""Parsl apps on the real local Slurm through the `slurm` site (marker: slurm)."""

from __future__ import annotations

import os

import pytest
from parsl import python_app
from slurm_support import require_slurm, site_overrides, wait_queue_without

from alflow.campaign.sites import load_site, parsl_session

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
