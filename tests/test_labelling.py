"""Labellers and label_many with the ASE backend: labels, skipping, failures, bad input."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.emt import EMT
from ase.calculators.lj import LennardJones

from alflow.dataset import LabelStore
from alflow.errors import ConfigError
from alflow.labelling import LabellerConfig, label_many, make_labeller, parse_method

LJ = "ase:lj(sigma=3.405, epsilon=0.0103, rc=34.05)"


def ag_batch(n: int, seed: int = 0) -> list[Atoms]:
    rng = np.random.default_rng(seed)
    base = np.array([[0, 0, 0], [2.8, 0, 0], [1.4, 2.4, 0], [1.4, 0.8, 2.3], [4.2, 2.4, 0],
                     [-1.4, 2.4, 0.0]])
    return [Atoms("Ag6", positions=base + rng.normal(0, 0.05, base.shape)) for _ in range(n)]


class CountingEMT(EMT):
    calls = 0

    def calculate(self, *args, **kwargs):
        type(self).calls += 1
        super().calculate(*args, **kwargs)


def test_ase_labels_equal_direct_calculator():
    lab = make_labeller(LJ)
    atoms = ag_batch(1)[0]
    atoms.set_chemical_symbols(["Ar"] * 6)
    res = lab.label(atoms)
    ref = atoms.copy()
    ref.calc = LennardJones(sigma=3.405, epsilon=0.0103, rc=34.05)
    assert res.status == "ok"
    assert res.energy == pytest.approx(ref.get_potential_energy(), abs=1e-12)
    np.testing.assert_allclose(res.forces, ref.get_forces(), atol=1e-12)
    assert res.provenance["wall_time_s"] >= 0 and "ase" in res.provenance["versions"]


def test_label_many_skips_stored_and_duplicates(tmp_path, monkeypatch):
    monkeypatch.setattr("ase.calculators.emt.EMT", CountingEMT)
    CountingEMT.calls = 0
    store = LabelStore(tmp_path / "d.h5")
    batch = ag_batch(4)
    batch.append(batch[1].copy())  # a duplicate is labelled once
    lab = make_labeller("ase:emt")
    recs = label_many(batch, lab, store, tags={"state": "x", "generation": 0})
    assert CountingEMT.calls == 4 and len(store) == 4
    assert recs[4].key == recs[1].key and recs[4].energy == recs[1].energy
    seen = []
    again = label_many(batch, make_labeller("ase:emt"), store,
                       on_result=lambda i, r, cached: seen.append(cached))
    assert CountingEMT.calls == 4, "relabelling must not compute"
    assert all(seen) and [r.energy for r in again] == [r.energy for r in recs]
    # a different method is a different key
    label_many(batch[:1], make_labeller(LJ), store)
    assert len(store) == 5


def test_failure_is_stored_and_neighbours_succeed(tmp_path):
    batch = ag_batch(3)
    batch[1].positions[2] = batch[1].positions[0] + [0.3, 0, 0]  # too close
    store = LabelStore(tmp_path / "d.h5")
    recs = label_many(batch, "ase:emt", store)
    assert [r.status for r in recs] == ["ok", "failed", "ok"]
    assert recs[1].reason.startswith("rejected: atoms closer than")
    assert store.get(recs[1].key).status == "failed"


def test_covalent_radius_rejection():
    atoms = ag_batch(1)[0]
    atoms.positions[1] = atoms.positions[0] + [1.2, 0, 0]  # Ag-Ag 1.2 Å < 0.5 * 2.9 Å
    res = make_labeller("ase:emt").label(atoms)
    assert res.status == "failed" and "covalent radii" in res.reason


def test_calculator_exception_becomes_failed_label(tmp_path):
    batch = ag_batch(3)
    batch[2].positions[0] = np.nan
    recs = label_many(batch, "ase:emt", LabelStore(tmp_path / "d.h5"))
    assert [r.status for r in recs] == ["ok", "ok", "failed"]
    assert "non-finite" in recs[2].reason


def test_submit_through_executor_and_lost_task(tmp_path):
    store = LabelStore(tmp_path / "d.h5")
    batch = ag_batch(6, seed=3)
    pool = ThreadPoolExecutor(2)
    calls = []

    def submit(fn, *args):
        calls.append(1)
        if len(calls) == 3:  # this task's worker "dies"
            def boom():
                raise RuntimeError("worker lost")
            return pool.submit(boom)
        return pool.submit(fn, *args)

    recs = label_many(batch, "ase:emt", store, submit=submit)
    assert [r.status for r in recs].count("failed") == 1
    lost = next(r for r in recs if r.status == "failed")
    assert "worker lost" in lost.reason and not store.has(lost.key)  # retried next time
    assert len(store) == 5
    recs2 = label_many(batch, "ase:emt", store, submit=pool.submit)
    assert all(r.status == "ok" for r in recs2) and len(store) == 6
    pool.shutdown()


def test_retry_failed(tmp_path):
    store = LabelStore(tmp_path / "d.h5")
    atoms = ag_batch(1)[0]
    atoms.positions[1] = atoms.positions[0] + [0.4, 0, 0]
    strict = LabellerConfig(backend="ase", calculator="emt")
    assert label_many([atoms], strict, store)[0].status == "failed"
    assert label_many([atoms], strict, store, retry_failed=True)[0].status == "failed"
    assert len(store) == 1


def test_method_shorthands():
    c = parse_method("pyscf:PBE/def2-SVP")
    assert (c.backend, c.functional, c.basis) == ("pyscf", "PBE", "def2-SVP")
    assert c.name == "pyscf:pbe/def2-svp"
    assert parse_method("pyscf").basis == "def2-svp"
    c = parse_method("ase:lj(sigma=3.405, epsilon=0.0103, rc=34.05)", threads=2)
    assert c.ase_kwargs == {"sigma": 3.405, "epsilon": 0.0103, "rc": 34.05} and c.threads == 2
    assert make_labeller("ase:emt").method_info["name"] == "ase:emt"
    k1 = make_labeller(LJ).key(ag_batch(1)[0])
    k2 = make_labeller("ase:lj(sigma=3.4, epsilon=0.0103, rc=34.05)").key(ag_batch(1)[0])
    assert k1 != k2


@pytest.mark.parametrize("method, match", [
    ("gaussian:b3lyp", "unknown labelling method"),
    ("pyscf:pbe", "pyscf:XC/BASIS"),
    ("ase:nosuchcalc", "unknown ASE calculator"),
    ("ase:lj(sigma=)", "must be a number"),
    ("ase:lj(bogus=1)", "does not accept"),
    ("ase:os.path.join", "cannot import|not an ASE Calculator"),
])
def test_bad_methods(method, match):
    with pytest.raises(ConfigError, match=match):
        make_labeller(method)


def test_wrong_config_field_is_named():
    with pytest.raises(ConfigError, match="basiss: unknown field"):
        make_labeller({"backend": "pyscf", "basiss": "def2-svp"})
    with pytest.raises(ConfigError, match="max_cycle"):
        make_labeller({"max_cycle": 0})
    with pytest.raises(ConfigError, match="scf_ladder"):
        make_labeller({"scf_ladder": ["diis", "magic"]})


def test_emt_unknown_element_is_clear(tmp_path):
    atoms = Atoms("Ag2Xe", positions=[[0, 0, 0], [2.8, 0, 0], [0, 3, 0]])
    with pytest.raises(ConfigError, match="EMT has no parameters for Xe"):
        label_many([atoms], "ase:emt", LabelStore(tmp_path / "d.h5"))


def test_label_many_without_a_store():
    batch = ag_batch(2)
    recs = label_many(batch + [batch[0].copy()], make_labeller("ase:emt"))
    assert [r.status for r in recs] == ["ok"] * 3 and recs[2].energy == recs[0].energy
