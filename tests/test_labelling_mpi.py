"""The MPI batch driver under a real ``mpiexec -n 2``: every label stored exactly once."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from ase import Atoms
from ase.io import write

from alflow.dataset import LabelStore
from alflow.labelling import make_labeller
from alflow.structures import read_structures

pytestmark = [pytest.mark.mpi,
              pytest.mark.skipif(shutil.which("mpiexec") is None, reason="needs mpiexec")]


def mpirun(n: int, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMP_NUM_THREADS="1", OMPI_MCA_rmaps_base_oversubscribe="1")
    cmd = ["mpiexec", "-n", str(n), "--oversubscribe", sys.executable, "-m",
           "alflow.labelling.batch", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def summary(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def ag_batch(n: int) -> list[Atoms]:
    rng = np.random.default_rng(5)
    base = np.array([[0, 0, 0], [2.8, 0, 0], [1.4, 2.4, 0], [1.4, 0.8, 2.3], [4.2, 2.4, 0],
                     [-1.4, 2.4, 0.0]])
    return [Atoms("Ag6", positions=base + rng.normal(0, 0.05, base.shape)) for _ in range(n)]


def test_mpi_batch_stores_each_label_once(tmp_path):
    images = ag_batch(24)
    images += [images[3].copy(), images[7].copy()]  # duplicates: labelled once
    bad = images[0].copy()
    bad.positions[1] = bad.positions[0] + [0.2, 0, 0]
    images.append(bad)  # rejected: a failed label, the others go on
    for i, a in enumerate(images):
        a.info["state"] = "planar" if i % 2 else "pyramid"
    write(tmp_path / "in.extxyz", images)
    images = read_structures(tmp_path / "in.extxyz")  # keys of the positions as written
    store_path = tmp_path / "d.h5"
    s = summary(mpirun(2, str(tmp_path / "in.extxyz"), "--store", str(store_path),
                       "--method", "ase:emt", "--tag", "generation=3"))
    assert s["ok"] == 26 and s["failed"] == 1 and s["computed"] == 25 and s["ranks"] == 2
    assert sum(s["tasks_per_rank"]) == 25
    store = LabelStore(store_path)
    keys = store.keys()
    lab = make_labeller("ase:emt")
    assert sorted(keys) == sorted({lab.key(a) for a in images})  # each exactly once
    for rec in store.records(status="ok"):
        ref = next(a for a in images if lab.key(a) == rec.key)
        direct = lab.label(ref)
        assert rec.energy == pytest.approx(direct.energy, abs=1e-12)
        assert rec.tags == {"state": ref.info["state"], "generation": 3}
        np.testing.assert_array_equal(rec.positions, ref.positions)
        assert rec.provenance["mpi_rank"] in (0, 1)
    assert store.get(lab.key(bad)).reason.startswith("rejected")
    # a rerun computes nothing
    s2 = summary(mpirun(2, str(tmp_path / "in.extxyz"), "--store", str(store_path),
                        "--method", "ase:emt"))
    assert s2["computed"] == 0 and s2["reused"] == 27 and len(LabelStore(store_path)) == 25


def test_mpi_bad_input_stops_every_rank(tmp_path):
    write(tmp_path / "ag.extxyz", ag_batch(2))
    proc = mpirun(2, str(tmp_path / "ag.extxyz"), "--store", str(tmp_path / "x.h5"),
                  "--method", "pyscf:pbe/6-31g", timeout=120)
    assert proc.returncode != 0
    assert "has no functions for element(s) Ag" in proc.stderr
    assert len(LabelStore(tmp_path / "x.h5")) == 0


def test_mpi_job_killed_midway_then_rerun_computes_only_the_rest(tmp_path):
    """Two ranks; the oracle's fourth and fifth calculations never finish (one per rank), so
    exactly three labels have finished when the job is killed (SIGTERM to mpiexec, as a
    scheduler at the time limit): all three are stored without waiting for the stalled ones,
    and the rerun reuses them and computes the other nine, each once, on both ranks."""
    from collections import Counter

    from fake_oracle import read_log
    from test_labelling_faults import METHOD, lj7_batch, oracle_env, stored, wait_for

    structures = lj7_batch(tmp_path / "w.extxyz", 12)
    store_path = tmp_path / "w.h5"
    args = [str(structures), "--store", str(store_path), "--method", METHOD]
    env = dict(oracle_env(tmp_path, stall_after="3"), OMPI_ALLOW_RUN_AS_ROOT="1",
               OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    proc = subprocess.Popen(["mpiexec", "-n", "2", "--oversubscribe", sys.executable, "-m",
                             "alflow.labelling.batch", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: all((tmp_path / f"stalled-{n}").exists() for n in (3, 4))
                 or proc.poll() is not None, "both ranks in a stalled calculation")
        assert proc.poll() is None
        wait_for(lambda: stored(store_path) == 3, "the three finished labels in the store")
        proc.terminate()
        proc.wait(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert stored(store_path) == 3
    # rerun: the log holds 5 starts; calculations 5 and 6 (the rerun's first two) each wait
    # until both have started, so both ranks compute
    env = dict(oracle_env(tmp_path, barrier="7"), OMPI_ALLOW_RUN_AS_ROOT="1",
               OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_rmaps_base_oversubscribe="1")
    rerun = subprocess.run(["mpiexec", "-n", "2", "--oversubscribe", sys.executable, "-m",
                            "alflow.labelling.batch", *args], capture_output=True, text=True,
                           timeout=240, env=env)
    s = summary(rerun)
    assert s["reused"] == 3 and s["computed"] == 9 and s["ok"] == 12
    assert min(s["tasks_per_rank"]) >= 1, s  # dynamic distribution fed both ranks
    done = Counter(h for e, h, _ in read_log(tmp_path) if e == "done")
    assert len(done) == 12 and set(done.values()) == {1}  # no label computed twice
    assert stored(store_path) == 12


def test_mpi_pyscf_labels_one_thread_per_rank(tmp_path):
    rng = np.random.default_rng(1)
    images = [Atoms("H2O", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]]
                    + rng.normal(0, 0.03, (3, 3))) for _ in range(3)]
    write(tmp_path / "w.extxyz", images)
    store_path = tmp_path / "w.h5"
    s = summary(mpirun(2, str(tmp_path / "w.extxyz"), "--store", str(store_path), "--method",
                       "pyscf:pbe/sto-3g", "--threads", "1"))
    assert s["computed"] == 3 and s["ok"] == 3
    store = LabelStore(store_path)
    lab = make_labeller("pyscf:pbe/sto-3g")
    images = read_structures(tmp_path / "w.extxyz")
    for atoms in images:
        rec = store.get(lab.key(atoms))
        assert rec.provenance["threads"] == 1
        assert rec.energy == pytest.approx(lab.label(atoms).energy, abs=1e-6)
