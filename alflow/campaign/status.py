"""Reading a campaign's status from its run directory (no lock needed; safe while running).

``status.json`` is written by the driver after every generation; the live figures (labels,
oracle calls, running tasks) are recomputed from the label store, the oracle journal and the
event log, and a campaign whose driver is gone without finishing is reported ``interrupted``.
"""

from __future__ import annotations

import fcntl
import json
from pathlib import Path
from typing import Any

from alflow.campaign.rundir import RunDir, oracle_calls, read_lines
from alflow.errors import InputError


def driver_alive(run: RunDir) -> bool:
    """Whether a driver holds the run directory's lock."""
    if not run.lock.exists():
        return False
    with open(run.lock) as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
    return False


def running_tasks(run: RunDir) -> list[str]:
    """Tasks started since the last run_start that have not finished or failed for good."""
    open_: dict[str, str] = {}
    for e in read_lines(run.events):
        ev = e.get("event")
        if ev == "run_start":
            open_.clear()
        elif ev == "task_start":
            open_[e["key"]] = e["task"]
        elif ev in ("task_done", "task_cached"):
            open_.pop(e.get("key"), None)
    return sorted(open_.values())


def read_status(run_dir: str | Path) -> dict[str, Any]:
    run = RunDir(run_dir)
    if not run.status_json.exists():
        raise InputError(f"{run.root} is not a campaign run directory (no status.json)")
    st = json.loads(run.status_json.read_text())
    if run.dataset.exists():
        from alflow.dataset import LabelStore

        by = LabelStore(run.dataset, create=False).summary()["by_status"]
        st["labels"] = {"ok": by.get("ok", 0), "failed": by.get("failed", 0)}
    st["oracle_calls"] = oracle_calls(run)
    alive = driver_alive(run)
    if st.get("state") == "running" and not alive:
        st["state"] = "interrupted"
        st["stop_reason"] = "the driver stopped before finishing; run 'alflow resume'"
    st["running"] = running_tasks(run) if alive else []
    return st
