"""Stress (virial) of the MLIP on periodic cells: the derivative of the energy under strain.

A symmetric strain ε of each graph deforms its positions and cell alike, ``x -> x (1 + ε)``,
``cell -> cell (1 + ε)``; the edge shifts ``S @ cell`` follow the cell. The stress is
``(1/V) dE/dε`` (eV/Å³), ASE's convention (positive under tension; pressure is minus a third
of its trace). Forces come from the same backward pass.
"""

from __future__ import annotations

import torch

from alflow.mlip.graph import GraphBatch


def strained(graph: GraphBatch, strain: torch.Tensor) -> GraphBatch:
    """The graph under a symmetric strain (G, 3, 3): positions, shifts and cells deformed."""
    deform = torch.eye(3, dtype=strain.dtype, device=strain.device) + strain
    cell = graph.cell @ deform
    x = torch.einsum("nk,nkl->nl", graph.positions, deform[graph.batch])
    shifts = torch.einsum("ek,ekl->el", graph.unit_shifts, cell[graph.batch[graph.edge_i]])
    return GraphBatch(positions=x, species=graph.species, batch=graph.batch,
                      edge_i=graph.edge_i, edge_j=graph.edge_j, shifts=shifts,
                      unit_shifts=graph.unit_shifts, cell=cell, n_graphs=graph.n_graphs)


def energy_forces_stress(member: torch.nn.Module, graph: GraphBatch
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One model on periodic graphs: energies (G,) eV (float64, with the reference energies),
    forces (Ntot, 3) eV/Å and stress (G, 3, 3) eV/Å³.

    ``member`` is an :class:`alflow.mlip.model.EnergyModel`; every graph must be periodic in
    all three directions (a finite cell has no volume).
    """
    volume = torch.linalg.det(graph.cell).abs()
    if bool((volume <= 0).any()):
        raise ValueError("stress needs a periodic cell of positive volume for every graph")
    with torch.enable_grad():
        x = graph.positions.detach().requires_grad_(True)
        strain = torch.zeros(graph.n_graphs, 3, 3, dtype=x.dtype, device=x.device,
                             requires_grad=True)
        sym = 0.5 * (strain + strain.transpose(1, 2))
        g = strained(GraphBatch(x, graph.species, graph.batch, graph.edge_i, graph.edge_j,
                                graph.shifts, graph.unit_shifts, graph.cell, graph.n_graphs),
                     sym)
        e_int = member(g)
        gx, gs = torch.autograd.grad(e_int.sum(), (x, strain))
    energy = e_int.detach().double() + member.reference_energy(graph)
    return energy, -gx, gs / volume[:, None, None]


def committee_stress(members: list[torch.nn.Module], graph: GraphBatch
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every member: energies (M, G) eV, forces (M, Ntot, 3) eV/Å, stress (M, G, 3, 3) eV/Å³."""
    out = [energy_forces_stress(m, graph) for m in members]
    return tuple(torch.stack([o[k] for o in out]) for k in range(3))


__all__ = ["committee_stress", "energy_forces_stress", "strained"]
