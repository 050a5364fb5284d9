"""The label store: round trip, append-only, export, crash safety under SIGKILL, locking."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ProcessPoolExecutor

import h5py
import numpy as np
import pytest
from ase import Atoms
from ase.io import read

from alflow.dataset import LabelRecord, LabelStore
from alflow.errors import InputError
from alflow.structures import config_key


def make_record(i: int, status: str = "ok", n: int = 4, **tags) -> LabelRecord:
    rng = np.random.default_rng(i)
    atoms = Atoms(numbers=[47] * n, positions=rng.normal(0, 2, (n, 3)))
    key = config_key(atoms, {"name": "test"})
    if status == "ok":
        return LabelRecord.from_atoms(atoms, key, "ok", energy=float(-i), forces=rng.normal(
            size=(n, 3)), method={"name": "test"}, provenance={"i": i}, tags=tags)
    return LabelRecord.from_atoms(atoms, key, "failed", reason="scf: not converged",
                                  method={"name": "test"}, tags=tags)


def test_round_trip_and_append_only(tmp_path):
    store = LabelStore(tmp_path / "d.h5")
    assert len(store) == 0
    recs = [make_record(i, state="a" if i % 2 else "b", generation=i) for i in range(4)]
    assert store.append_many(recs) == 4
    assert not store.append(recs[0])  # same key again: nothing written
    changed = make_record(0)
    changed.energy = 123.0
    assert not store.append(changed)  # append-only: no overwrite
    assert len(store) == 4
    back = store.get(recs[1].key)
    assert back.energy == recs[1].energy
    np.testing.assert_array_equal(back.forces, recs[1].forces)
    np.testing.assert_array_equal(back.positions, recs[1].positions)
    assert back.tags == {"state": "a", "generation": 1}
    assert back.provenance == {"i": 1}
    assert store.get("nope") is None
    # reopen from disk
    again = LabelStore(tmp_path / "d.h5")
    assert sorted(again.keys()) == sorted(r.key for r in recs)
    atoms = again.read_atoms(state="a")
    assert len(atoms) == 2
    for a in atoms:
        rec = again.get(a.info["key"])
        assert a.get_potential_energy() == rec.energy
        np.testing.assert_array_equal(a.get_forces(), rec.forces)
        assert a.info["state"] == "a" and a.info["status"] == "ok"


def test_failed_records_and_replace(tmp_path):
    store = LabelStore(tmp_path / "d.h5")
    failed = make_record(7, status="failed")
    assert store.append(failed)
    assert store.read_atoms() == []
    assert len(store.read_atoms(status="failed")) == 1
    ok = make_record(7)
    assert not store.append(ok)
    assert store.append(ok, replace_failed=True)
    assert store.get(ok.key).status == "ok"
    assert store.summary()["by_status"] == {"ok": 1}


def test_ok_record_needs_energy_and_forces():
    with pytest.raises(ValueError, match="finite energy"):
        LabelRecord(key="k", numbers=[1], positions=[[0, 0, 0]], status="ok", energy=None)
    with pytest.raises(ValueError, match="status"):
        LabelRecord(key="k", numbers=[1], positions=[[0, 0, 0]], status="done")


def test_export_extxyz(tmp_path):
    store = LabelStore(tmp_path / "d.h5")
    store.append_many([make_record(i, state="s", extra=[1, 2]) for i in range(3)]
                      + [make_record(9, status="failed")])
    n = store.export_extxyz(tmp_path / "out.extxyz")
    assert n == 3
    images = read(tmp_path / "out.extxyz", ":")
    assert len(images) == 3
    for img in images:
        rec = store.get(img.info["key"])
        assert img.get_potential_energy() == pytest.approx(rec.energy, abs=1e-10)
        np.testing.assert_allclose(img.get_forces(), rec.forces, atol=1e-8)
        np.testing.assert_allclose(img.positions, rec.positions, atol=1e-8)
        assert img.info["state"] == "s"


def test_not_a_store(tmp_path):
    p = tmp_path / "other.h5"
    with h5py.File(p, "w") as f:
        f["x"] = 1
    with pytest.raises(InputError, match="not an alflow label store"):
        LabelStore(p)
    (tmp_path / "garbage.h5").write_text("hello")
    with pytest.raises(InputError, match="cannot open label store"):
        LabelStore(tmp_path / "garbage.h5")
    with pytest.raises(InputError, match="not found"):
        LabelStore(tmp_path / "missing.h5", create=False)


WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from ase import Atoms
    from alflow.dataset import LabelRecord, LabelStore
    store = LabelStore(sys.argv[1])
    rng = np.random.default_rng(int(sys.argv[2]))
    i = 0
    while True:
        n = 13
        atoms = Atoms(numbers=[47] * n, positions=rng.normal(0, 3, (n, 3)))
        key = f"{sys.argv[2]}-{i:06d}"
        rec = LabelRecord.from_atoms(atoms, key, "ok", energy=float(i),
                                     forces=rng.normal(size=(n, 3)), tags={"i": i})
        recs = [rec] if i % 3 else [rec] + [LabelRecord.from_atoms(
            atoms, key + f"-b{j}", "failed", reason="x" * 500) for j in range(5)]
        store.append_many(recs)
        for r in recs:
            print(r.key, flush=True)
        i += 1
""")


def test_sigkill_never_corrupts_earlier_records(tmp_path):
    """A writer SIGKILLed at random moments: every record it reported is intact afterwards."""
    path = tmp_path / "crash.h5"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    rng = np.random.default_rng(1)
    confirmed: set[str] = set()
    interrupted_writes = 0
    for round_ in range(6):
        proc = subprocess.Popen([sys.executable, str(script), str(path), str(round_)],
                                stdout=subprocess.PIPE, text=True)
        first = proc.stdout.readline()  # the writer is running (imports done)
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate()
        assert proc.returncode == -signal.SIGKILL
        confirmed.update((first + out).split())
        interrupted_writes += any(path.parent.glob("crash.h5.tmp-*"))
        store = LabelStore(path)  # must open
        keys = set(store.keys())
        assert confirmed <= keys, "a confirmed record was lost"
        for rec in store.records(status=None):  # every record fully readable
            if rec.status == "ok":
                assert rec.energy == rec.tags["i"] and rec.forces.shape == (13, 3)
    assert len(confirmed) >= 6
    # the next writer removes what a killed one left behind
    LabelStore(path).append(make_record(1000))
    assert not list(path.parent.glob("crash.h5.tmp-*"))
    print(f"{interrupted_writes}/6 kills interrupted a write; {len(confirmed)} records")


def _append_range(path: str, start: int) -> int:
    store = LabelStore(path)
    return sum(store.append(make_record(i)) for i in range(start, start + 15))


def test_concurrent_writers_are_serialised(tmp_path):
    path = str(tmp_path / "multi.h5")
    LabelStore(path)
    with ProcessPoolExecutor(3) as pool:  # overlapping ranges: each key added exactly once
        added = list(pool.map(_append_range, [path] * 3, [0, 10, 20]))
    store = LabelStore(path)
    assert sum(added) == len(store) == 35
    assert os.path.exists(path)
