"""fcc, hcp and liquid told apart by averaged Steinhardt parameters on thermal LJ samples."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alflow.periodic import lennard_jones_energy
from alflow.solids.crystals import crystal
from alflow.solids.lj import LatticeLJ
from alflow.solids.md import autograd_forces, langevin_fixed_com
from alflow.solids.structure import atom_structures, classify, structure_fractions


def _thermal_crystal(structure, kt=0.5, density=1.0, steps=150, seed=0):
    """An LJ crystal after Langevin dynamics at T* = kt (near melting at ρ* = 1)."""
    atoms = crystal(structure, 108 if structure == "fcc" else 96, density)
    lj = LatticeLJ(atoms.positions, atoms.cell.array, cutoff=2.5, skin=1.0)
    run = langevin_fixed_com(lj.energy_forces, torch.tensor(atoms.positions)[None], kt, 0.005,
                             steps, generator=torch.Generator().manual_seed(seed))
    atoms.positions = run.positions[0].numpy()
    return atoms


@pytest.mark.parametrize("structure", ["fcc", "hcp"])
def test_thermal_crystals_are_recognised(structure):
    atoms = _thermal_crystal(structure)
    assert classify(atoms) == structure
    assert structure_fractions(atoms)[structure] > 0.9
    atoms.rattle(0.02, seed=1)  # the labels are not tied to exact lattice positions
    moved = atoms.copy()
    moved.positions += [0.3, -1.1, 2.0]  # nor to the origin, nor to the cell's orientation
    moved.rotate(35, "z", rotate_cell=True)
    assert (atom_structures(moved) == atom_structures(atoms)).all()


def test_liquid_is_recognised():
    atoms = crystal("fcc", 108, 0.85)
    cell = torch.tensor(atoms.cell.array)[None]
    forces = autograd_forces(lambda y: lennard_jones_energy(y, cell, 1.0, 1.0, 2.5))
    run = langevin_fixed_com(forces, torch.tensor(atoms.positions)[None], 2.5, 0.004, 400,
                             generator=torch.Generator().manual_seed(2))
    atoms.positions = run.positions[0].numpy()
    assert classify(atoms) == "liquid"
    assert structure_fractions(atoms)["liquid"] > 0.9


def test_half_fcc_half_hcp_is_mixed_and_finite_cell_refused():
    fcc, hcp = _thermal_crystal("fcc", kt=0.1), _thermal_crystal("hcp", kt=0.1)
    assert classify(fcc, majority=0.99) == "fcc"
    labels = np.r_[atom_structures(fcc), atom_structures(hcp)]
    assert 0.4 < (labels == "fcc").mean() < 0.6
    fcc.pbc = False
    with pytest.raises(ValueError, match="periodic"):
        classify(fcc)
