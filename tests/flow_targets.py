"""Targets with exact normalising constants for the flow / MCMC / estimate tests."""

from __future__ import annotations

import math

import numpy as np
import torch
from ase.units import kB

from alflow.flows.coordinates import FrameCoordinates


class HarmonicFrame:
    """A cluster potential harmonic in its three-atom-frame coordinates z (rigid-body
    invariant): U = kT/2 Σ ((z − μ)/s)² eV at ``temperature_k``. Its configurational integral
    ∫ J(z) e^{−U/kT} dz = Π √(2π) s · (μ_b² + s_b²) · μ_c (J = z_b² x_c; truncation at z_b,
    x_c ≤ 0 negligible for μ/s ≥ 20)."""

    def __init__(self, n_atoms: int = 5, s: float = 0.06, temperature_k: float = 50.0,
                 seed: int = 0):
        rng = np.random.default_rng(seed)
        ref = rng.normal(scale=1.6, size=(n_atoms, 3))
        while np.min(np.linalg.norm(ref[:, None] - ref[None], axis=-1)
                     + 10 * np.eye(n_atoms)) < 1.8:
            ref = rng.normal(scale=1.6, size=(n_atoms, 3))
        self.reference = ref
        self.numbers = np.full(n_atoms, 18)
        self.coords = FrameCoordinates(ref, self.numbers)
        z0, _ = self.coords.forward(torch.tensor(ref)[None])
        self.mu = z0[0]
        self.s = torch.full_like(self.mu, s) * torch.linspace(0.8, 1.2, len(self.mu),
                                                              dtype=torch.float64)
        self.temperature_k = temperature_k
        self.kt = kB * temperature_k

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        z, _ = self.coords.forward(x.double())
        return 0.5 * self.kt * (((z - self.mu) / self.s) ** 2).sum(-1)

    def log_z(self) -> float:
        """ln ∫ J e^{−U/kT} dz."""
        mu, s = self.mu.numpy(), self.s.numpy()
        return float(np.sum(np.log(math.sqrt(2 * math.pi) * s))
                     + math.log(mu[0] ** 2 + s[0] ** 2) + math.log(mu[1]))

    def free_energy(self) -> float:
        """F in the alflow.estimate convention (σ = 1: the random reference has no symmetry)."""
        return -self.kt * (math.log(8 * math.pi**2) + self.log_z())

    def exact_samples(self, n: int, seed: int = 0) -> np.ndarray:
        """Exact samples (n, N, 3) Å: z from the tilted density by rejection (weights J)."""
        g = torch.Generator().manual_seed(seed)
        out = []
        cap = float((self.mu[0] + 6 * self.s[0]) ** 2 * (self.mu[1] + 6 * self.s[1]))
        while sum(len(o) for o in out) < n:
            z = self.mu + self.s * torch.randn(4 * n, len(self.mu), generator=g,
                                               dtype=torch.float64)
            j = z[:, 0] ** 2 * z[:, 1]
            keep = torch.rand(4 * n, generator=g, dtype=torch.float64) * cap < j
            out.append(z[keep])
        z = torch.cat(out)[:n]
        x, _ = self.coords.inverse(z)
        return x.numpy()

    def exact_moments(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and variance of z under the Cartesian Boltzmann measure (tilted by J)."""
        mu, s = self.mu.numpy().copy(), self.s.numpy()
        var = s**2
        m0, s0 = mu[0], s[0]
        e2, e3, e4 = m0**2 + s0**2, m0**3 + 3 * m0 * s0**2, m0**4 + 6 * m0**2 * s0**2 + 3 * s0**4
        mean, v = mu.copy(), var.copy()
        mean[0], v[0] = e3 / e2, e4 / e2 - (e3 / e2) ** 2
        m1, s1 = mu[1], s[1]
        e1, e2b, e3b = m1, m1**2 + s1**2, m1**3 + 3 * m1 * s1**2
        mean[1], v[1] = e2b / e1, e3b / e1 - (e2b / e1) ** 2
        return mean, v
