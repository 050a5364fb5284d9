"""Periodic energies of a crystal near its reference lattice, batched over configurations and
cells, with every periodic image within the cutoff (cells smaller than twice the cutoff).

The pair list is :class:`alflow.solids.lattice.LatticePairs`, built once on the reference
lattice with a skin; a configuration outside the bound where that list is provably complete
(rare in a crystal with the default skin) gets a list of its own
(:func:`alflow.solids.lattice.own_pairs`): energies are exact for any configuration.
``LatticePairs`` and ``lattice_pairs`` are importable from here too.

:class:`CrystalLennardJones` is :func:`alflow.periodic.lennard_jones_energy`'s potential
(truncated at the cutoff, not shifted) with images; :class:`CrystalEMT` is
:class:`alflow.emt.EMT` (ASE's EMT) made periodic, checked against ASE's periodic EMT.
"""

from __future__ import annotations

import numpy as np
import torch

from alflow.emt import EMT, cohesive
from alflow.errors import InputError
from alflow.solids.lattice import LatticePairs, lattice_pairs, own_pairs, pair_distances


class _CrystalPotential:
    """Shared evaluation: ``energy(positions, cell)`` (B, N, 3), (B, 3, 3) Å -> (B,) eV."""

    cutoff: float

    def __init__(self, numbers, positions: np.ndarray, cell: np.ndarray, skin: float):
        self.numbers = np.asarray(numbers)
        self.pairs = lattice_pairs(positions, cell, self.cutoff, skin)

    def _pair_energy(self, r: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def energy(self, positions: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        """Energies (B,) eV; differentiable in positions and cell."""
        if positions.ndim != 3 or cell.shape != (positions.shape[0], 3, 3):
            raise InputError(f"positions must be (B, N, 3) and cell (B, 3, 3), got "
                             f"{tuple(positions.shape)} and {tuple(cell.shape)}")
        pl = self.pairs
        r, ok = pair_distances(positions, cell, pl)
        e = self._pair_energy(r, pl.i, pl.j)
        for b in torch.nonzero(~ok).flatten().tolist():  # rare: a list of its own
            i, j, rb = own_pairs(positions[b:b + 1], cell[b:b + 1], self.cutoff)
            e = torch.cat([e[:b], self._pair_energy(rb, i, j), e[b + 1:]])
        return e


class CrystalLennardJones(_CrystalPotential):
    """4ε[(σ/r)¹² − (σ/r)⁶] over pairs with r < cutoff, all images; truncated, and with
    ``shift`` shifted to zero at the cutoff (ASE's ``LennardJones(smooth=False)``).

    ``epsilon`` eV, ``sigma`` Å, ``cutoff`` Å; ``positions`` (N, 3) and ``cell`` (3, 3) Å: the
    reference lattice the pair list is built on.
    """

    def __init__(self, numbers, positions: np.ndarray, cell: np.ndarray, epsilon: float = 1.0,
                 sigma: float = 1.0, cutoff: float = 2.5, skin: float = 0.7,
                 shift: bool = False):
        self.epsilon, self.sigma, self.cutoff = float(epsilon), float(sigma), float(cutoff)
        sc6 = (self.sigma / self.cutoff) ** 6
        self.e_cut = 4 * self.epsilon * (sc6 * sc6 - sc6) if shift else 0.0
        super().__init__(numbers, positions, cell, skin)

    def _pair_energy(self, r: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        inside = r < self.cutoff
        sr6 = (self.sigma / torch.where(inside, r, torch.ones_like(r))) ** 6
        e = torch.where(inside, 4 * self.epsilon * (sr6 * sr6 - sr6) - self.e_cut,
                        torch.zeros_like(r))
        return 0.5 * e.sum(-1)  # every pair is listed in both directions


class CrystalEMT(_CrystalPotential):
    """ASE's EMT (``asap_cutoff=False``) of a periodic crystal, all images; elements as
    :class:`alflow.emt.EMT`. ``positions`` (N, 3), ``cell`` (3, 3) Å: the reference lattice."""

    def __init__(self, numbers, positions: np.ndarray, cell: np.ndarray, skin: float = 0.7):
        self._emt = EMT(numbers)
        self.cutoff = self._emt.rc_list
        super().__init__(numbers, positions, cell, skin)

    def _pair_energy(self, r: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        from ase.calculators.emt import beta

        emt = self._emt
        p = {k: v.to(r) for k, v in emt._par.items()}
        w = torch.where(r < emt.rc_list, torch.sigmoid(-emt.acut * (r - emt.rc)),
                        torch.zeros_like(r))
        chi = p["_chi"][i, j]
        a = torch.exp(-p["_eta2"][j] * (r - beta * p["_s0"][j])) * chi * w
        n = len(self.numbers)
        sig1 = torch.zeros(r.shape[0], n, dtype=r.dtype).index_add(1, i, a)
        e_c, _, _ = cohesive(sig1, p)
        es = p["_nh"][i] * torch.exp(-p["_kappa"][j] * (r / beta - p["_s0"][j])) * chi * w
        eo = p["_nh"][j] * torch.exp(-p["_kappa"][i] * (r / beta - p["_s0"][i])) / chi * w
        return (e_c - p["_e0"]).sum(-1) + 0.5 * (es + eo).sum(-1)


class FixedCell:
    """A crystal potential at a fixed cell as a :class:`alflow.potential.Potential`:
    ``energy(positions)`` (B, N, 3) Å -> (B,) eV (for MD and MCMC at constant volume)."""

    def __init__(self, crystal: _CrystalPotential, cell: np.ndarray):
        self.crystal = crystal
        self.numbers = crystal.numbers
        self.cell = torch.as_tensor(np.asarray(cell, float))

    def energy(self, positions: torch.Tensor) -> torch.Tensor:
        cell = self.cell.to(positions).expand(positions.shape[0], 3, 3)
        return self.crystal.energy(positions, cell)


__all__ = ["CrystalEMT", "CrystalLennardJones", "FixedCell", "LatticePairs", "lattice_pairs"]
