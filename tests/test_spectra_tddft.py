"""TDDFT with real PySCF on small molecules: equals direct PySCF, equals dense Casida."""

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule
from pyscf import dft, gto

from alflow.errors import ConfigError
from alflow.observables.tddft import HARTREE_EV, TDDFTConfig, run_tddft, spectrum_key


def _direct_pyscf(atoms, xc, basis, nstates, tda, conv_tol=1e-5, df=True):
    atom = list(zip(atoms.get_chemical_symbols(), atoms.positions.tolist(), strict=True))
    mol = gto.M(atom=atom,
                unit="Angstrom", basis=basis, verbose=0)
    mf = dft.RKS(mol).density_fit() if df else dft.RKS(mol)
    mf.xc = xc
    mf.conv_tol = 1e-9
    mf.kernel()
    td = mf.TDA() if tda else mf.TDDFT()
    td.nstates = nstates
    td.conv_tol = conv_tol
    td.kernel()
    return td.e * HARTREE_EV, td.oscillator_strength(gauge="length"), td


@pytest.mark.parametrize("tda", [False, True])
def test_h2o_excitations_equal_direct_pyscf(tda):
    atoms = molecule("H2O")
    cfg = TDDFTConfig(xc="pbe", basis="6-31g", nstates=6, tda=tda, threads=1)
    res = run_tddft(atoms, cfg)
    assert res.status == "ok", res.reason
    e_ref, f_ref, _ = _direct_pyscf(atoms, "pbe", "6-31g", 6, tda)
    np.testing.assert_allclose(res.excitation_energies_ev, e_ref, atol=1e-6, rtol=0)
    np.testing.assert_allclose(res.oscillator_strengths, f_ref, atol=1e-6, rtol=0)
    assert np.all(np.diff(res.excitation_energies_ev) >= 0)
    assert res.provenance["method"]["tda"] is tda
    assert res.key == spectrum_key(atoms, cfg)


def test_lih_casida_and_tda_equal_dense_diagonalisation():
    """Davidson roots against dense linear algebra of PySCF's A and B matrices:
    full TDDFT omega^2 = eig((A-B)^1/2 (A+B) (A-B)^1/2), TDA omega = eig(A)."""
    atoms = Atoms("LiH", positions=[[0, 0, 0], [0, 0, 1.6]])
    kw = dict(basis="sto-3g", nstates=4, density_fit=False, threads=1)  # get_ab has no DF
    full = run_tddft(atoms, TDDFTConfig(tda=False, **kw))
    tda = run_tddft(atoms, TDDFTConfig(tda=True, **kw))
    assert full.status == tda.status == "ok"
    _, _, td = _direct_pyscf(atoms, "pbe", "sto-3g", 4, False, df=False)
    a, b = td.get_ab()
    nov = a.shape[0] * a.shape[1]
    a = a.reshape(nov, nov)
    b = b.reshape(nov, nov)
    w, v = np.linalg.eigh(a - b)
    amb_half = (v * np.sqrt(w)) @ v.T
    omega = np.sqrt(np.linalg.eigvalsh(amb_half @ (a + b) @ amb_half)) * HARTREE_EV
    np.testing.assert_allclose(full.excitation_energies_ev, omega[:4], atol=1e-6)
    np.testing.assert_allclose(tda.excitation_energies_ev,
                               np.linalg.eigvalsh(a)[:4] * HARTREE_EV, atol=1e-6)
    # TDA lies above full TDDFT for the lowest singlet (B couples de-excitations)
    assert tda.excitation_energies_ev[0] >= full.excitation_energies_ev[0] - 1e-9


def test_excitations_are_rotation_invariant():
    atoms = molecule("H2O")
    cfg = TDDFTConfig(basis="6-31g", nstates=4, threads=1)
    ref = run_tddft(atoms, cfg)
    rot = atoms.copy()
    rot.rotate(37.0, (0.3, 1.0, -0.4), center="COM")
    rot.translate((1.2, -0.7, 2.5))
    res = run_tddft(rot, cfg)
    assert res.key != ref.key
    # DFT integration grids break rotation invariance at the 1e-5 eV level
    np.testing.assert_allclose(res.excitation_energies_ev, ref.excitation_energies_ev, atol=2e-4)
    np.testing.assert_allclose(res.oscillator_strengths, ref.oscillator_strengths, atol=2e-4)


def test_failed_scf_is_reported_not_raised():
    atoms = molecule("H2O")
    res = run_tddft(atoms, TDDFTConfig(basis="6-31g", nstates=2, max_cycle=1, conv_tol=1e-14))
    assert res.status == "failed"
    assert "SCF did not converge" in res.reason
    assert res.excitation_energies_ev == []


def test_method_shorthand_and_bad_input():
    cfg = TDDFTConfig.from_method("pyscf:PBE0/def2-SVP", nstates=3)
    assert (cfg.xc, cfg.basis, cfg.nstates) == ("PBE0", "def2-SVP", 3)
    assert cfg.method_label == "tddft:pbe0/def2-svp"
    with pytest.raises(ConfigError, match="pyscf:XC/BASIS"):
        TDDFTConfig.from_method("ase:emt")
    with pytest.raises(ConfigError, match="exceeds"):
        run_tddft(Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]]),
                  TDDFTConfig(basis="sto-3g", nstates=3))


def test_response_grid_level_equals_pyscf_with_that_kernel_grid():
    """td_grids_level integrates only the response XC kernel on the coarser grid: the SCF
    is the default one, the roots equal PySCF's TDDFT whose kernel uses that grid."""
    atoms = molecule("H2O")
    kw = dict(xc="pbe", basis="6-31g", nstates=4, threads=1)
    base = run_tddft(atoms, TDDFTConfig(**kw))
    coarse = run_tddft(atoms, TDDFTConfig(td_grids_level=0, **kw))
    assert coarse.status == "ok" and coarse.scf_energy_ev == pytest.approx(base.scf_energy_ev,
                                                                         abs=1e-8)
    _, _, td = _direct_pyscf(atoms, "pbe", "6-31g", 4, False)
    mf = td._scf.copy()
    mf.grids = dft.gen_grid.Grids(mf.mol)
    mf.grids.level = 0
    mf.grids.build()
    td0 = mf.TDDFT()
    td0.nstates, td0.conv_tol = 4, 1e-5
    td0.kernel()
    np.testing.assert_allclose(coarse.excitation_energies_ev, td0.e * HARTREE_EV, atol=1e-6)
    assert np.abs(np.subtract(coarse.excitation_energies_ev, base.excitation_energies_ev)
                  ).max() > 1e-7  # a different kernel grid does change the roots
    assert coarse.key != base.key
    assert "td_grids_level" not in TDDFTConfig(**kw).method_info()


def test_scf_guess_from_a_neighbour_gives_the_same_spectrum_in_fewer_cycles():
    """A converged density carried to a displaced geometry starts its SCF; the excitations
    equal a fresh start to 1e-6 eV (with the SCF converged to 1e-11 Ha: at the default 1e-9 both
    scatter by ~2e-5 eV around the converged answer). A guess for other atoms is not used."""
    cfg = TDDFTConfig(xc="pbe", basis="6-31g", nstates=4, threads=1, conv_tol=1e-11)
    first = molecule("H2O")
    moved = first.copy()
    moved.positions += np.random.default_rng(0).normal(0.0, 0.05, moved.positions.shape)
    guess: dict = {}
    run_tddft(first, cfg, scf_guess=guess)
    chained = run_tddft(moved, cfg, scf_guess=guess)
    fresh = run_tddft(moved, cfg)
    assert chained.status == fresh.status == "ok"
    assert chained.provenance["scf_guess"] == "previous density"
    assert fresh.provenance["scf_guess"] == "default"
    np.testing.assert_allclose(chained.excitation_energies_ev, fresh.excitation_energies_ev,
                               atol=1e-6, rtol=0)
    np.testing.assert_allclose(chained.oscillator_strengths, fresh.oscillator_strengths,
                               atol=1e-6, rtol=0)
    assert (chained.provenance["scf_attempts"][0]["cycles"]
            < fresh.provenance["scf_attempts"][0]["cycles"])
    assert chained.key == fresh.key  # the guess is not part of the result's identity
    other = run_tddft(molecule("NH3"), cfg, scf_guess=guess)  # H2O's density: not used
    assert other.status == "ok" and other.provenance["scf_guess"] == "default"
