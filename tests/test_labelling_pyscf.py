"""PySCF labels: forces vs finite differences, equality with direct PySCF, the SCF ladder,
failures that do not stop a batch, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms, units

from alflow.dataset import LabelStore
from alflow.errors import ConfigError
from alflow.labelling import label_many, make_labeller

# Ag-H along a skew axis: every Cartesian force component is non-zero; exercises the def2 ECP
AGH = Atoms("AgH", positions=[[0.0, 0.0, 0.0], [0.95, 0.65, 1.3]])  # 1.74 Å, stretched
TIGHT = {"conv_tol": 1e-12}


def h4(a: float = 1.5, b: float = 1.5, shift: float = 0.0) -> Atoms:
    """H4 rectangle a x b Å: the square has a degenerate HOMO that plain DIIS cannot converge."""
    return Atoms("H4", positions=[[0, 0, 0], [a, 0, 0], [a, b, 0], [shift, b, 0]])


def h2(d: float = 0.74) -> Atoms:
    return Atoms("H2", positions=[[0, 0, 0], [0.1, 0.2, d]])


@pytest.fixture(scope="module")
def agh_label():
    lab = make_labeller("pyscf:pbe/def2-svp", **TIGHT)
    return lab, lab.label(AGH)


def fd_force(lab, atoms: Atoms, i: int, c: int, h: float = 2e-3) -> float:
    e = []
    for s in (1, -1):
        a = atoms.copy()
        a.positions[i, c] += s * h
        res = lab.label(a)
        assert res.status == "ok"
        e.append(res.energy)
    return -(e[0] - e[1]) / (2 * h)


def test_forces_match_finite_differences(agh_label):
    lab, res = agh_label
    assert res.status == "ok" and res.provenance["ecp_elements"] == ["Ag"]
    assert res.provenance["scf_strategy"] == "diis"
    np.testing.assert_allclose(res.forces.sum(axis=0), 0.0, atol=1e-6)  # translation invariance
    assert abs(res.forces[1, 0]) > 0.05
    assert res.forces[1, 0] == pytest.approx(fd_force(lab, AGH, 1, 0), abs=1e-4)


def test_label_equals_direct_pyscf(agh_label):
    from pyscf import dft, gto

    _, res = agh_label
    mol = gto.M(atom="Ag 0 0 0; H 0.95 0.65 1.3", unit="Angstrom", basis="def2-svp",
                ecp={"Ag": "def2-svp"}, verbose=0)
    mf = dft.RKS(mol)
    mf.xc = "pbe"
    mf = mf.density_fit()  # after xc: PySCF picks the J-fitting basis for a pure functional
    mf.conv_tol = 1e-12
    e = mf.kernel() * units.Hartree
    g = mf.nuc_grad_method()
    g.grid_response = True
    f = -g.kernel() * units.Hartree / units.Bohr
    assert res.energy == pytest.approx(e, abs=1e-6)
    np.testing.assert_allclose(res.forces, f, atol=1e-6)
    assert res.provenance["auxbasis"] == mf.with_df.auxbasis == "def2-universal-jfit"
    assert res.provenance["n_basis"] == mol.nao and res.provenance["scf_iterations"] > 0


def test_ladder_smearing_rescues_degenerate_square():
    lab = make_labeller("pyscf:pbe/sto-3g", max_cycle=30, grids_level=1, density_fit=False)
    res = lab.label(h4())
    steps = [(a["strategy"], a["converged"]) for a in res.provenance["scf_attempts"]]
    assert steps == [("diis", False), ("level_shift", False), ("smearing", True)]
    # every rung starts from the guess, not from the failed rung's oscillating density
    assert res.provenance["scf_attempts"][2]["cycles"] <= 5
    assert res.status == "ok" and res.provenance["scf_strategy"] == "smearing"
    # the label is the free energy E - sigma*S, below the internal energy
    assert res.energy < res.provenance["e_internal_ev"] - 1e-3


def test_smeared_forces_are_free_energy_gradient():
    lab = make_labeller("pyscf:pbe/sto-3g", scf_ladder=["smearing"], smearing_sigma=0.02,
                        grids_level=1, **TIGHT)
    atoms = h4(1.5, 1.6, 0.05)
    res = lab.label(atoms)
    assert res.status == "ok"
    assert res.provenance["e_internal_ev"] - res.energy > 0.05  # entropy term matters here
    assert res.forces[3, 0] == pytest.approx(fd_force(lab, atoms, 3, 0), abs=1e-4)


def test_unconverged_is_failed_and_neighbours_succeed(tmp_path):
    store = LabelStore(tmp_path / "d.h5")
    lab = make_labeller("pyscf:pbe/sto-3g", scf_ladder=["diis", "level_shift"], max_cycle=30,
                        grids_level=1, density_fit=False)
    batch = [h2(), h4(), h2(0.8)]
    recs = label_many(batch, lab, store)
    assert [r.status for r in recs] == ["ok", "failed", "ok"]
    assert recs[1].reason == ("scf: not converged after diis (30 cycles), "
                              "level_shift (30 cycles)")
    assert recs[1].provenance["scf_iterations"] == 60
    stored = store.get(recs[1].key)
    assert stored.status == "failed" and stored.energy is None
    # relabelling computes nothing (the failed label is a result too)
    again = label_many(batch, lab, store)
    assert [r.provenance["wall_time_s"] for r in again] == \
        [r.provenance["wall_time_s"] for r in recs]
    assert len(store) == 3


def test_unknown_element_for_basis_is_clear(tmp_path):
    store = LabelStore(tmp_path / "d.h5")
    batch = [h2(), Atoms("Ag2", positions=[[0, 0, 0], [0, 0, 2.6]])]
    with pytest.raises(ConfigError, match=r"'6-31g' has no functions for element\(s\) Ag"):
        label_many(batch, "pyscf:pbe/6-31g", store)
    assert len(store) == 0  # checked before any DFT


def test_spin_and_charge():
    oh = Atoms("OH", positions=[[0, 0, 0], [0, 0, 0.97]])
    with pytest.raises(ConfigError, match="spin: 2S=0 is impossible with 9 electrons"):
        make_labeller("pyscf:pbe/sto-3g", spin=0).check(oh)
    res = make_labeller("pyscf:pbe/sto-3g", grids_level=1).label(oh)  # spin unset: doublet
    assert res.status == "ok" and res.provenance["spin"] == 1
    cation = make_labeller("pyscf:pbe/sto-3g", grids_level=1, charge=1).label(oh)
    assert cation.provenance["spin"] == 0 and cation.provenance["n_electrons"] == 8
    assert cation.energy > res.energy + 5  # ionisation costs several eV


def test_periodic_structure_rejected():
    atoms = h2()
    atoms.cell = [5, 5, 5]
    atoms.pbc = True
    with pytest.raises(ConfigError, match="must not be periodic"):
        make_labeller("pyscf:pbe/sto-3g").check(atoms)
