"""Periodic energies of a crystal near its reference lattice, batched over configurations and
cells, with every periodic image within the cutoff (cells smaller than twice the cutoff).

A :class:`LatticePairs` lists the directed pairs (i, j, n) — atom j in the image shifted by the
integer lattice vector n — whose reference distance is below ``cutoff + skin``. A configuration
(positions (B, N, 3) Å, cell (B, 3, 3) Å, rows the lattice vectors as in ASE) is evaluated on
that list while it is provably complete: with m the largest displacement of an atom from its
site (Å), m' the second largest, and λ the smallest singular value of h₀⁻¹h (the strain of
the cell), every unlisted pair is at least λ(cutoff + skin) − m − m' away, so the list holds
every pair within ``cutoff`` whenever that bound exceeds ``cutoff``. Configurations outside
that bound (rare in a crystal with the default skin) get a list of their own: energies are
exact for any configuration.

:class:`CrystalLennardJones` is :func:`alflow.periodic.lennard_jones_energy`'s potential
(truncated at the cutoff, not shifted) with images; :class:`CrystalEMT` is
:class:`alflow.emt.EMT` (ASE's EMT) made periodic, checked against ASE's periodic EMT.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch

from alflow.emt import EMT, cohesive
from alflow.errors import InputError


@dataclass(frozen=True)
class LatticePairs:
    """Directed pairs i → j + n (n integer lattice shifts) of a reference crystal.

    ``i``, ``j`` (P,) long; ``shift`` (P, 3) float (lattice units); ``frac0`` (N, 3) reference
    fractional positions; ``cell0`` (3, 3) Å; ``cutoff``, ``skin`` Å.
    """

    i: torch.Tensor
    j: torch.Tensor
    shift: torch.Tensor
    frac0: torch.Tensor
    cell0: torch.Tensor
    cutoff: float
    skin: float


def _directed_pairs(frac: np.ndarray, cell: np.ndarray, radius: float
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All (i, j, n) with |(s_j + n − s_i) h| < radius, except i = j with n = 0."""
    vol = abs(np.linalg.det(cell))
    widths = vol / np.linalg.norm(np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]]), axis=1)
    nmax = np.ceil(radius / widths).astype(int) + 1
    shifts = np.array(list(itertools.product(*(range(-k, k + 1) for k in nmax))), dtype=float)
    ds = frac[None, :, None, :] - frac[:, None, None, :] + shifts[None, None]  # (N, N, S, 3)
    r = np.linalg.norm(ds @ cell, axis=-1)
    n = len(frac)
    self_img = (np.eye(n, dtype=bool)[:, :, None]) & (np.abs(shifts).sum(-1) == 0)[None, None]
    i, j, s = np.nonzero((r < radius) & ~self_img)
    return i, j, shifts[s]


def lattice_pairs(positions: np.ndarray, cell: np.ndarray, cutoff: float,
                  skin: float = 0.7) -> LatticePairs:
    """The pair list of the reference crystal ``positions`` (N, 3) Å in ``cell`` (3, 3) Å."""
    pos, h = np.asarray(positions, float), np.asarray(cell, float)
    if pos.ndim != 2 or pos.shape[1] != 3 or h.shape != (3, 3):
        raise InputError(f"lattice_pairs: positions must be (N, 3) and cell (3, 3), got "
                         f"{pos.shape} and {h.shape}")
    if abs(np.linalg.det(h)) < 1e-12:
        raise InputError("lattice_pairs: the cell is singular")
    frac = pos @ np.linalg.inv(h)
    frac = frac - np.floor(frac)
    i, j, s = _directed_pairs(frac, h, cutoff + skin)
    t = torch.as_tensor
    return LatticePairs(t(i), t(j), t(s), t(frac), t(h), float(cutoff), float(skin))


def _distances(positions: torch.Tensor, cell: torch.Tensor, pl: LatticePairs
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Pair distances (B, P) Å and whether the list is complete for each configuration (B,)."""
    frac = positions @ torch.linalg.inv(cell)
    f0 = pl.frac0.to(frac)
    dfrac = frac - f0
    dfrac = dfrac - torch.round(dfrac.detach())  # displacement from the site, any image
    frac = f0 + dfrac
    pos = frac @ cell
    r = (pos[:, pl.j] - pos[:, pl.i] + pl.shift.to(frac) @ cell).norm(dim=-1)
    with torch.no_grad():
        top = (dfrac @ cell).norm(dim=-1).topk(min(2, frac.shape[1]), dim=-1).values
        m2 = top.sum(-1) if top.shape[-1] == 2 else 2 * top[..., 0]
        lam = torch.linalg.svdvals(torch.linalg.inv(pl.cell0.to(cell)) @ cell)[..., -1]
        ok = lam * (pl.cutoff + pl.skin) - m2 > pl.cutoff
    return r, ok


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
        r, ok = _distances(positions, cell, pl)
        e = self._pair_energy(r, pl.i, pl.j)
        for b in torch.nonzero(~ok).flatten().tolist():  # rare: a list of its own
            x, h = positions[b:b + 1], cell[b:b + 1]
            frac = x @ torch.linalg.inv(h)
            frac = frac - torch.floor(frac.detach())
            i, j, s = (torch.as_tensor(a) for a in _directed_pairs(
                frac[0].detach().numpy(), h[0].detach().numpy(), self.cutoff))
            rb = ((frac[:, j] + s.to(frac) - frac[:, i]) @ h).norm(dim=-1)
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
