"""End to end on the real local Slurm: a short campaign submitted with scripts/campaign.sbatch on
a `slurm` site file, scancelled in the middle of a generation, then resumed by submitting the
same sbatch command again. Nothing that finished is redone: no configuration goes to the oracle
twice and checkpointed tasks are reused, not rerun."""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from pathlib import Path

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

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

SBATCH = ROOT / "scripts" / "campaign.sbatch"

TINY = {**SMALL, "convergence": {**SMALL["convergence"], "max_generations": 2}}

SITE = {  # the built-in `slurm` site, sized for one 2-core node shared with the driver job
    "kind": "slurm", "address": "127.0.0.1", "strategy_period": 0.5, "max_idletime": 3,
    "slurm": {"partition": "debug", "walltime": "00:20:00", "exclusive": False,
              "cores_per_node": 1, "max_blocks": 1, "cmd_timeout": 30},
}


def _paused(events: list[dict]) -> bool:
    """The driver stopped at its `label:1` pause point: generation 1 is labelling."""
    return any(e.get("event") == "paused" and e.get("point") == "label"
               and e.get("generation") == 1 for e in events)


def _submit(env, *args) -> str:
    p = subprocess.run(["sbatch", "--parsable", *args], capture_output=True, text=True,
                       env=env, timeout=60, check=True)
    return p.stdout.strip().split(";")[0]


def _oracle_keys(run: Path) -> Counter:
    journal = run / "oracle_calls.jsonl"
    lines = journal.read_text().splitlines() if journal.exists() else []
    return Counter(json.loads(ln)["key"] for ln in lines if ln.strip())


def test_campaign_sbatch_scancel_and_resume(tmp_path):
    require_slurm()
    env = sbatch_env()
    camp_file = lj7_campaign(tmp_path / "c", TINY, env)
    site = tmp_path / "local-slurm.yaml"
    site.write_text(yaml.safe_dump(SITE))
    run = tmp_path / "run"
    args = ["-o", str(tmp_path / "sbatch-%j.out"), "-t", "20", str(SBATCH), str(camp_file),
            str(run), str(site)]

    # 1. submit; the driver pauses in generation 1 after two new labels (ALFLOW_PAUSE_AT, see
    #    alflow/campaign/pause.py) while the other label tasks go on: scancel it there
    j1 = _submit({**env, "ALFLOW_PAUSE_AT": "label:1"}, *args)
    deadline = time.time() + 900
    while time.time() < deadline and j1 in squeue_ids() and not _paused(read_events(run)):
        time.sleep(0.5)
    log1 = run / "logs" / f"driver-{j1}.out"
    assert _paused(read_events(run)), log1.read_text()[-3000:] if log1.exists() else "no log"
    time.sleep(2.0)   # let the in-flight label tasks finish on the workers
    subprocess.run(["scancel", j1], check=True, timeout=30)
    assert not wait_queue_without({j1}, timeout=60), "driver job not cancelled"
    # the blocks it had started are gone too (the driver or campaign.sbatch scancelled them)
    t0 = time.time()
    left = jobs_under(run / "runinfo")
    while left and time.time() - t0 < 60:
        time.sleep(0.5)
        left = jobs_under(run / "runinfo")
    assert not left, f"blocks of the cancelled campaign still queued: {left}"
    before = read_events(run)
    done_before = {(e["task"], e["key"]) for e in before if e.get("event") == "task_done"}
    calls_before = _oracle_keys(run)
    assert not any(e.get("event") == "run_end" for e in before)

    # 2. the same sbatch command resumes it
    env.pop("ALFLOW_PAUSE_AT", None)
    j2 = _submit(env, *args)
    deadline = time.time() + 1200
    while time.time() < deadline and j2 in squeue_ids():
        time.sleep(1.0)
    log2 = (run / "logs" / f"driver-{j2}.out").read_text()
    assert "alflow resume" in log2, log2[-3000:]
    assert "driver exited with 0" in log2, log2[-3000:]
    after = read_events(run)[len(before):]
    assert any(e.get("event") == "run_start" and e.get("resumed") for e in after), after[:5]
    assert any(e.get("event") == "run_end" for e in after), log2[-3000:]
    # nothing that finished was redone: finished tasks came from their checkpoints ...
    restarted = {(e["task"], e["key"]) for e in after if e.get("event") == "task_start"}
    assert not (restarted & done_before), restarted & done_before
    assert any(e.get("event") == "task_cached" for e in after)
    # ... and no configuration went to the oracle twice (first run and resumed run together)
    calls = _oracle_keys(run)
    assert calls and max(calls.values()) == 1, [k for k, n in calls.items() if n > 1]
    assert set(calls_before) <= set(calls)
    status = json.loads(subprocess.run(["alflow", "status", str(run), "--json"], env=env,
                                       capture_output=True, text=True, check=True,
                                       timeout=120).stdout)
    assert status["labels"]["ok"] + status["labels"]["failed"] == len(calls)
    assert status["generation"] >= 1
