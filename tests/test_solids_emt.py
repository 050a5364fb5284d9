"""EMT of periodic crystals in torch (alflow.solids.crystal_energy.CrystalEMT, the energy of
both the Einstein-crystal TI and the flows) against ASE's EMT: energy, forces and stress with
images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.calculators.emt import EMT

from alflow.periodic import energy_forces_stress
from alflow.solids.crystals import crystal
from alflow.solids.models import emt_model


@pytest.mark.parametrize("structure", ["fcc", "hcp"])
def test_emt_model_equals_ase_emt(structure):
    built = emt_model("Cu").build(structure, 32, 0.085)  # hcp 32: a 5 Å wide cell, images
    atoms = built.atoms.copy()
    atoms.rattle(0.05, seed=1)
    atoms.calc = EMT()
    e, f, s = energy_forces_stress(built.energy_cell, torch.tensor(atoms.positions)[None],
                                   torch.tensor(atoms.cell.array)[None])
    assert float(e[0]) == pytest.approx(atoms.get_potential_energy(), abs=1e-10)
    np.testing.assert_allclose(f[0].numpy(), atoms.get_forces(), atol=1e-10)
    np.testing.assert_allclose(s[0].numpy(), atoms.get_stress(voigt=False), atol=1e-12)
    # the forces of the dynamics at the crystal's own cell are the same
    e2, f2 = built.forces(torch.tensor(atoms.positions)[None])
    assert float(e2[0]) == pytest.approx(float(e[0]), abs=1e-12)
    np.testing.assert_allclose(f2[0].numpy(), f[0].numpy(), atol=1e-12)


def test_crystal_emt_of_an_alloy_equals_ase_emt():
    from alflow.solids.crystal_energy import CrystalEMT

    ref = crystal("fcc", 32, 0.085, symbol="Cu")
    ref.numbers[::4] = 47  # silver on one sublattice
    atoms = ref.copy()
    atoms.rattle(0.03, seed=2)
    atoms.calc = EMT()
    emt = CrystalEMT(ref.numbers, ref.positions, ref.cell.array)
    e = emt.energy(torch.tensor(atoms.positions)[None], torch.tensor(atoms.cell.array)[None])
    assert float(e[0]) == pytest.approx(atoms.get_potential_energy(), abs=1e-10)
