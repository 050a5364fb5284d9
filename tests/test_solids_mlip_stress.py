"""The built-in MLIP's stress on periodic cells against finite differences of its energy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.fd import calculate_numerical_stress
from ase.cluster import Octahedron

from alflow.mlip import MLIPConfig
from alflow.mlip.calculator import CommitteeCalculator
from alflow.mlip.committee import Committee
from alflow.mlip.graph import make_graph
from alflow.mlip.model import build_model
from alflow.mlip.stress import energy_forces_stress

STATS = {"atomic_numbers": [29, 47], "e0": [-1.0, -2.0], "scale": 0.7, "shift": 0.1,
         "avg_num_neighbors": 4.0}
CFG = MLIPConfig(dtype="float64", cutoff=4.5)


def _model(seed):
    torch.manual_seed(seed)
    model = build_model(CFG, STATS, torch.Generator().manual_seed(seed))
    with torch.no_grad():  # larger random weights than the init: a rugged test surface
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model


def _crystal(seed):
    """A triclinic, rattled CuAg cell smaller than the cutoff (many images per pair)."""
    atoms = bulk("Ag", "fcc", a=4.09).repeat((2, 2, 1))
    atoms.numbers[::2] = 29
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + np.array([[0.02, 0.03, 0.0],
                                                              [0.0, -0.01, 0.04],
                                                              [0.01, 0.0, 0.03]])),
                   scale_atoms=True)
    atoms.positions += np.random.default_rng(seed).normal(0, 0.1, atoms.positions.shape)
    return atoms


def _graph(model, atoms):
    sp = model.species_index(atoms.numbers).numpy()
    return make_graph([atoms.positions], [sp], [atoms.cell.array], [atoms.pbc], CFG.cutoff)


@pytest.mark.parametrize("seed", [0, 1])
def test_stress_is_strain_derivative_of_energy(seed):
    model, atoms = _model(seed), _crystal(seed)
    e, f, s = energy_forces_stress(model, _graph(model, atoms))
    assert float(e[0]) == pytest.approx(float(model.total_energy(_graph(model, atoms)).detach()[0]),
                                        abs=1e-10)
    assert float(s.abs().max()) > 1e-3  # a rattled cell under a rugged model has stress
    vol = atoms.get_volume()
    h = 1e-5
    for a, b in [(0, 0), (1, 1), (2, 2), (0, 1), (1, 2), (0, 2)]:
        eps = np.zeros((3, 3))
        eps[a, b] += h / 2
        eps[b, a] += h / 2
        energies = []
        for sign in (1, -1):
            strained = atoms.copy()
            strained.set_cell(atoms.cell.array @ (np.eye(3) + sign * eps), scale_atoms=True)
            energies.append(float(model.total_energy(_graph(model, strained)).detach()[0]))
        fd = (energies[0] - energies[1]) / (2 * h) / vol
        assert abs(fd - float(s[0, a, b])) < 1e-7 * max(1.0, abs(fd)), (a, b)
    np.testing.assert_allclose(s[0].numpy(), s[0].numpy().T, atol=1e-12)


def test_committee_calculator_gives_ase_stress():
    committee = Committee([_model(3), _model(4)], CFG)
    atoms = _crystal(5)
    atoms.calc = CommitteeCalculator(committee)
    stress = atoms.get_stress()  # Voigt, eV/Å³
    assert stress.shape == (6,)
    members = atoms.calc.results["stresses"]
    np.testing.assert_allclose(members.mean(0), stress, atol=1e-14)
    assert np.abs(members[0] - members[1]).max() > 1e-4  # two different members disagree
    np.testing.assert_allclose(stress, calculate_numerical_stress(atoms, eps=1e-5),
                               rtol=1e-6, atol=1e-9)
    f = atoms.get_forces()
    h = 1e-5
    p, m = atoms.copy(), atoms.copy()
    p.positions[2, 1] += h
    m.positions[2, 1] -= h
    p.calc, m.calc = CommitteeCalculator(committee), CommitteeCalculator(committee)
    fd = -(p.get_potential_energy() - m.get_potential_energy()) / (2 * h)
    assert abs(fd - f[2, 1]) < 1e-6


def test_finite_cluster_has_no_stress():
    atoms = Octahedron("Ag", 2)
    atoms.calc = CommitteeCalculator(Committee([_model(6)], CFG))
    with pytest.raises(PropertyNotImplementedError):
        atoms.get_stress()
