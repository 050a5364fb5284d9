"""Langevin dynamics of crystals with the centre of mass fixed, batched over replicas (NVT).

Why not :mod:`alflow.sampling.langevin`: that integrator works in ASE units on clusters with
biases and stops replicas on committee uncertainty; Einstein-crystal integration needs other
things: a different potential per replica (one coupling λ each), the centre of mass held
exactly fixed (the Frenkel–Ladd reference is defined with it fixed, and a free crystal drifts
off its lattice sites), unwrapped positions (sites stay matched to atoms) and any consistent
unit system (reduced Lennard-Jones or eV/Å/amu). For NPT (the volume at a pressure) see
:mod:`alflow.solids.npt`.

BAOAB splitting (Leimkuhler and Matthews 2013). Equal masses: forces, velocities and noise are
projected on zero total momentum, so the centre of mass never moves and the stationary
distribution is Boltzmann's restricted to the fixed centre of mass (the constraint is linear).
Units: positions L, energies E, mass M, time L√(M/E); ``kt`` in E (k_B T).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

ForceFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def autograd_forces(energy: Callable[[torch.Tensor], torch.Tensor]) -> ForceFn:
    """(energies (B,), forces (B, N, 3)) of a differentiable batched energy."""
    def fn(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            e = energy(x)
            (g,) = torch.autograd.grad(e.sum(), x)
        return e.detach(), -g
    return fn


def remove_mean(v: torch.Tensor) -> torch.Tensor:
    """v (B, N, 3) minus its mean over atoms (zero total momentum/force for equal masses)."""
    return v - v.mean(-2, keepdim=True)


@dataclass
class LangevinRun:
    """Recorded after each sampled step: ``observables`` (S, B, ...) stacked from ``observe``;
    final ``positions``/``velocities`` (B, N, 3)."""

    observables: torch.Tensor
    positions: torch.Tensor
    velocities: torch.Tensor


def langevin_fixed_com(forces: ForceFn, positions: torch.Tensor, kt: float | torch.Tensor,
                       dt: float, n_steps: int, friction: float = 1.0, mass: float = 1.0,
                       n_equil: int = 0, every: int = 1,
                       observe: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
                       | None = None, generator: torch.Generator | None = None,
                       velocities: torch.Tensor | None = None) -> LangevinRun:
    """Run ``n_equil`` + ``n_steps`` BAOAB steps of B replicas with the centre of mass fixed.

    ``forces(x)`` returns (energies (B,), forces (B, N, 3)); ``kt`` a float or (B,) tensor
    (one temperature per replica); ``friction`` γ in 1/time. ``observe(x, energies)`` -> (B, ...)
    is recorded every ``every`` steps after equilibration (default: the energies).
    """
    x = positions.detach().clone()
    kt_b = torch.as_tensor(kt, dtype=x.dtype).expand(x.shape[0])[:, None, None]
    sd = torch.sqrt(kt_b / mass)
    if velocities is None:
        velocities = remove_mean(sd * torch.randn(x.shape, dtype=x.dtype, generator=generator))
    v = velocities.clone()
    c1 = math.exp(-friction * dt)
    c2 = math.sqrt(1 - c1 * c1)
    e, f = forces(x)
    f = remove_mean(f)
    rec = []
    for step in range(n_equil + n_steps):
        v = v + 0.5 * dt * f / mass
        x = x + 0.5 * dt * v
        noise = remove_mean(torch.randn(x.shape, dtype=x.dtype, generator=generator))
        v = c1 * v + c2 * sd * noise
        x = x + 0.5 * dt * v
        e, f = forces(x)
        f = remove_mean(f)
        v = v + 0.5 * dt * f / mass
        k = step - n_equil
        if k >= 0 and k % every == 0:
            rec.append((e if observe is None else observe(x, e)).detach())
    return LangevinRun(torch.stack(rec), x, v)


__all__ = ["LangevinRun", "autograd_forces", "langevin_fixed_com", "remove_mean"]
