"""Batches of configurations in the two layouts the models take.

* :class:`DenseBatch`: B finite clusters of the same size N, all pairs (no neighbour list).
  Pair tensors are (B, N, N, ...); this is the fast path for MD/MCMC walkers on clusters.
* :class:`GraphBatch`: any mix of sizes and periodic cells, flattened to Ntot atoms with an
  edge list (i, j, shift) from ``ase.neighborlist.primitive_neighbor_list``; the edge vector
  is ``x[j] - x[i] + shift`` with ``shift = S @ cell`` (Å).

Positions must be the tensor forces are taken against (``requires_grad`` set by the caller).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from ase.neighborlist import primitive_neighbor_list


@dataclass
class DenseBatch:
    """positions (B, N, 3) Å; species (N,) or (B, N) element indices of the model."""

    positions: torch.Tensor
    species: torch.Tensor

    @property
    def n_graphs(self) -> int:
        return int(self.positions.shape[0])

    def species_2d(self) -> torch.Tensor:
        s = self.species
        return s.expand(self.positions.shape[0], -1) if s.dim() == 1 else s


@dataclass
class GraphBatch:
    """Flattened batch: positions (Ntot, 3) Å, species (Ntot,), batch (Ntot,) graph index,
    edge_i/edge_j (E,), shifts (E, 3) Å, unit_shifts (E, 3), cell (G, 3, 3) Å."""

    positions: torch.Tensor
    species: torch.Tensor
    batch: torch.Tensor
    edge_i: torch.Tensor
    edge_j: torch.Tensor
    shifts: torch.Tensor
    unit_shifts: torch.Tensor
    cell: torch.Tensor
    n_graphs: int

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> GraphBatch:
        f = {"device": device} if dtype is None else {"device": device, "dtype": dtype}
        return GraphBatch(self.positions.to(**f), self.species.to(device), self.batch.to(device),
                          self.edge_i.to(device), self.edge_j.to(device), self.shifts.to(**f),
                          self.unit_shifts.to(**f), self.cell.to(**f), self.n_graphs)


def neighbor_edges(positions: np.ndarray, cell: np.ndarray | None, pbc: np.ndarray | None,
                   cutoff: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Directed edges (i, j, S) with |x_j - x_i + S @ cell| < cutoff, i != j or S != 0."""
    positions = np.asarray(positions, dtype=float)
    pbc = np.zeros(3, bool) if pbc is None else np.asarray(pbc, bool)
    cell = np.zeros((3, 3)) if cell is None else np.asarray(cell, dtype=float)
    if not pbc.any():
        n = len(positions)
        d = np.linalg.norm(positions[None] - positions[:, None], axis=-1)
        i, j = np.nonzero((d < cutoff) & ~np.eye(n, dtype=bool))
        return i, j, np.zeros((len(i), 3))
    i, j, s = primitive_neighbor_list("ijS", pbc, cell, positions, cutoff,
                                      self_interaction=False)
    return i, j, s.astype(float)


def make_graph(positions: list[np.ndarray], species: list[np.ndarray],
               cells: list[np.ndarray | None], pbcs: list[np.ndarray | None], cutoff: float,
               dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu",
               edges: list[tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None
               ) -> GraphBatch:
    """Build a GraphBatch from per-configuration arrays (edges recomputed unless given)."""
    pos, spe, bat, ei, ej, us, cl = [], [], [], [], [], [], []
    offset = 0
    for g, (x, s, c, p) in enumerate(zip(positions, species, cells, pbcs, strict=True)):
        i, j, shift = edges[g] if edges is not None else neighbor_edges(x, c, p, cutoff)
        cell = np.zeros((3, 3)) if c is None else np.asarray(c, dtype=float)
        pos.append(np.asarray(x, dtype=float))
        spe.append(np.asarray(s))
        bat.append(np.full(len(x), g))
        ei.append(i + offset)
        ej.append(j + offset)
        us.append(shift)
        cl.append(cell)
        offset += len(x)
    cell_t = torch.tensor(np.array(cl), dtype=dtype, device=device)
    bat_t = torch.tensor(np.concatenate(bat), dtype=torch.long, device=device)
    ei_t = torch.tensor(np.concatenate(ei), dtype=torch.long, device=device)
    us_t = torch.tensor(np.concatenate(us), dtype=dtype, device=device)
    shifts = torch.einsum("ek,ekl->el", us_t, cell_t[bat_t[ei_t]]) if len(ei_t) else us_t
    return GraphBatch(
        positions=torch.tensor(np.concatenate(pos), dtype=dtype, device=device),
        species=torch.tensor(np.concatenate(spe), dtype=torch.long, device=device),
        batch=bat_t, edge_i=ei_t,
        edge_j=torch.tensor(np.concatenate(ej), dtype=torch.long, device=device),
        shifts=shifts, unit_shifts=us_t, cell=cell_t, n_graphs=len(positions))


def dense_to_graph(batch: DenseBatch) -> GraphBatch:
    """All-pairs GraphBatch of a DenseBatch (positions stay connected to the autograd graph)."""
    x = batch.positions
    b, n, _ = x.shape
    dev = x.device
    ii, jj = torch.nonzero(~torch.eye(n, dtype=torch.bool, device=dev), as_tuple=True)
    off = (torch.arange(b, device=dev) * n)[:, None]
    ei = (ii[None] + off).reshape(-1)
    ej = (jj[None] + off).reshape(-1)
    zeros = torch.zeros(len(ei), 3, dtype=x.dtype, device=dev)
    return GraphBatch(positions=x.reshape(b * n, 3), species=batch.species_2d().reshape(-1),
                      batch=torch.arange(b, device=dev).repeat_interleave(n), edge_i=ei,
                      edge_j=ej, shifts=zeros, unit_shifts=zeros,
                      cell=torch.zeros(b, 3, 3, dtype=x.dtype, device=dev), n_graphs=b)


__all__ = ["DenseBatch", "GraphBatch", "dense_to_graph", "make_graph", "neighbor_edges"]
