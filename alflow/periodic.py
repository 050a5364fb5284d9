"""Periodic boxes in torch: minimum-image pairs, a Lennard-Jones energy, forces and stress.

Conventions follow ASE: a cell is a (3, 3) matrix whose rows are the lattice vectors (Å);
positions are Cartesian (Å); stress is ``(1/V) dE/dε`` (eV/Å³, positive under tension) for a
symmetric strain ε applied to positions and cell alike. Batched over replicas: positions
(B, N, 3), cells (B, 3, 3).

The minimum image is taken in fractional coordinates, which gives the nearest image of every
pair for any cell whose perpendicular widths are all at least twice the cutoff;
:func:`check_cutoff` refuses a smaller cell.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


def perpendicular_widths(cell: torch.Tensor) -> torch.Tensor:
    """Distances between opposite faces of each cell: (..., 3, 3) Å -> (..., 3) Å."""
    volume = torch.linalg.det(cell).abs()
    a, b, c = cell[..., 0, :], cell[..., 1, :], cell[..., 2, :]
    areas = torch.stack([torch.linalg.cross(b, c), torch.linalg.cross(c, a),
                         torch.linalg.cross(a, b)], dim=-2).norm(dim=-1)
    return volume.unsqueeze(-1) / areas


def check_cutoff(cell: torch.Tensor, cutoff: float) -> None:
    """Raise ValueError unless every perpendicular width is at least ``2 * cutoff`` Å."""
    width = float(perpendicular_widths(cell.detach()).min())
    if width < 2 * cutoff:
        raise ValueError(f"cutoff {cutoff} Å exceeds half the cell's smallest width "
                         f"({width:.3f} Å): the minimum image would miss pairs; use a larger "
                         f"cell or a smaller cutoff")


def minimum_image(dr: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
    """Nearest-image displacement vectors: dr (B, ..., 3) Å, cell (B, 3, 3) Å -> (B, ..., 3)."""
    shape = dr.shape
    flat = dr.reshape(shape[0], -1, 3)
    frac = flat @ torch.linalg.inv(cell)
    frac = frac - torch.round(frac.detach())
    return (frac @ cell).reshape(shape)


def wrap(positions: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
    """Positions (B, N, 3) Å mapped into the cell (fractional coordinates in [0, 1))."""
    frac = positions @ torch.linalg.inv(cell)
    return (frac - torch.floor(frac.detach())) @ cell


@dataclass(frozen=True)
class PairList:
    """Pairs i < j (one replica's indices each) that were within ``cutoff + skin`` Å when built.

    ``batch``, ``i``, ``j``: (P,) long tensors. Build outside the gradient with
    :func:`pair_list`; rebuild when an atom has moved more than ``skin / 2`` since.
    """

    batch: torch.Tensor
    i: torch.Tensor
    j: torch.Tensor
    cutoff: float
    skin: float


def pair_list(positions: torch.Tensor, cell: torch.Tensor, cutoff: float,
              skin: float = 0.0) -> PairList:
    """All pairs i < j of each replica whose minimum-image distance is below cutoff + skin (Å)."""
    check_cutoff(cell, cutoff + skin)
    with torch.no_grad():
        n = positions.shape[1]
        iu, ju = torch.triu_indices(n, n, offset=1, device=positions.device)
        dr = minimum_image(positions[:, ju] - positions[:, iu], cell)
        b, p = torch.nonzero(dr.norm(dim=-1) < cutoff + skin, as_tuple=True)
    return PairList(b, iu[p], ju[p], float(cutoff), float(skin))


def pair_distances(positions: torch.Tensor, cell: torch.Tensor,
                   pairs: PairList) -> torch.Tensor:
    """Minimum-image distances (P,) Å of the listed pairs, differentiable in positions and cell."""
    dr = positions[pairs.batch, pairs.j] - positions[pairs.batch, pairs.i]
    inv = torch.linalg.inv(cell)[pairs.batch]
    frac = torch.einsum("pk,pkl->pl", dr, inv)
    frac = frac - torch.round(frac.detach())
    return torch.einsum("pk,pkl->pl", frac, cell[pairs.batch]).norm(dim=-1)


def lennard_jones_energy(positions: torch.Tensor, cell: torch.Tensor, epsilon: torch.Tensor
                         | float, sigma: torch.Tensor | float, cutoff: float,
                         pairs: PairList | None = None) -> torch.Tensor:
    """Energies (B,) eV of 4ε[(σ/r)¹² − (σ/r)⁶] summed over pairs with r < cutoff (no shift).

    ``epsilon`` (eV) and ``sigma`` (Å) may be tensors that require grad. ``pairs`` defaults to
    a list built now; a list built with a skin is reused until atoms move by skin/2.
    """
    pairs = pair_list(positions, cell, cutoff) if pairs is None else pairs
    r = pair_distances(positions, cell, pairs)
    inside = r < cutoff
    sr6 = (sigma / torch.where(inside, r, torch.ones_like(r))) ** 6
    e_pair = torch.where(inside, 4 * epsilon * (sr6 * sr6 - sr6), torch.zeros_like(r))
    out = torch.zeros(positions.shape[0], dtype=e_pair.dtype, device=positions.device)
    return out.index_add(0, pairs.batch, e_pair)


EnergyFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def energy_forces_stress(energy: EnergyFn, positions: torch.Tensor, cell: torch.Tensor,
                         create_graph: bool = False
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Energies (B,) eV, forces (B, N, 3) eV/Å and stress (B, 3, 3) eV/Å³ of ``energy(x, cell)``.

    The stress is the derivative under a symmetric strain ε applied to positions and cell,
    ``(1/V) dE/dε``, ASE's sign convention (for Voigt form, pass each (3, 3) matrix to
    ``ase.stress.full_3x3_to_voigt_6_stress``).
    """
    b = positions.shape[0]
    strain = torch.zeros(b, 3, 3, dtype=positions.dtype, device=positions.device,
                         requires_grad=True)
    with torch.enable_grad():
        sym = 0.5 * (strain + strain.transpose(1, 2))
        eye = torch.eye(3, dtype=positions.dtype, device=positions.device)
        x = positions if positions.requires_grad else positions.detach().requires_grad_(True)
        deform = eye + sym
        e = energy(x @ deform, cell @ deform)
        gx, gs = torch.autograd.grad(e.sum(), (x, strain), create_graph=create_graph)
    volume = torch.linalg.det(cell).abs()
    return (e if create_graph else e.detach()), -gx, gs / volume[:, None, None]


class VerletList:
    """A :class:`PairList` with a skin, rebuilt (outside the gradient) once an atom has moved
    more than ``skin / 2`` Å from where it was at the last build.

    ``skin`` is reduced to what the cell allows (cutoff + skin at most half its smallest
    width); with no room left the list is rebuilt at every call.
    """

    def __init__(self, cutoff: float, skin: float = 1.0):
        self.cutoff, self.skin = float(cutoff), float(skin)
        self._pairs: PairList | None = None
        self._ref: torch.Tensor | None = None
        self.builds = 0

    def __call__(self, positions: torch.Tensor, cell: torch.Tensor) -> PairList:
        """The pairs of ``positions`` (B, N, 3) Å in ``cell`` (B, 3, 3) Å, rebuilt if stale."""
        x = positions.detach()
        if self._pairs is not None and self._ref is not None and self._ref.shape == x.shape:
            moved = minimum_image(x - self._ref, cell.detach()).norm(dim=-1).max()
            if float(moved) < 0.5 * self._pairs.skin:
                return self._pairs
        room = float(perpendicular_widths(cell.detach()).min()) / 2 - self.cutoff
        skin = min(self.skin, max(0.0, room - 1e-9))
        self._pairs = pair_list(x, cell.detach(), self.cutoff, skin)
        self._ref = x.clone()
        self.builds += 1
        return self._pairs
