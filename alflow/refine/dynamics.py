"""Periodic MD of R replicas in torch for refinement: NVT Langevin, NVE velocity Verlet.

Units follow ASE and :mod:`alflow.sampling.langevin`: positions Å, masses amu, energies eV,
time steps fs (converted with ``ase.units.fs``), velocities in Å/(ASE time). Positions are not
wrapped into the box (the minimum image is taken on pair distances), so displacements are
the true ones. Every replica shares one cubic cell.

- :func:`lattice_start`: a simple-cubic lattice filling the box, rattled per replica.
- :func:`nvt`: BAOAB Langevin by :func:`alflow.sampling.langevin.run_langevin` on the model
  at its current parameters (no parameter gradient).
- :func:`vv_step`: one velocity-Verlet step; with −dt it is the exact inverse of the step
  (up to rounding), which the adjoint uses to walk the trajectory back.
- :func:`nve`: velocity-Verlet frames without a graph.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from ase import units
from ase.data import atomic_numbers

from alflow.periodic import VerletList
from alflow.refine.potential import FixedPotential, TrainableLJ
from alflow.sampling.langevin import run_langevin


@dataclass
class Box:
    """The simulated system: ``n_atoms`` of ``element`` (mass amu) in a cube of edge Å."""

    element: str
    mass_amu: float
    n_atoms: int
    edge_a: float
    temperature_k: float

    def cell(self, replicas: int, dtype=torch.float64) -> torch.Tensor:
        """Cells (R, 3, 3) Å."""
        return (torch.eye(3, dtype=dtype) * self.edge_a).expand(replicas, 3, 3).contiguous()

    def masses(self, dtype=torch.float64) -> torch.Tensor:
        """Masses (N,) amu."""
        return torch.full((self.n_atoms,), self.mass_amu, dtype=dtype)

    @property
    def numbers(self) -> np.ndarray:
        return np.full(self.n_atoms, atomic_numbers[self.element])

    @property
    def kt(self) -> float:
        """k_B T, eV."""
        return units.kB * self.temperature_k


def lattice_start(box: Box, replicas: int, seed: int, rattle: float = 0.02) -> torch.Tensor:
    """Positions (R, N, 3) Å: the first N sites of a simple-cubic lattice filling the box
    (unstable for a Lennard-Jones solid, so it melts fast), rattled by ``rattle`` × spacing."""
    n = math.ceil(box.n_atoms ** (1 / 3) - 1e-9)
    spacing = box.edge_a / n
    grid = torch.stack(torch.meshgrid(*[torch.arange(n)] * 3, indexing="ij"), -1)
    sites = (grid.reshape(-1, 3)[: box.n_atoms].double() + 0.5) * spacing
    gen = torch.Generator().manual_seed(int(seed))
    noise = torch.randn((replicas, box.n_atoms, 3), generator=gen, dtype=torch.float64)
    return sites[None] + rattle * spacing * noise


@dataclass
class State:
    """Positions and velocities (R, N, 3): Å and Å/(ASE time)."""

    positions: torch.Tensor
    velocities: torch.Tensor


@dataclass
class NVTSample:
    """NVT frames (F, R, N, 3) Å and the state at the end of the run."""

    frames: torch.Tensor
    end: State


def nvt(model: TrainableLJ, box: Box, start: torch.Tensor, velocities: torch.Tensor | None,
        dt_fs: float, steps: int, friction_per_fs: float, record_every: int, seed: int,
        skin: float = 1.0) -> NVTSample:
    """Langevin NVT of the replicas in ``start`` (R, N, 3) Å at ``box.temperature_k``."""
    r = start.shape[0]
    pot = FixedPotential(model, box.numbers, box.cell(1)[0], skin)
    traj = run_langevin(pot, start.detach().numpy(), box.masses().numpy(), box.temperature_k,
                        dt_fs, steps, friction_per_fs=friction_per_fs,
                        record_every=record_every, seed=seed,
                        velocities=None if velocities is None else velocities.numpy())
    frames = torch.as_tensor(traj.positions)
    assert frames.shape[1] == r
    return NVTSample(frames=frames, end=State(torch.as_tensor(traj.final_positions),
                                              torch.as_tensor(traj.final_velocities)))


def forces(model: TrainableLJ, x: torch.Tensor, cell: torch.Tensor, pairs: VerletList,
           create_graph: bool) -> torch.Tensor:
    """Forces (R, N, 3) eV/Å; with ``create_graph`` differentiable in x and the parameters."""
    with torch.enable_grad():
        xg = x if x.requires_grad else x.detach().requires_grad_(True)
        e = model.energy(xg, cell, pairs(xg, cell))
        (g,) = torch.autograd.grad(e.sum(), xg, create_graph=create_graph)
    return -g


def vv_step(model: TrainableLJ, x: torch.Tensor, v: torch.Tensor, f: torch.Tensor,
            inv_m: torch.Tensor, dt: float, cell: torch.Tensor, pairs: VerletList,
            create_graph: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One velocity-Verlet step (dt in ASE time) from x, v with forces f at x: returns
    x', v', f(x'). A negative dt steps back exactly (up to rounding)."""
    vh = v + 0.5 * dt * f * inv_m
    x1 = x + dt * vh
    f1 = forces(model, x1, cell, pairs, create_graph)
    return x1, vh + 0.5 * dt * f1 * inv_m, f1


def nve(model: TrainableLJ, box: Box, start: State, dt_fs: float, steps: int,
        record_every: int, skin: float = 1.0, keep: int = 0
        ) -> tuple[torch.Tensor, torch.Tensor, State, State]:
    """Velocity-Verlet frames without a graph: positions and velocities (F, R, N, 3) at steps
    0, record_every, ..., the end state, and the state at step ``keep``."""
    x, v = start.positions.detach(), start.velocities.detach()
    cell = box.cell(x.shape[0], x.dtype)
    pairs = VerletList(model.cutoff, skin)
    inv_m = (1.0 / box.masses(x.dtype))[:, None]
    dt = dt_fs * units.fs
    f = forces(model, x, cell, pairs, False).detach()
    xs, vs, kept = [x], [v], State(x, v)
    for step in range(1, steps + 1):
        x, v, f = (t.detach() for t in vv_step(model, x, v, f, inv_m, dt, cell, pairs))
        if step == keep:
            kept = State(x, v)
        if step % record_every == 0:
            xs.append(x)
            vs.append(v)
    return torch.stack(xs), torch.stack(vs), State(x, v), kept
