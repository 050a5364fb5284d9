"""The slurm-allocation site inside one real sbatch allocation: no nested job submission."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import pytest
from slurm_support import require_slurm, squeue_ids

pytestmark = pytest.mark.slurm

DRIVER = textwrap.dedent("""
    import json, os, sys
    from parsl import bash_app, python_app
    from alflow.campaign.sites import (build_config, load_site_model, mpi_resource_spec,
                                       parsl_session)

    @python_app(executors=["cpu"])
    def where():
        import os
        return {k: os.environ.get(k) for k in ("SLURM_JOB_ID", "SLURM_STEP_ID")}

    @bash_app(executors=["dft"])
    def ranks(stdout=None, stderr=None, parsl_resource_specification=None):
        import sys
        from alflow.campaign.sites import mpi_command
        code = ("from mpi4py import MPI; import os; c = MPI.COMM_WORLD; "
                "print(c.rank, c.size, os.environ['SLURM_JOB_ID'])")
        return mpi_command([sys.executable, "-c", code])

    site = load_site_model("slurm-allocation", {
        "address": "127.0.0.1", "strategy_period": 0.5,
        "classes.dft": {"executor": "mpi", "ranks_per_node": 2},
        "classes.gpu": {"max_workers_per_node": 1}})
    out = sys.argv[1]
    with parsl_session(build_config(site, os.path.dirname(out))) as dfk:
        w = [where().result(timeout=120) for _ in range(3)]
        rc = ranks(stdout=out + ".mpi", stderr=out + ".err",
                   parsl_resource_specification=mpi_resource_spec(site, "dft")).result(timeout=120)
    json.dump({"where": w, "rc": rc, "mpi": open(out + ".mpi").read(),
               "job": os.environ["SLURM_JOB_ID"]}, open(out, "w"))
""")


def test_campaign_inside_one_allocation(tmp_path):
    require_slurm()
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    out = tmp_path / "result.json"
    before = squeue_ids()
    sub = subprocess.run(
        ["sbatch", "--parsable", "-N", "1", "-n", "2", "-t", "5", "-o", str(tmp_path / "job.out"),
         "--wrap", f"{sys.executable} {script} {out}"],
        capture_output=True, text=True, timeout=60, check=True)
    job = sub.stdout.strip().split(";")[0]
    seen: set[str] = set()
    t0 = time.time()
    while time.time() - t0 < 150:
        q = squeue_ids() - before
        seen |= q
        if job not in q:
            break
        time.sleep(0.5)
    log = (tmp_path / "job.out").read_text() if (tmp_path / "job.out").exists() else ""
    assert out.exists(), log[-3000:]
    res = json.loads(out.read_text())
    assert seen <= {job}, f"nested jobs were submitted: {seen}"
    assert res["job"] == job
    # python tasks ran in srun job steps of this allocation
    for w in res["where"]:
        assert w["SLURM_JOB_ID"] == job and w["SLURM_STEP_ID"] not in (None, ""), w
    assert res["rc"] == 0
    lines = sorted(res["mpi"].split("\n"))[-2:]
    assert lines == [f"0 2 {job}", f"1 2 {job}"], res["mpi"]
