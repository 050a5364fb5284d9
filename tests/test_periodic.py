"""Periodic Lennard-Jones in torch: energy, forces and stress against ASE and finite differences."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.lj import LennardJones

from alflow.periodic import (
    check_cutoff,
    energy_forces_stress,
    lennard_jones_energy,
    minimum_image,
    pair_list,
    wrap,
)

EPS, SIG, RC = 0.0103, 3.405, 7.5


def _argon(seed: int, triclinic: bool = False):
    a = bulk("Ar", "fcc", a=5.26, cubic=not triclinic).repeat((5, 5, 5) if triclinic
                                                             else (3, 3, 3))
    a.rattle(0.1, seed=seed)
    return a


def _t(x):
    return torch.tensor(np.asarray(x), dtype=torch.float64)


def _energy(x, cell):
    return lennard_jones_energy(x, cell, EPS, SIG, RC)


@pytest.mark.parametrize("triclinic", [False, True])
def test_energy_forces_stress_equal_ase(triclinic):
    atoms = _argon(1, triclinic)
    atoms.calc = LennardJones(sigma=SIG, epsilon=EPS, rc=RC, smooth=False)
    x, cell = _t(atoms.positions)[None], _t(atoms.cell[:])[None]
    e, f, s = energy_forces_stress(_energy, x, cell)
    npairs = len(pair_list(x, cell, RC).i)
    shift = 4 * EPS * ((SIG / RC) ** 12 - (SIG / RC) ** 6)   # ASE shifts each pair to 0 at rc
    assert float(e[0]) - npairs * shift == pytest.approx(atoms.get_potential_energy(), abs=1e-9)
    np.testing.assert_allclose(f[0].numpy(), atoms.get_forces(), atol=1e-9)
    np.testing.assert_allclose(s[0].numpy(), atoms.get_stress(voigt=False), atol=1e-10)


def test_stress_is_strain_derivative_of_energy():
    atoms = _argon(2)
    x, cell = _t(atoms.positions)[None], _t(atoms.cell[:])[None]
    _, _, s = energy_forces_stress(_energy, x, cell)
    vol = abs(float(torch.linalg.det(cell[0])))
    h = 1e-5
    for a, b in [(0, 0), (1, 2), (2, 2)]:
        eps = torch.zeros(3, 3, dtype=torch.float64)
        eps[a, b] = eps[b, a] = h / 2 if a != b else h
        d = torch.eye(3, dtype=torch.float64)
        ep = float(_energy(x @ (d + eps), cell @ (d + eps)))
        em = float(_energy(x @ (d - eps), cell @ (d - eps)))
        fd = (ep - em) / (2 * h) / vol
        assert float(s[0, a, b]) == pytest.approx(fd, rel=1e-5, abs=1e-9)


def test_forces_are_minus_finite_difference_gradient_and_parameters_differentiable():
    atoms = _argon(3)
    x, cell = _t(atoms.positions)[None], _t(atoms.cell[:])[None]
    _, f, _ = energy_forces_stress(_energy, x, cell)
    h = 1e-6
    for atom, k in [(0, 0), (17, 2), (50, 1)]:
        xp, xm = x.clone(), x.clone()
        xp[0, atom, k] += h
        xm[0, atom, k] -= h
        fd = -(float(_energy(xp, cell)) - float(_energy(xm, cell))) / (2 * h)
        assert float(f[0, atom, k]) == pytest.approx(fd, rel=1e-5, abs=1e-8)
    sig = torch.tensor(SIG, dtype=torch.float64, requires_grad=True)
    e = lennard_jones_energy(x, cell, EPS, sig, RC)
    (g,) = torch.autograd.grad(e.sum(), sig)
    fd = (float(lennard_jones_energy(x, cell, EPS, SIG + 1e-6, RC))
          - float(lennard_jones_energy(x, cell, EPS, SIG - 1e-6, RC))) / 2e-6
    assert float(g) == pytest.approx(fd, rel=1e-5)


def test_translation_wrapping_and_replicas_leave_energy_unchanged():
    atoms = _argon(4)
    x, cell = _t(atoms.positions)[None], _t(atoms.cell[:])[None]
    shifted = wrap(x + _t([1.3, -7.0, 22.1]), cell)
    batch = torch.cat([x, shifted, x[:, torch.randperm(x.shape[1])]])
    e = _energy(batch, cell.expand(3, 3, 3))
    assert float((e - e[0]).abs().max()) < 1e-10
    dr = minimum_image(_t([[[9.0, 0.0, 0.0]]]), cell)
    assert float(dr.norm()) == pytest.approx(abs(9.0 - cell[0, 0, 0].item()))


def test_cutoff_beyond_half_the_cell_is_refused():
    cell = _t(bulk("Ar", "fcc", a=5.26, cubic=True).cell[:])[None]
    with pytest.raises(ValueError, match="cutoff 3.0 Å exceeds half"):
        check_cutoff(cell, 3.0)
    check_cutoff(cell, 2.6)
