"""Shared helpers of the Slurm tests: bring up the local Slurm or skip with the reason.

``scripts/test.sh`` starts the cluster first (``scripts/start-local-slurm``) and exports
``SLURM_CONF``; run alone, these tests start it themselves (idempotent, ~0.05 s when up). When it
cannot be started, ``ALFLOW_SLURM_UNAVAILABLE`` holds the reason and every Slurm test is skipped
with it (pytest ``-ra`` prints it) - never silently.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
START = ROOT / "scripts" / "start-local-slurm"
_reason: list[str] = []


def slurm_unavailable() -> str | None:
    """None when the local Slurm is up (SLURM_CONF exported here), else why it is not."""
    if os.environ.get("ALFLOW_SLURM_UNAVAILABLE"):
        return os.environ["ALFLOW_SLURM_UNAVAILABLE"]
    if _reason:
        return _reason[0] or None
    try:
        p = subprocess.run(["bash", str(START)], capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as err:
        _reason.append(f"scripts/start-local-slurm could not run: {err}")
        return _reason[0]
    line = p.stdout.strip().splitlines()[-1] if p.stdout.strip() else ""
    if p.returncode != 0 or not line.startswith("export SLURM_CONF="):
        tail = " | ".join(p.stderr.strip().splitlines()[-3:])
        _reason.append("local Slurm cannot be started "
                       f"(scripts/start-local-slurm rc={p.returncode}): {tail}")
        return _reason[0]
    os.environ["SLURM_CONF"] = line.split("=", 1)[1]
    _reason.append("")
    return None


def require_slurm() -> None:
    reason = slurm_unavailable()
    if reason:
        pytest.skip(reason)


def site_overrides(**extra) -> dict:
    """Options of the built-in ``slurm`` site for the one-node local cluster (2 cores)."""
    o = {
        "address": "127.0.0.1",
        "strategy_period": 0.5,
        "max_idletime": 2,
        "slurm.partition": "debug",
        "slurm.walltime": "00:10:00",
        "slurm.exclusive": False,     # blocks share the node with each other and a driver job
        "slurm.cores_per_node": 1,
        "slurm.cmd_timeout": 30,
        # workers import the test modules' apps by name
        "worker_init": f"export PYTHONPATH={Path(__file__).parent}:${{PYTHONPATH:-}}",
    }
    o.update(extra)
    return o


def squeue_ids() -> set[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, timeout=30)
    return set(out.stdout.split())


def wait_queue_without(ids: set[str], timeout: float = 30) -> set[str]:
    """Wait until none of ``ids`` is queued; return those still there."""
    t0 = time.time()
    left = ids & squeue_ids()
    while left and time.time() - t0 < timeout:
        time.sleep(0.3)
        left = ids & squeue_ids()
    return left


def jobs_under(path: str | Path) -> set[str]:
    """Queued jobs whose batch script lives under ``path`` (Parsl blocks of one run dir)."""
    out = subprocess.run(["squeue", "-h", "-o", "%i %o"], capture_output=True, text=True,
                         timeout=30).stdout
    prefix = str(path).rstrip("/") + "/"
    return {ln.split()[0] for ln in out.splitlines()
            if len(ln.split()) > 1 and ln.split()[1].startswith(prefix)}


def sbatch_env(**extra: str) -> dict[str, str]:
    """Environment for `sbatch scripts/campaign.sbatch`: this Python's venv and console scripts."""
    return {**os.environ, "ALFLOW_VENV": sys.prefix,
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", **extra}


def lj7_campaign(folder: Path, settings: dict, env: dict[str, str]) -> Path:
    """The lj7 example written to ``folder`` with ``settings`` merged in; its campaign.yaml."""
    import yaml

    subprocess.run(["alflow", "example", "lj7", str(folder)], env=env, check=True,
                   capture_output=True, timeout=120)
    path = folder / "campaign.yaml"
    camp = yaml.safe_load(path.read_text())
    for k, v in settings.items():
        camp[k] = {**camp.get(k, {}), **v} if isinstance(v, dict) else v
    path.write_text(yaml.safe_dump(camp))
    return path


def read_events(run: Path) -> list[dict]:
    """The complete lines of RUN_DIR/events.jsonl (one being written is skipped)."""
    try:
        lines = (run / "events.jsonl").read_text().splitlines()
    except OSError:
        return []
    out = []
    for ln in lines:
        try:
            out.append(json.loads(ln))
        except json.JSONDecodeError:
            pass
    return out
