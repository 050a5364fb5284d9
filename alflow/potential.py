"""The batched potential-energy interface that MD, MCMC and flows sample on.

A :class:`Potential` is a potential energy surface for one system (fixed atomic numbers):
``energy(positions)`` maps a torch tensor of shape (B, N, 3) in Å to energies (B,) in eV.
Torch potentials are differentiable, so forces are ``-dE/dx`` by autograd; potentials that
are not (an ASE calculator) implement ``evaluate`` with their own forces.
``evaluate`` returns a :class:`PotentialOutput`, whose ``force_dev`` (B,) in eV/Å is the
committee uncertainty where the potential has one (the MLIP committee), else None.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator


@dataclass
class PotentialOutput:
    """Energies (B,) eV, forces (B, N, 3) eV/Å, optional max-atom force deviation (B,) eV/Å."""

    energy: torch.Tensor
    forces: torch.Tensor
    force_dev: torch.Tensor | None = None


@runtime_checkable
class Potential(Protocol):
    """Batched potential energy of one system: (B, N, 3) Å -> (B,) eV."""

    numbers: np.ndarray

    def energy(self, positions: torch.Tensor) -> torch.Tensor: ...


def evaluate(potential: Potential, positions: torch.Tensor) -> PotentialOutput:
    """Energies and forces of a batch; uses ``potential.evaluate`` if it has one, else autograd."""
    own = getattr(potential, "evaluate", None)
    if own is not None:
        return own(positions)
    with torch.enable_grad():
        x = positions.detach().requires_grad_(True)
        e = potential.energy(x)
        (g,) = torch.autograd.grad(e.sum(), x)
    return PotentialOutput(energy=e.detach(), forces=-g.detach())


class LennardJones:
    """Plain Lennard-Jones cluster energy in torch (no cutoff): sigma in Å, epsilon in eV.

    Equals ``ase.calculators.lj.LennardJones(sigma, epsilon, rc=large, smooth=False)`` for a
    finite cluster.
    """

    def __init__(self, numbers, sigma: float = 3.405, epsilon: float = 0.0103):
        self.numbers = np.asarray(numbers)
        self.sigma = sigma
        self.epsilon = epsilon

    def energy(self, positions: torch.Tensor) -> torch.Tensor:
        n = positions.shape[-2]
        i, j = torch.triu_indices(n, n, offset=1, device=positions.device)
        r2 = ((positions[..., i, :] - positions[..., j, :]) ** 2).sum(-1)
        s6 = (self.sigma**2 / r2) ** 3
        return (4.0 * self.epsilon * (s6 * s6 - s6)).sum(-1)


class AseCalculatorPotential:
    """Wrap an ASE calculator as a (non-differentiable) batched potential, one call per config.

    ``make_calc`` builds a fresh calculator; ``template`` supplies numbers, cell and pbc.
    ``calls`` counts the calculations performed (for oracle-cost accounting).
    """

    def __init__(self, make_calc: Callable[[], Calculator], template: Atoms):
        self.template = template.copy()
        self.template.calc = None
        self.numbers = np.asarray(template.numbers)
        self._calc = make_calc()
        self.calls = 0

    def _one(self, pos: np.ndarray) -> tuple[float, np.ndarray]:
        atoms = self.template.copy()
        atoms.positions = pos
        atoms.calc = self._calc
        self.calls += 1
        return atoms.get_potential_energy(), atoms.get_forces()

    def evaluate(self, positions: torch.Tensor) -> PotentialOutput:
        p = positions.detach().cpu().double().numpy()
        es, fs = zip(*(self._one(x) for x in p), strict=True)
        dt = positions.dtype
        return PotentialOutput(
            energy=torch.tensor(np.array(es), dtype=dt, device=positions.device),
            forces=torch.tensor(np.array(fs), dtype=dt, device=positions.device),
        )

    def energy(self, positions: torch.Tensor) -> torch.Tensor:
        """Energies (B,) eV, differentiable: the gradient is −forces from the calculator, so
        reverse-KL flow training works on an ASE calculator too."""
        return _CalculatorEnergy.apply(positions, self)


class _CalculatorEnergy(torch.autograd.Function):
    """E(x) from an :class:`AseCalculatorPotential` with dE/dx = −F (one call per config)."""

    @staticmethod
    def forward(ctx, positions: torch.Tensor, pot: AseCalculatorPotential) -> torch.Tensor:
        out = pot.evaluate(positions)
        ctx.save_for_backward(out.forces)
        return out.energy

    @staticmethod
    def backward(ctx, grad_e: torch.Tensor) -> tuple[torch.Tensor, None]:
        (forces,) = ctx.saved_tensors
        return -grad_e[:, None, None] * forces, None
