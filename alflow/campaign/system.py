"""The physical system of a campaign: atoms, masses, the hard wall, starting structures.

Positions in Å, masses in amu, energies in eV.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from ase import Atoms
from ase.data import atomic_masses, chemical_symbols

from alflow.campaign.config import CampaignConfig
from alflow.potential import Potential, PotentialOutput, evaluate
from alflow.structures import read_structures


@dataclass
class System:
    """Numbers (N,), masses (N,) amu, wall radius (Å or None), structures per state."""

    numbers: np.ndarray
    masses: np.ndarray
    wall_radius: float | None
    structures: dict[str, list[Atoms]]

    def atoms(self, positions: np.ndarray) -> Atoms:
        return Atoms(numbers=self.numbers, positions=np.asarray(positions, dtype=float))

    def outside_wall(self, positions: np.ndarray) -> np.ndarray:
        """(..., N, 3) -> (...,) bool: some atom farther than the wall from the centre of mass."""
        if self.wall_radius is None:
            return np.zeros(np.shape(positions)[:-2], dtype=bool)
        x = np.asarray(positions, dtype=float)
        com = (x * self.masses[:, None]).sum(-2, keepdims=True) / self.masses.sum()
        return np.linalg.norm(x - com, axis=-1).max(-1) > self.wall_radius


def build_system(cfg: CampaignConfig) -> System:
    structures = {name: [a for p in st.structures for a in read_structures(p)]
                  for name, st in cfg.system.states.items()}
    first = next(iter(structures.values()))[0]
    numbers = np.asarray(first.numbers)
    masses = np.array([atomic_masses[z] for z in numbers], dtype=float)
    if cfg.system.masses:
        for i, z in enumerate(numbers):
            masses[i] = cfg.system.masses.get(chemical_symbols[z], masses[i])
    return System(numbers, masses, cfg.system.wall_radius, structures)


class WalledPotential:
    """A potential plus a hard wall: energy +inf when an atom leaves the sphere of radius
    ``radius`` Å around the centre of mass (MCMC rejects, importance weights vanish)."""

    def __init__(self, inner: Potential, masses: np.ndarray, radius: float):
        self.inner = inner
        self.numbers = inner.numbers
        self.radius = float(radius)
        self._m = torch.as_tensor(np.asarray(masses, dtype=float))

    def _outside(self, x: torch.Tensor) -> torch.Tensor:
        m = self._m.to(dtype=x.dtype, device=x.device)
        com = (x * m[:, None]).sum(-2, keepdim=True) / m.sum()
        return (x - com).norm(dim=-1).amax(-1) > self.radius

    def energy(self, positions: torch.Tensor) -> torch.Tensor:
        e = self.inner.energy(positions)
        return torch.where(self._outside(positions), torch.full_like(e, float("inf")), e)

    def evaluate(self, positions: torch.Tensor) -> PotentialOutput:
        out = evaluate(self.inner, positions)
        out.energy = torch.where(self._outside(positions),
                                 torch.full_like(out.energy, float("inf")), out.energy)
        return out


def with_wall(potential: Potential, system: System) -> Potential:
    if system.wall_radius is None:
        return potential
    return WalledPotential(potential, system.masses, system.wall_radius)


def bootstrap_positions(system: System, displaced: int, sigma: float,
                        seed: int) -> tuple[np.ndarray, list[str]]:
    """Each user structure plus ``displaced`` Gaussian displacements (sigma Å per coordinate)
    of it, inside the wall: positions (M, N, 3) and the state of each."""
    rng = np.random.default_rng(seed)
    out, states = [], []
    for name, images in system.structures.items():
        for atoms in images:
            x0 = atoms.positions - atoms.get_center_of_mass()
            out.append(x0)
            states.append(name)
            made = 0
            while made < displaced:
                x = x0 + rng.normal(scale=sigma, size=x0.shape)
                if not system.outside_wall(x):
                    out.append(x)
                    states.append(name)
                    made += 1
    return np.asarray(out), states
