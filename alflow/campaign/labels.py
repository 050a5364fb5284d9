"""Oracle labels of a campaign: retried per configuration, journalled, never lost.

The unit of work (:func:`label_task`, run by a worker) labels one configuration with a fresh
labeller (ASE calculators are not thread-safe), retries a failed label up to ``retries``
times, appends one line per oracle calculation to ``oracle_calls.jsonl`` and writes the record
to ``labels/pending/<key>.json`` before returning. The driver appends the records to the label
store as they arrive (through :func:`alflow.labelling.label_many`, which skips stored keys) and
then removes the pending files; a driver killed in between finds them at the next start
(:func:`ingest_pending`), so a label the oracle finished is never computed again.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from alflow.campaign.checkpoint import atomic_write_text
from alflow.campaign.rundir import append_line
from alflow.dataset import LabelRecord, LabelStore
from alflow.labelling import LabellerConfig, make_labeller
from alflow.runlayout import RunLayout

log = logging.getLogger(__name__)


def in_training(tags: dict[str, Any], generation: int) -> bool:
    """Whether a label with ``tags`` trains the committee of ``generation``: every label of
    earlier generations and this generation's bootstrap/exploration labels (its reweighting
    labels come after its training). Later generations' labels (present on resume) do not."""
    g = int(tags.get("generation", 0))
    return g < generation or (g == generation and tags.get("purpose") != "reweight")


def record_to_json(rec: LabelRecord) -> dict[str, Any]:
    return {"key": rec.key, "numbers": rec.numbers.tolist(), "positions": rec.positions.tolist(),
            "cell": rec.cell.tolist(), "pbc": rec.pbc.tolist(), "status": rec.status,
            "energy": rec.energy, "reason": rec.reason,
            "forces": None if rec.forces is None else rec.forces.tolist(),
            "method": rec.method, "provenance": rec.provenance, "tags": rec.tags,
            "created": rec.created}


def record_from_json(d: dict[str, Any]) -> LabelRecord:
    forces = None if d["forces"] is None else np.asarray(d["forces"], dtype=float)
    return LabelRecord(key=d["key"], numbers=d["numbers"], positions=d["positions"],
                       cell=d["cell"], pbc=d["pbc"], status=d["status"], energy=d["energy"],
                       forces=forces, reason=d["reason"], method=d["method"],
                       provenance=d["provenance"], tags=d["tags"], created=d["created"])


def label_task(atoms: Atoms, config: LabellerConfig, tags: dict[str, Any], key: str,
               run_root: str, retries: int = 0) -> LabelRecord:
    """Label one configuration (up to ``1 + retries`` attempts while it fails), journal every
    oracle calculation and leave the record in ``labels/pending`` (see the module docstring).
    """
    t0 = time.time()
    run = RunLayout(run_root)
    lab = make_labeller(config)
    attempts = []
    for attempt in range(retries + 1):
        res = lab.label(atoms)
        append_line(run.oracle_journal,
                    {"key": key, "attempt": attempt, "status": res.status,
                     "reason": res.reason[:200], "pid": os.getpid(),
                     "host": socket.gethostname(), "tags": tags})
        attempts.append(res.reason or "ok")
        if res.status == "ok":
            break
    prov = dict(res.provenance)
    prov["attempts"] = len(attempts)
    if res.status != "ok":
        prov["attempt_reasons"] = attempts
    prov["task_t0"], prov["task_t1"] = t0, time.time()  # epoch s: the orchestration overhead
    rec = LabelRecord.from_atoms(atoms, key, res.status, res.energy, res.forces, res.reason,
                                 lab.method_info, prov, tags)
    atomic_write_text(run.pending / f"{key}.json",
                      json.dumps(record_to_json(rec)))
    return rec


def ingest_pending(store: LabelStore, pending: Path) -> int:
    """Append every finished-but-unstored label in ``pending`` to ``store``; remove the files.
    Returns how many records were added."""
    if not pending.exists():
        return 0
    files = sorted(pending.glob("*.json"))
    recs = []
    for f in files:
        try:
            recs.append(record_from_json(json.loads(f.read_text())))
        except (json.JSONDecodeError, KeyError, ValueError) as err:  # torn file: relabel
            log.warning("ignoring unreadable pending label %s: %s", f, err)
    added = store.append_many(recs) if recs else 0
    for f in files:
        f.unlink(missing_ok=True)
    return added


def clear_pending(pending: Path, keys: list[str]) -> None:
    for k in keys:
        (pending / f"{k}.json").unlink(missing_ok=True)
