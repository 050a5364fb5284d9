"""The neighbour list of a crystal near its reference lattice: every periodic image within the
cutoff, built once on the lattice, exact for strained cells, batched over configurations.

A :class:`LatticePairs` lists the directed pairs (i, j, n) — atom j in the image shifted by
the integer lattice vector n — whose reference distance is below ``cutoff + skin`` (ASE's
:func:`ase.neighborlist.primitive_neighbor_list`, so cells narrower than twice the cutoff are
exact, unlike the minimum image of :mod:`alflow.periodic`). A configuration (positions
(B, N, 3), cell (3, 3) or (B, 3, 3), rows the lattice vectors as in ASE; lengths in Å or σ)
is read as displacements from the sites in fractional coordinates, whatever image its atoms
were wrapped into (:func:`pair_vectors`). The list is provably complete while
λ(cutoff + skin) − m − m′ > cutoff, with m and m′ the two largest displacements from the
sites and λ the smallest singular value of h₀⁻¹h (the strain of the cell): every unlisted
pair is then farther than the cutoff. :func:`pair_distances` reports that bound per
configuration; :meth:`LatticePairs.check` refuses a configuration outside it (a melted or
slipped crystal), and :func:`own_pairs` gives such a configuration a list of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from ase.neighborlist import primitive_neighbor_list

from alflow.errors import InputError


@dataclass(frozen=True)
class LatticePairs:
    """Directed pairs i → j + n of a reference crystal.

    ``i``, ``j`` (P,) long; ``shift`` (P, 3) float, the integer lattice shifts n (ASE's
    ``S``: d = x_j − x_i + n·h); ``frac0`` (N, 3) the sites' fractional positions in
    [0, 1); ``cell0`` (3, 3) the reference cell; ``cutoff``, ``skin`` lengths.
    """

    i: torch.Tensor
    j: torch.Tensor
    shift: torch.Tensor
    frac0: torch.Tensor
    cell0: torch.Tensor
    cutoff: float
    skin: float

    @property
    def images(self) -> torch.Tensor:
        """The lattice shifts n (P, 3) (the name of the former LJ list)."""
        return self.shift

    @property
    def sites(self) -> torch.Tensor:
        """Site positions (N, 3) in the reference cell."""
        return self.frac0 @ self.cell0

    def check(self, positions: torch.Tensor, cell: torch.Tensor | None = None) -> None:
        """ValueError if the list may miss a pair of a configuration (B, N, 3) in ``cell``
        (default: the reference cell): the crystal melted or slipped."""
        cell = self.cell0 if cell is None else cell.detach().to(positions.dtype)
        _, ok = _displaced(positions.detach(), cell, self)
        if not bool(ok.all()):
            raise ValueError("atoms moved so far from their lattice sites that the pair list "
                             f"(skin {self.skin:g}) may miss pairs: the crystal melted or "
                             "slipped")


def _ase_pairs(frac: np.ndarray, cell: np.ndarray, radius: float
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, n) of every pair closer than ``radius`` (fractional positions in [0, 1))."""
    i, j, s = primitive_neighbor_list("ijS", (True, True, True), cell, frac @ cell, radius,
                                      self_interaction=False)
    return i, j, s.astype(float)


def lattice_pairs(positions: np.ndarray, cell: np.ndarray, cutoff: float,
                  skin: float = 0.7, dtype: torch.dtype = torch.float64) -> LatticePairs:
    """The pair list of the reference crystal ``positions`` (N, 3) in ``cell`` (3, 3)."""
    pos, h = np.asarray(positions, float), np.asarray(cell, float)
    if pos.ndim != 2 or pos.shape[1] != 3 or h.shape != (3, 3):
        raise InputError(f"lattice_pairs: positions must be (N, 3) and cell (3, 3), got "
                         f"{pos.shape} and {h.shape}")
    if abs(np.linalg.det(h)) < 1e-12:
        raise InputError("lattice_pairs: the cell is singular")
    frac = pos @ np.linalg.inv(h)
    frac = frac - np.floor(frac)
    i, j, s = _ase_pairs(frac, h, cutoff + skin)
    t = torch.as_tensor
    return LatticePairs(t(i), t(j), torch.tensor(s, dtype=dtype), torch.tensor(frac, dtype=dtype),
                        torch.tensor(h, dtype=dtype), float(cutoff), float(skin))


def _displaced(positions: torch.Tensor, cell: torch.Tensor, pl: LatticePairs
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions (B, N, 3) moved by whole lattice vectors to the images of their sites, and
    whether the list is complete for each configuration (B,)."""
    frac = positions @ torch.linalg.inv(cell)
    f0 = pl.frac0.to(frac)
    dfrac = frac - f0
    dfrac = dfrac - torch.round(dfrac.detach())  # displacement from the site, any image
    pos = (f0 + dfrac) @ cell
    with torch.no_grad():
        top = (dfrac @ cell).norm(dim=-1).topk(min(2, frac.shape[1]), dim=-1).values
        m2 = top.sum(-1) if top.shape[-1] == 2 else 2 * top[..., 0]
        lam = 1.0 if cell is pl.cell0 else torch.linalg.svdvals(
            torch.linalg.inv(pl.cell0.to(cell)) @ cell)[..., -1]
        ok = lam * (pl.cutoff + pl.skin) - m2 >= pl.cutoff * (1 - 1e-12)  # r < cutoff counts
    return pos, ok


def pair_vectors(positions: torch.Tensor, cell: torch.Tensor, pl: LatticePairs
                 ) -> torch.Tensor:
    """x_j − x_i + n·h for every listed pair: positions (B, N, 3), cell (3, 3) or (B, 3, 3)
    -> (B, P, 3); differentiable in positions and cell. Complete while
    :meth:`LatticePairs.check` passes."""
    pos, _ = _displaced(positions, cell, pl)
    shift = pl.shift.to(pos) @ cell  # (P, 3) or (B, P, 3)
    return pos[:, pl.j] - pos[:, pl.i] + shift


def pair_distances(positions: torch.Tensor, cell: torch.Tensor, pl: LatticePairs
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Pair distances (B, P) and whether the list is complete for each configuration (B,)."""
    pos, ok = _displaced(positions, cell, pl)
    shift = pl.shift.to(pos) @ cell
    return (pos[:, pl.j] - pos[:, pl.i] + shift).norm(dim=-1), ok


def own_pairs(positions: torch.Tensor, cell: torch.Tensor, cutoff: float
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A configuration's own list: (i, j) (P,) long and its pair distances (1, P) for
    positions (1, N, 3) in cell (1, 3, 3), differentiable in both."""
    frac = positions @ torch.linalg.inv(cell)
    frac = frac - torch.floor(frac.detach())
    i, j, s = (torch.as_tensor(a) for a in _ase_pairs(
        frac[0].detach().numpy(), cell[0].detach().numpy(), cutoff))
    return i, j, ((frac[:, j] + s.to(frac) - frac[:, i]) @ cell).norm(dim=-1)


__all__ = ["LatticePairs", "lattice_pairs", "own_pairs", "pair_distances", "pair_vectors"]
