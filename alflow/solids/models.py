"""Crystal models for free-energy runs: a potential, how to build its crystals, and the
units of its dynamics.

A :class:`CrystalModel` gives ``build(structure, n_atoms, density)`` -> :class:`Built` (the
perfect crystal, its energy as a function of positions and cell, optionally faster forces)
and the time step, friction, mass and density scale that :mod:`alflow.solids.einstein` needs.
:func:`lj_model`: Lennard-Jones in reduced units (:mod:`alflow.solids.lj`);
:func:`emt_model`: ASE's EMT of one element in eV, Å, amu
(:class:`alflow.solids.crystal_energy.CrystalEMT`, the flows' EMT too).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from ase import units
from ase.data import atomic_masses, atomic_numbers

from alflow.solids.crystal_energy import CrystalEMT
from alflow.solids.crystals import crystal
from alflow.solids.lj import lattice_pairs, lj_energy, lj_energy_forces
from alflow.solids.md import ForceFn, autograd_forces


@dataclass
class Built:
    """A crystal and its energy: ``atoms`` (perfect lattice), ``energy_cell(x (B, N, 3),
    cell (3, 3) or (B, 3, 3))`` -> (B,) differentiable in both, optional faster
    ``forces(x)`` -> (energies, forces) at the crystal's cell (checks the pair-list skin)."""

    atoms: object
    energy_cell: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    forces: ForceFn | None = None


@dataclass
class CrystalModel:
    """A potential with its units: ``build(structure, n_atoms, density)`` -> :class:`Built`;
    ``dt``, ``friction`` and ``mass`` for the Langevin dynamics; ``density_guess`` brackets the
    static density search (×0.6 to ×1.6); ``units`` the energy unit's name."""

    build: Callable[[str, int, float], Built]
    dt: float
    friction: float
    mass: float
    density_guess: float
    units: str


def lj_model(cutoff: float = 2.5) -> CrystalModel:
    """Lennard-Jones crystals in reduced units (:mod:`alflow.solids.lj`), r_c = ``cutoff``."""
    def build(structure: str, n_atoms: int, density: float) -> Built:
        atoms = crystal(structure, n_atoms, density)
        pairs = lattice_pairs(atoms.positions, atoms.cell.array, cutoff, skin=0.6)
        cell = torch.tensor(atoms.cell.array, dtype=torch.float64)

        def forces(x):
            pairs.check(x)
            return lj_energy_forces(x, cell, pairs)

        return Built(atoms, lambda x, c: lj_energy(x, c, pairs), forces)
    return CrystalModel(build, dt=0.005, friction=2.0, mass=1.0, density_guess=1.0,
                        units="epsilon")


def emt_model(symbol: str = "Cu") -> CrystalModel:
    """EMT crystals of one element in eV, Å, amu, ASE time
    (:class:`alflow.solids.crystal_energy.CrystalEMT`): 2 fs steps, friction 0.01/fs."""
    def build(structure: str, n_atoms: int, density: float) -> Built:
        atoms = crystal(structure, n_atoms, density, symbol=symbol)
        emt = CrystalEMT(atoms.numbers, atoms.positions, atoms.cell.array, skin=1.0)
        cell0 = torch.tensor(atoms.cell.array, dtype=torch.float64)

        def energy_cell(x: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
            return emt.energy(x, cell.to(x.dtype).expand(x.shape[0], 3, 3))

        return Built(atoms, energy_cell, autograd_forces(lambda x: energy_cell(x, cell0)))
    return CrystalModel(build, dt=2 * units.fs, friction=0.01 / units.fs,
                        mass=float(atomic_masses[atomic_numbers[symbol]]),
                        density_guess=0.085, units="eV")


__all__ = ["Built", "CrystalModel", "emt_model", "lj_model"]
