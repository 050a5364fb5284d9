"""GFN-xTB labels through tblite: equal to tblite's own calculator, forces = -dE/dx, the retry
ladder (a rung-1 fault recovered, a fault no rung recovers), keys and bad options."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import yaml
from ase import Atoms
from ase.io import read
from tblite.ase import TBLite

from alflow.campaign.config import load_campaign
from alflow.dataset import LabelStore
from alflow.errors import ConfigError
from alflow.examples import DATA, write_example
from alflow.labelling import label_many, make_labeller
from alflow.labelling.validate import validate_method


@pytest.fixture(scope="module")
def ag6() -> list[Atoms]:
    return read(DATA / "ag6.extxyz", ":")  # PBE D3h triangle and C5v pyramid


def shaken(atoms: Atoms, seed: int = 0, sigma: float = 0.05) -> Atoms:
    out = atoms.copy()
    out.positions += np.random.default_rng(seed).normal(0, sigma, out.positions.shape)
    return out


@pytest.mark.parametrize("method, tblite_name", [("xtb:gfn1", "GFN1-xTB"),
                                                 ("xtb:gfn2", "GFN2-xTB")])
def test_labels_equal_tblite_ase_calculator(ag6, method, tblite_name):
    lab = make_labeller(method)
    for atoms in [*ag6, shaken(ag6[1])]:
        res = lab.label(atoms)
        ref = atoms.copy()
        ref.calc = TBLite(method=tblite_name, verbosity=0)
        assert res.status == "ok", res.reason
        assert res.energy == pytest.approx(ref.get_potential_energy(), abs=1e-8)
        np.testing.assert_allclose(res.forces, ref.get_forces(), atol=1e-7)
        assert res.provenance["scf_strategy"] == "scf"
        assert "tblite" in res.provenance["versions"]
    # the two GFN parametrisations are different methods
    assert make_labeller("xtb:gfn2").label(ag6[0]).energy != lab.label(ag6[0]).energy \
        or method == "xtb:gfn2"


def test_forces_are_minus_the_energy_gradient(ag6):
    lab = make_labeller("xtb:gfn1")
    atoms = shaken(ag6[1], seed=3, sigma=0.08)
    forces = lab.label(atoms).forces
    assert np.abs(forces).max() > 0.05  # away from the minimum: a real test of the gradient
    h = 1e-4  # Å
    for i, k in [(0, 0), (2, 1), (5, 2), (3, 0)]:
        e = []
        for s in (h, -h):
            moved = atoms.copy()
            moved.positions[i, k] += s
            e.append(lab.label(moved).energy)
        assert -(e[0] - e[1]) / (2 * h) == pytest.approx(forces[i, k], abs=2e-4)


def test_ladder_recovers_a_rung_one_fault(ag6):
    """max_iterations=3 cannot converge Ag6 (it needs about 10 cycles): the first rung fails
    deterministically and the 'iterations' rung (4 x 3 cycles) converges to the same label."""
    ref = make_labeller("xtb:gfn1").label(ag6[0])
    res = make_labeller("xtb:gfn1(max_iterations=3)").label(ag6[0])
    assert res.status == "ok"
    attempts = res.provenance["scf_attempts"]
    assert [(a["strategy"], a["converged"]) for a in attempts] == [("scf", False),
                                                                   ("iterations", True)]
    assert "not converged" in attempts[0]["error"]
    assert res.provenance["scf_strategy"] == "iterations"
    assert res.energy == pytest.approx(ref.energy, abs=1e-7)
    np.testing.assert_allclose(res.forces, ref.forces, atol=1e-6)


def test_ladder_hot_rung_gives_that_temperatures_free_energy(ag6):
    """Only the temperature rung left (a ladder of one rung whose fault is the iterations):
    its label is the energy at retry_temperature, as a direct call at that temperature."""
    lab = make_labeller({"backend": "xtb", "xtb_ladder": ["temperature"],
                         "retry_temperature": 2000.0})
    res = lab.label(ag6[0])
    ref = ag6[0].copy()
    ref.calc = TBLite(method="GFN1-xTB", electronic_temperature=2000.0, verbosity=0)
    assert res.status == "ok" and res.provenance["electronic_temperature_k"] == 2000.0
    assert res.energy == pytest.approx(ref.get_potential_energy(), abs=1e-8)
    assert lab.key(ag6[0]) != make_labeller("xtb:gfn1").key(ag6[0])


def test_every_rung_failing_is_a_stored_failure(ag6, tmp_path):
    store = LabelStore(tmp_path / "d.h5")
    recs = label_many(ag6, "xtb:gfn1(max_iterations=1)", store)
    assert [r.status for r in recs] == ["failed", "failed"]
    reason = recs[0].reason
    assert reason.startswith("scf: not converged after scf")
    for rung in ("iterations", "guess", "temperature"):
        assert rung in reason
    assert len(store) == 2 and not store.read_atoms(status="ok")


def test_options_in_the_key_and_threads_not(ag6):
    atoms = ag6[0]
    base = make_labeller("xtb:gfn1").key(atoms)
    assert make_labeller("xtb:gfn1", threads=1).key(atoms) == base
    assert make_labeller("xtb:gfn1(max_iterations=50)").key(atoms) == base
    others = {make_labeller(m).key(atoms) for m in (
        "xtb:gfn2", "xtb:gfn1(electronic_temperature=500)", "xtb:gfn1(accuracy=0.1)",
        "xtb:gfn1(charge=2)", "xtb:gfn1(multiplicity=3)")}
    assert base not in others and len(others) == 5
    lab = make_labeller("xtb:gfn1(charge=1, multiplicity=2, electronic_temperature=500)")
    assert lab.method_info["multiplicity"] == 2 and lab.config.spin == 1
    res = lab.label(atoms)
    ref = atoms.copy()
    ref.calc = TBLite(method="GFN1-xTB", charge=1, multiplicity=2, electronic_temperature=500,
                      verbosity=0)
    assert res.energy == pytest.approx(ref.get_potential_energy(), abs=1e-8)


@pytest.mark.parametrize("method, match", [
    ("xtb:gfn3", "xtb_method"),
    ("xtb:gfn1(electronic_temperature=-5)", "electronic_temperature"),
    ("xtb:gfn1(accuracy=0)", "accuracy"),
    ("xtb:gfn1(max_iterations=0)", "max_cycle"),
    ("xtb:gfn1(multiplicity=0)", "multiplicity"),
    ("xtb:gfn1(threads=0)", "threads"),
    ("xtb:gfn1(temperature=300)", "temperature: unknown xTB option"),
    ("xtb:gfn1(charge=1", "unbalanced"),
])
def test_bad_options_name_the_field(method, match):
    with pytest.raises(ConfigError, match=match):
        make_labeller(method)


def test_impossible_multiplicity_and_elements_fail_before_any_work(ag6, tmp_path):
    store = LabelStore(tmp_path / "d.h5")
    with pytest.raises(ConfigError, match="multiplicity 2 is impossible with 282 electrons"):
        label_many(ag6, "xtb:gfn1(multiplicity=2)", store)
    with pytest.raises(ConfigError, match="no parameters for Ra"):
        label_many([Atoms("Ra2", positions=[[0, 0, 0], [0, 0, 3.5]])], "xtb:gfn1", store)
    assert len(store) == 0


def test_validate_method_and_campaign_oracle_check_xtb_before_any_work(ag6, tmp_path):
    lab = validate_method("xtb:gfn1", ag6, threads=1)
    assert lab.method_info["method"] == "GFN1-xTB" and lab.config.threads == 1
    with pytest.raises(ConfigError, match="spin: multiplicity 1 is impossible"):
        validate_method("xtb:gfn2(multiplicity=1, charge=1)", ag6)
    path = write_example("ag6-xtb", tmp_path)
    data = yaml.safe_load(path.read_text())
    data["oracle"]["options"] = {"electronic_temperature": 0}
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError,
                       match=r"(?s)oracle: .*electronic_temperature: Input should be greater"):
        load_campaign(path)


def test_cli_labels_with_xtb_and_rejects_bad_options(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cli = [sys.executable, "-c", "from alflow.cli import main; main()", "label", "ag6", "-s",
           str(tmp_path / "d.h5")]
    p = subprocess.run([*cli, "-m", "xtb:gfn1"], capture_output=True, text=True, env=env,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    recs = LabelStore(tmp_path / "d.h5").read_atoms(status="ok")
    assert len(recs) == 2
    p = subprocess.run([*cli, "-m", "xtb:gfn1(electronic_temperature=-1)"], capture_output=True,
                       text=True, env=env, timeout=120)
    assert p.returncode == 2 and "electronic_temperature" in p.stderr
    assert "Traceback" not in p.stderr
