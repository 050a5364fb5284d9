"""NPT through ASE's Langevin–Hoover barostat in reduced LJ units: the volume at a pressure."""

from __future__ import annotations

import numpy as np
import pytest
from ase import units

from alflow.solids.crystals import crystal
from alflow.solids.einstein import static_density
from alflow.solids.npt import npt_volume, reduced_lj_atoms


def test_cold_crystal_takes_the_static_volume_of_the_pressure():
    """At T* = 0.005 the crystal's volume at P* = 1 is the static lattice's (pressure sign,
    stress convention and the mapping of reduced units onto ASE's all enter)."""
    rho = static_density("fcc", 1.0, n_atoms=32)
    atoms = reduced_lj_atoms(crystal("fcc", 32, rho * 0.97))  # start 3 % too large
    run = npt_volume(atoms, 0.005 / units.kB, 1.0, 0.005, 300, n_equil=300, t_tau=0.1,
                     p_tau=0.5)
    assert run.volume_per_atom == pytest.approx(1 / rho, rel=3e-3)
    assert np.allclose(run.cell - np.diag(np.diag(run.cell)), 0, atol=1e-9)  # stays cubic


def test_npt_refuses_a_finite_cluster():
    atoms = reduced_lj_atoms(crystal("fcc", 4, 1.0))
    atoms.pbc = False
    with pytest.raises(ValueError, match="periodic"):
        npt_volume(atoms, 10.0, 0.0, 0.005, 10)
