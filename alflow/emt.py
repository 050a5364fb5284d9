"""ASE's effective-medium theory (EMT) potential in torch: batched and differentiable.

The same energy as :class:`ase.calculators.emt.EMT` (default ``asap_cutoff=False``; Jacobsen,
Stoltze and Nørskov, Surf. Sci. 366, 394 (1996)) for a finite cluster, with ASE's parameter
table and cutoff, so that samplers and flows can evaluate thousands of configurations per call;
``energy`` is differentiable (autograd), ``evaluate`` gives the forces from their analytic
derivative (1.8× faster than autograd for 16–48 Ag6 clusters). ASE's calculator loops over
atoms in Python, one configuration at a time: too slow for annealed importance sampling or a
quench of every flow sample. Checked against ASE to 1e-10 eV and eV/Å (tests/test_emt.py).
Non-periodic only.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from ase.calculators.emt import beta, parameters
from ase.data import chemical_symbols
from ase.units import Bohr

from alflow.errors import InputError
from alflow.potential import PotentialOutput


def _cutoff() -> tuple[float, float, float]:
    """ASE's logistic cutoff (midpoint rc, slope acut, list radius), all Å, 1/Å."""
    r1nn = beta * max(p[1] for p in parameters.values()) * Bohr
    rc = r1nn * 0.5 * (math.sqrt(3.0) + 2.0)
    acut = math.log(1.0 / 1e-4 - 1.0) / (2.0 * r1nn - rc)
    return rc, acut, rc + 0.5


def cohesive(sig1: torch.Tensor, p: dict[str, torch.Tensor]
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cohesive energy per atom (eV) from the neighbour density sum σ₁ (..., N), with the
    neighbour-sphere radius shift ds (Å) and the atoms without neighbours (whose term is 0);
    ``p``: :class:`EMT`'s per-atom parameters."""
    lonely = sig1 <= 0.0
    ds = -torch.log(torch.where(lonely, torch.ones_like(sig1), sig1 * p["_inv12g1"])) / (
        beta * p["_eta2"])
    lds = p["_lam"] * ds
    e_c = p["_e0"] * (1.0 + lds) * torch.exp(-lds) + 6.0 * p["_v0"] * torch.exp(
        -p["_kappa"] * ds)
    return torch.where(lonely, torch.zeros_like(e_c), e_c), ds, lonely


class EMT:
    """EMT energy of clusters with fixed ``numbers``: (B, N, 3) Å -> (B,) eV.

    Supports ASE's EMT elements (Al, Cu, Ag, Au, Ni, Pd, Pt; H, C, N, O not for serious use).
    """

    def __init__(self, numbers) -> None:
        self.numbers = np.asarray(numbers)
        bad = sorted({chemical_symbols[z] for z in self.numbers
                      if chemical_symbols[z] not in parameters})
        if bad:
            raise InputError(f"EMT has no parameters for {', '.join(bad)}; it supports "
                             f"{', '.join(parameters)}")
        self.rc, self.acut, self.rc_list = _cutoff()
        table = np.array([parameters[chemical_symbols[z]] for z in self.numbers], dtype=float)
        e0, s0, v0, eta2, kappa, lam, n0 = table.T
        s0, eta2, kappa, lam, n0 = s0 * Bohr, eta2 / Bohr, kappa / Bohr, lam / Bohr, n0 / Bohr**3
        # gamma1, gamma2: sums over the first three fcc shells (12, 6, 24 sites)
        shells = np.array([12.0, 6.0, 24.0])
        r = beta * s0[:, None] * np.sqrt([1.0, 2.0, 3.0])
        x = shells * self._theta_np(r) / 12.0
        gamma1 = (x * np.exp(-eta2[:, None] * (r - beta * s0[:, None]))).sum(1)
        gamma2 = (x * np.exp(-kappa[:, None] / beta * (r - beta * s0[:, None]))).sum(1)
        # per-atom parameters (N,), chi (N, N)
        self._par = {k: torch.as_tensor(v, dtype=torch.float64) for k, v in {
            "_e0": e0, "_s0": s0, "_v0": v0, "_eta2": eta2, "_kappa": kappa, "_lam": lam,
            "_inv12g1": 1.0 / (12.0 * gamma1), "_nh": -0.5 * v0 / gamma2,  # -V0 / (2 gamma2)
            "_chi": n0[None, :] / n0[:, None],  # chi[i, j] = n0_j / n0_i
        }.items()}

    def _theta_np(self, r: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(self.acut * (r - self.rc)))

    def energy(self, positions: torch.Tensor) -> torch.Tensor:
        """Energies (B,) eV of clusters (B, N, 3) Å; differentiable (autograd)."""
        return self._terms(positions, forces=False)[0]

    def evaluate(self, positions: torch.Tensor) -> PotentialOutput:
        """Energies (B,) eV and forces (B, N, 3) eV/Å, the forces from the analytic
        derivative of every term (about half the cost of autograd on small clusters)."""
        with torch.no_grad():
            e, f = self._terms(positions.detach(), forces=True)
        return PotentialOutput(energy=e, forces=f)

    def _terms(self, positions: torch.Tensor, forces: bool
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = positions
        dt = x.dtype
        p = {k: v.to(dtype=dt, device=x.device) for k, v in self._par.items()}
        n = x.shape[-2]
        eye = torch.eye(n, dtype=torch.bool, device=x.device)
        d = x[..., None, :, :] - x[..., :, None, :]  # d[b, i, j] = x_j - x_i
        r = (d.pow(2).sum(-1) + eye.to(dt)).sqrt()  # padded diagonal keeps the gradient finite
        near = (r < self.rc_list) & ~eye
        w = torch.where(near, torch.sigmoid(-self.acut * (r - self.rc)), torch.zeros_like(r))
        chi = p["_chi"]
        # sigma1_i = sum_j exp(-eta2_j (r - beta s0_j)) chi_ij w_ij
        a = torch.exp(-p["_eta2"] * (r - beta * p["_s0"])) * chi * w
        sig1 = a.sum(-1)
        e_c, ds, lonely = cohesive(sig1, p)
        lds = p["_lam"] * ds
        # atomic-sphere correction, pair part: both directions of each ordered pair
        k_i, k_j = p["_kappa"][:, None], p["_kappa"][None, :]
        s0_i, s0_j = p["_s0"][:, None], p["_s0"][None, :]
        es = p["_nh"][:, None] * torch.exp(-k_j * (r / beta - s0_j)) * chi * w
        eo = p["_nh"][None, :] * torch.exp(-k_i * (r / beta - s0_i)) / chi * w
        e_as = 0.5 * (es + eo).sum(-1)
        energy = (e_c + e_as - p["_e0"]).sum(-1)
        if not forces:
            return energy, None
        # dE/dr of each ordered pair (i, j): through sigma1_i and the pair terms; w' = −acut
        # w (1 − w)
        dw = -self.acut * (1.0 - w)
        de_dds = (-p["_e0"] * p["_lam"] ** 2 * ds * torch.exp(-lds)
                  - 6.0 * p["_v0"] * p["_kappa"] * torch.exp(-p["_kappa"] * ds))
        c = torch.where(lonely, torch.zeros_like(sig1),
                        -de_dds / (beta * p["_eta2"] * torch.where(lonely, 1.0, sig1)))
        g = (c[..., :, None] * a * (-p["_eta2"] + dw)
             + 0.5 * (es * (-k_j / beta + dw) + eo * (-k_i / beta + dw)))
        g = g + g.transpose(-1, -2)  # r_ij and r_ji are one distance
        f = ((g / r)[..., None] * d).sum(-2)
        return energy, f
