"""Lennard-Jones crystals in reduced units, on a lattice neighbour list with periodic images.

Reduced units: ε = 1 (energy), σ = 1 (length), m = 1 (mass), k_B = 1, so temperatures are
k_B T in ε (T* = k_B T/ε), pressures P* = Pσ³/ε, densities ρ* = ρσ³ and times in
τ = σ√(m/ε). The pair energy is 4ε[(σ/r)¹² − (σ/r)⁶] for r < r_c and 0 beyond (truncated,
by default shifted to zero there, no tail correction): ASE's
``LennardJones(rc=r_c, smooth=False)``, checked against it (tests/test_solids_lj.py); with
``shift=False``, the unshifted potential of :func:`alflow.periodic.lennard_jones_energy`. A
crystal needs the shift: its neighbour shells sit at fixed distances, and at a density where
one lies near r_c the unshifted energy jumps as atoms vibrate across it, while the forces
(zero beyond r_c) never see the jump, so dynamics would not sample the Boltzmann weight of
the energy being integrated.

Unlike the minimum image, the pair list (:mod:`alflow.solids.lattice`) keeps every periodic
image within ``cutoff + skin`` of each lattice site, so cells narrower than twice the cutoff
(hcp with few atoms) are exact. It is built once from the perfect lattice and stays exact
while the two largest displacements from the sites sum to less than the skin (at the
reference cell; :meth:`LatticePairs.check`), which holds for a crystal whose centre of mass is
fixed; :class:`LatticeLJ` refuses a melted or slipped crystal, never silently wrong.
"""

from __future__ import annotations

import numpy as np
import torch

from alflow.solids.lattice import LatticePairs, lattice_pairs, pair_vectors


def _shift(pairs: LatticePairs, epsilon: float, sigma: float, shift: bool) -> float:
    sc6 = (sigma / pairs.cutoff) ** 6
    return 4 * epsilon * (sc6 * sc6 - sc6) if shift else 0.0


def lj_energy(positions: torch.Tensor, cell: torch.Tensor, pairs: LatticePairs,
              epsilon: float = 1.0, sigma: float = 1.0, shift: bool = True) -> torch.Tensor:
    """Energies (B,) of positions (B, N, 3) in ``cell`` (3, 3) or (B, 3, 3): LJ truncated at
    ``pairs.cutoff`` (shifted to 0 there if ``shift``), differentiable in positions and cell."""
    r2 = pair_vectors(positions, cell, pairs).square().sum(-1)
    inside = r2 < pairs.cutoff**2
    s6 = (sigma**2 / torch.where(inside, r2, torch.ones_like(r2))) ** 3
    e0 = _shift(pairs, epsilon, sigma, shift)
    e = torch.where(inside, 4 * epsilon * (s6 * s6 - s6) - e0, torch.zeros_like(r2))
    return 0.5 * e.sum(-1)


def lj_energy_forces(positions: torch.Tensor, cell: torch.Tensor, pairs: LatticePairs,
                     epsilon: float = 1.0, sigma: float = 1.0, shift: bool = True
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Energies (B,) and analytic forces (B, N, 3) of :func:`lj_energy` (no autograd: about
    twice as fast for MD)."""
    with torch.no_grad():
        vec = pair_vectors(positions, cell, pairs)
        r2 = vec.square().sum(-1)
        inside = r2 < pairs.cutoff**2
        r2 = torch.where(inside, r2, torch.ones_like(r2))
        s6 = (sigma**2 / r2) ** 3
        zero = torch.zeros_like(r2)
        e0 = _shift(pairs, epsilon, sigma, shift)
        e = torch.where(inside, 4 * epsilon * (s6 * s6 - s6) - e0, zero).sum(-1) * 0.5
        # force on j from the pair (i, j): 24ε(2s¹² − s⁶)/r² · (x_j − x_i); each pair appears
        # as (i, j) and (j, i), so adding it to j only counts every force once
        g = torch.where(inside, 24 * epsilon * (2 * s6 * s6 - s6) / r2, zero)
        f = torch.zeros_like(positions).index_add_(1, pairs.j, g[..., None] * vec)
    return e, f


class LatticeLJ:
    """Batched LJ energy of one crystal at a fixed cell: ``energy(x (B, N, 3)) -> (B,)`` ε,
    with a :class:`LatticePairs` list built on ``sites``; checks the skin on every call."""

    def __init__(self, sites: np.ndarray, cell: np.ndarray, cutoff: float = 2.5,
                 skin: float = 0.6, epsilon: float = 1.0, sigma: float = 1.0,
                 shift: bool = True):
        self.pairs = lattice_pairs(sites, cell, cutoff, skin)  # exact at the cell ``cell``
        self.cell = torch.tensor(np.asarray(cell, float), dtype=torch.float64)
        self.epsilon, self.sigma, self.shift = epsilon, sigma, shift

    def energy(self, positions: torch.Tensor) -> torch.Tensor:
        self.pairs.check(positions)
        return lj_energy(positions, self.cell.to(positions.dtype), self.pairs, self.epsilon,
                         self.sigma, self.shift)

    def energy_forces(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Energies (B,) and forces (B, N, 3) (analytic); checks the skin."""
        self.pairs.check(positions)
        return lj_energy_forces(positions, self.cell.to(positions.dtype), self.pairs,
                                self.epsilon, self.sigma, self.shift)


__all__ = ["LatticeLJ", "LatticePairs", "lattice_pairs", "lj_energy", "lj_energy_forces",
           "pair_vectors"]
