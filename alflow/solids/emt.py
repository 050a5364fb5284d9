"""EMT of a one-element crystal in torch on a lattice neighbour list with periodic images.

The same energy as ASE's :class:`ase.calculators.emt.EMT` (default ``asap_cutoff=False``)
for periodic cells of one element, batched over replicas and differentiable in positions and
cell (forces and stress by autograd). Parameters, cutoff and γ sums come from
:class:`alflow.emt.EMT`, the cluster version; the pair list is
:func:`alflow.solids.lattice.lattice_pairs` (every image, built once on the lattice, exact
while atoms stay near their sites: :meth:`~alflow.solids.lattice.LatticePairs.check`). Units: Å, eV.
"""

from __future__ import annotations

import numpy as np
import torch
from ase import Atoms
from ase.calculators.emt import beta

from alflow.emt import EMT
from alflow.solids.lattice import LatticePairs, lattice_pairs, pair_vectors


class LatticeEMT:
    """EMT energy of a crystal of one element: ``energy_cell(x (B, N, 3), cell)`` -> (B,) eV;
    ``energy(x)`` at the crystal's own cell."""

    def __init__(self, atoms: Atoms, skin: float = 1.0):
        if len(set(atoms.numbers.tolist())) != 1:
            raise ValueError("LatticeEMT takes crystals of one element")
        self.numbers = np.asarray(atoms.numbers)
        emt = EMT(self.numbers[:1])
        self.rc, self.acut = emt.rc, emt.acut
        self.p = {k: float(v.reshape(-1)[0]) for k, v in emt._par.items()}
        self.pairs: LatticePairs = lattice_pairs(atoms.positions, atoms.cell.array,
                                                 emt.rc_list, skin)
        self.cell = torch.tensor(atoms.cell.array, dtype=torch.float64)

    def energy_cell(self, positions: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        p = self.p
        r = pair_vectors(positions, cell, self.pairs).square().sum(-1).sqrt()  # (B, P)
        w = torch.where(r < self.pairs.cutoff, torch.sigmoid(-self.acut * (r - self.rc)),
                        torch.zeros_like(r))
        a = torch.exp(-p["_eta2"] * (r - beta * p["_s0"])) * w
        sig1 = torch.zeros_like(positions[..., 0]).index_add(-1, self.pairs.i, a)
        ds = -torch.log(sig1 * p["_inv12g1"]) / (beta * p["_eta2"])
        lds = p["_lam"] * ds
        e_c = p["_e0"] * (1.0 + lds) * torch.exp(-lds) + 6.0 * p["_v0"] * torch.exp(
            -p["_kappa"] * ds)
        e_as = (p["_nh"] * torch.exp(-p["_kappa"] * (r / beta - p["_s0"])) * w).sum(-1)
        return (e_c - p["_e0"]).sum(-1) + e_as

    def energy(self, positions: torch.Tensor) -> torch.Tensor:
        self.pairs.check(positions)
        return self.energy_cell(positions, self.cell.to(positions.dtype))


__all__ = ["LatticeEMT"]
