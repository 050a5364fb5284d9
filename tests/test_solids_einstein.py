"""Einstein-crystal integration: exact on a harmonic crystal, consistent on a tiny LJ crystal."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alflow.solids.crystals import crystal
from alflow.solids.einstein import (
    block_error,
    delta_g,
    frenkel_ladd,
    harmonic_gibbs,
    pressure_fit_volume,
    quadrature_error,
)
from alflow.solids.harmonic import einstein_free_energy, harmonic_free_energy, hessian
from alflow.solids.lattice import lattice_pairs
from alflow.solids.lj import lj_energy, lj_energy_forces
from alflow.solids.models import lj_model

# fcc, 4 atoms at ρ* = 1; r_c = 2.4 σ lies between neighbour shells (2.24 σ, 2.51 σ), so the
# lattice's harmonic limit is smooth
ATOMS = crystal("fcc", 4, 1.0)
PAIRS = lattice_pairs(ATOMS.positions, ATOMS.cell.array, 2.4, skin=0.5)
CELL = torch.tensor(ATOMS.cell.array)
X0 = torch.tensor(ATOMS.positions)


def lj(y):
    return lj_energy(y, CELL, PAIRS)


def lj_forces(y):
    PAIRS.check(y)
    return lj_energy_forces(y, CELL, PAIRS)


H = hessian(lj, ATOMS.positions)
U0 = float(lj(X0[None])[0])


def harmonic(y):
    u = (y - X0).reshape(len(y), -1)
    ht = torch.tensor(H)
    return U0 + 0.5 * torch.einsum("bi,ij,bj->b", u, ht, u), -(u @ ht).reshape(y.shape)


def test_einstein_free_energy_is_the_harmonic_one_with_equal_springs():
    k, n = 37.0, 4
    eig = np.r_[np.zeros(3), np.full(3 * n - 3, 2 * k)]
    assert einstein_free_energy(k, -3.0, 0.2, 5.0, n) == pytest.approx(
        harmonic_free_energy(eig, -3.0, 0.2, 5.0, n), abs=1e-12)
    assert np.abs(np.linalg.eigvalsh(H))[:3].max() < 1e-8  # three translations
    assert np.linalg.eigvalsh(H)[3:].min() > 10  # a stable lattice


@pytest.mark.parametrize("kt", [0.1, 0.5])
def test_harmonic_crystal_free_energy_is_exact(kt):
    exact = harmonic_free_energy(np.linalg.eigvalsh(H), U0, kt, ATOMS.get_volume(), 4) / 4
    r = frenkel_ladd(lambda y: harmonic(y)[0], ATOMS.positions, ATOMS.cell.array, kt,
                     forces=harmonic, n_steps=1500, copies=4, seed=int(kt * 10))
    assert 0 < r.err < 0.01 * kt
    assert abs(r.free_energy_per_atom - exact) < 3 * r.err
    # the springs differ from the crystal's modes, so the integral is not trivially zero
    assert abs(r.integral_per_atom) > 10 * r.err


def test_lj_crystal_agrees_with_its_harmonic_limit_and_with_more_nodes():
    kt = 0.02
    harm = harmonic_free_energy(np.linalg.eigvalsh(H), U0, kt, ATOMS.get_volume(), 4) / 4
    runs = [frenkel_ladd(lj, ATOMS.positions, ATOMS.cell.array, kt, forces=lj_forces,
                         n_lambda=m, n_steps=1500, copies=4, seed=m) for m in (4, 8)]
    a, b = runs
    assert abs(a.free_energy_per_atom - b.free_energy_per_atom) < 3 * np.hypot(a.err, b.err)
    # anharmonicity at T* = 0.02 is far below the error bar
    assert abs(b.free_energy_per_atom - harm) < 3 * b.err + 1e-4
    # the integrand runs from the Einstein crystal (λ = 0) to the LJ crystal (λ = 1)
    assert b.integrand[0] > b.integrand[-1]


def test_lj_free_energy_does_not_depend_on_the_einstein_spring():
    """The reference crystal is a means: halving its springs changes A_E and the integral by
    equal and opposite amounts (this checks the centre-of-mass terms of A_E too)."""
    kt = 0.1
    res = [frenkel_ladd(lj, ATOMS.positions, ATOMS.cell.array, kt, forces=lj_forces,
                        spring=k, n_steps=1000, copies=2, seed=3) for k in (None, 50.0)]
    assert abs(res[0].einstein_per_atom - res[1].einstein_per_atom) > 20 * res[0].err
    assert abs(res[0].free_energy_per_atom - res[1].free_energy_per_atom) < 3 * np.hypot(
        res[0].err, res[1].err)


def test_block_error_of_white_noise_is_its_standard_error():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 2.0, (4000, 4))
    assert block_error(x) == pytest.approx(2.0 / np.sqrt(x.size), rel=0.35)
    with pytest.raises(ValueError, match="blocks"):
        block_error(np.ones(5))


def test_quadrature_error_is_small_for_smooth_and_large_for_steep_integrands():
    x, w = np.polynomial.legendre.leggauss(8)
    lam, w = 0.5 * (x + 1), 0.5 * w
    for f, exact in ((lambda t: np.exp(-3 * t), (1 - np.exp(-3)) / 3),
                     (lambda t: 1 / (t + 0.1), np.log(11.0))):
        true = abs((w * f(lam)).sum() - exact)
        est = quadrature_error(lam, w, f(lam))
        if exact < 1:  # smooth: both tiny
            assert true < 1e-9 and est < 1e-3 * exact
        else:  # a steep end: the estimate does not understate the error
            assert true > 1e-4 and est > true


def test_pressure_fit_volume_and_its_error_match_repeated_fits():
    rng = np.random.default_rng(4)
    v = np.array([0.90, 0.91, 0.915])
    p_true, err = 2.0 - 80.0 * (v - 0.91), np.array([0.015, 0.012, 0.016])
    fits = np.array([pressure_fit_volume(v, p_true + rng.normal(0, err), err, 1.5)
                     for _ in range(2000)])
    assert fits[:, 0].mean() == pytest.approx(0.91 + 0.5 / 80, abs=1e-4)
    assert fits[:, 1].mean() == pytest.approx(fits[:, 0].std(), rel=0.1)
    assert fits[:, 2].mean() == pytest.approx(-80.0, rel=0.05)


def test_gibbs_difference_of_tiny_lj_crystals_matches_their_harmonic_limit():
    """The whole G(T, P) path (static density, NVT pressure fit, integration) on 4-atom fcc
    and hcp cells at T* = 0.02, P* = 0.5, r_c = 2.3 σ (between neighbour shells)."""
    r = delta_g(n_atoms=4, kt=0.02, pressure=0.5, cutoff=2.3, quick=True, seed=1)
    assert r.units == "epsilon" and 0 < r.err < 2e-3
    for phase in (r.fcc, r.hcp):
        v = [p[0] for p in phase.pressure_fit]
        assert min(v) - 0.01 < phase.volume_per_atom < max(v) + 0.01
    model = lj_model(2.3)
    harm = [harmonic_gibbs(model, p.structure, 4, p.volume_per_atom, 0.02, 0.5)
            for p in (r.fcc, r.hcp)]
    assert abs(r.delta_g_per_atom - (harm[1] - harm[0])) < 3 * r.err + 2e-4
    assert abs(r.fcc.g_per_atom - harm[0]) < 3 * r.fcc.err + 2e-4
