"""EMT of periodic copper in torch against ASE's EMT: energy, forces and stress with images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT

from alflow.periodic import energy_forces_stress
from alflow.solids.crystals import crystal
from alflow.solids.emt import LatticeEMT


@pytest.mark.parametrize("structure", ["fcc", "hcp"])
def test_lattice_emt_equals_ase_emt(structure):
    ref = crystal(structure, 32, 0.085, symbol="Cu")  # hcp 32: a 5 Å wide cell, many images
    atoms = ref.copy()
    atoms.rattle(0.05, seed=1)
    atoms.calc = EMT()
    emt = LatticeEMT(ref)
    e, f, s = energy_forces_stress(lambda y, c: emt.energy_cell(y, c[0]),
                                   torch.tensor(atoms.positions)[None],
                                   torch.tensor(atoms.cell.array)[None])
    assert float(e[0]) == pytest.approx(atoms.get_potential_energy(), abs=1e-10)
    np.testing.assert_allclose(f[0].numpy(), atoms.get_forces(), atol=1e-10)
    np.testing.assert_allclose(s[0].numpy(), atoms.get_stress(voigt=False), atol=1e-12)


def test_lattice_emt_refuses_alloys():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.numbers[0] = 47
    with pytest.raises(ValueError, match="one element"):
        LatticeEMT(atoms)
