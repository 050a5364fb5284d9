"""A block that can never start beside the driver's own job is reported with its fix.

The rule (a pure function of squeue and sinfo output) is tested on recorded rows; then on the
real local Slurm, `sbatch scripts/campaign.sbatch` with exclusive blocks on the one-node
cluster: the block stays pending (Reason=Resources) and the driver says so, with the fix, in
its log, its events and `alflow status`."""

from __future__ import annotations

import json
import subprocess
import time

import pytest
import yaml
from slurm_support import (
    ROOT,
    jobs_under,
    lj7_campaign,
    read_events,
    require_slurm,
    sbatch_env,
    squeue_ids,
    wait_queue_without,
)
from tiny_campaign import SMALL

from alflow.campaign.blocks import blocked_by_driver, parse_sinfo, parse_squeue

RUNINFO = "/runs/ag6/runinfo"
SQUEUE = f"""\
101|RUNNING|None|debug|vm|/home/u/scripts/campaign.sbatch
102|PENDING|Resources|debug||{RUNINFO}/000/submit_scripts/parsl.dft.block-0.17.submit
"""


def test_pending_block_beside_the_driver_on_the_only_node_is_named_with_the_fix():
    jobs = parse_squeue(SQUEUE)
    one_node = parse_sinfo("vm|debug*|mix\n")
    msg = blocked_by_driver(jobs, one_node, "101", RUNINFO)
    assert msg is not None
    assert "block job 102 is pending (Reason=Resources)" in msg and "job 101" in msg
    assert "node vm, the only node of partition debug" in msg
    assert "slurm.exclusive: false" in msg and "slurm.cores_per_node" in msg
    # other nodes all busy: the driver's node is the only one that could be free
    busy = parse_sinfo("vm|debug*|mix\nn2|debug*|alloc\nn3|debug*|drain*\n")
    assert "not taken by other jobs" in blocked_by_driver(jobs, busy, "101", RUNINFO)


@pytest.mark.parametrize("case", ["idle elsewhere", "other partition", "driver pending",
                                  "another run", "priority", "not the driver"])
def test_no_report_when_the_driver_is_not_what_holds_the_block(case):
    squeue, sinfo, driver, runinfo = SQUEUE, "vm|debug*|mix\n", "101", RUNINFO
    if case == "idle elsewhere":
        sinfo += "n2|debug*|idle\n"
    elif case == "other partition":
        sinfo = "vm|debug*|mix\nn2|gpu|alloc\n"
        squeue = squeue.replace("|debug||", "|gpu||")
    elif case == "driver pending":
        squeue = squeue.replace("101|RUNNING|None|debug|vm", "101|PENDING|Priority|debug|")
    elif case == "another run":
        runinfo = "/runs/other/runinfo"
    elif case == "priority":
        squeue = squeue.replace("PENDING|Resources", "PENDING|Priority")
    elif case == "not the driver":
        driver = "100"
    assert blocked_by_driver(parse_squeue(squeue), parse_sinfo(sinfo), driver, runinfo) is None


SITE = {  # the built-in `slurm` site on the one-node local cluster, blocks left exclusive
    "kind": "slurm", "address": "127.0.0.1", "strategy_period": 0.5, "max_idletime": 3,
    "slurm": {"partition": "debug", "walltime": "00:10:00", "max_blocks": 1, "cmd_timeout": 30},
}


@pytest.mark.slurm
def test_driver_reports_its_exclusive_block_waiting_for_its_own_node(tmp_path):
    require_slurm()
    env = sbatch_env()
    camp_file = lj7_campaign(tmp_path / "c", SMALL, env)
    site = tmp_path / "exclusive.yaml"
    site.write_text(yaml.safe_dump(SITE))
    run = tmp_path / "run"
    job = subprocess.run(["sbatch", "--parsable", "-o", str(tmp_path / "sbatch-%j.out"), "-t",
                          "10", str(ROOT / "scripts" / "campaign.sbatch"), str(camp_file),
                          str(run), str(site)], capture_output=True, text=True, env=env,
                         timeout=60, check=True).stdout.strip().split(";")[0]
    try:
        deadline = time.time() + 300
        warned: list[dict] = []
        while time.time() < deadline and job in squeue_ids() and not warned:
            time.sleep(1.0)
            warned = [e for e in read_events(run) if e.get("event") == "warning"]
        log = run / "logs" / f"driver-{job}.out"
        text = log.read_text() if log.exists() else "no driver log"
        assert warned, text[-3000:]
        msg = warned[0]["message"]
        assert f"own job {job}" in msg and "Reason=Resources" in msg
        assert "slurm.exclusive: false" in msg and "cores_per_node" in msg
        assert msg in log.read_text()  # the driver's log says it too
        status = json.loads(subprocess.run(
            ["alflow", "status", str(run), "--json"], env=env, capture_output=True, text=True,
            check=True, timeout=120).stdout)
        assert status["warnings"] == [msg]
    finally:
        subprocess.run(["scancel", job], timeout=30)
        assert not wait_queue_without({job}, timeout=60), "driver job not cancelled"
        t0 = time.time()
        while jobs_under(run / "runinfo") and time.time() - t0 < 60:
            time.sleep(0.5)
        assert not jobs_under(run / "runinfo"), "blocks left queued"
