"""Classical harmonic free energy of a crystal from its Hessian, centre of mass treated exactly.

For N atoms of a translation-invariant potential U in volume V, the configurational integral
factors into the centre of mass (V) and the rest; fixing the centre of mass with δ(ū), ū the
mean displacement, the harmonic crystal U₀ + ½uᵀHu gives exactly

    βA = βU₀ − ln V − (3/2) ln N − ½ Σ' ln(2π / (βω²_k)) + 3N ln Λ,

Σ' over the 3N − 3 non-zero eigenvalues ω²_k of H (energy/length²; the three zero modes are
the translations) and Λ the thermal wavelength (a length; the reported free energies take
Λ = 1 length unit, a constant that cancels in any difference at the same T and N). The
Einstein crystal U₀ + k Σ|u_i|² is the special case ω²_k = 2k.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch


def hessian(energy: Callable[[torch.Tensor], torch.Tensor], sites: np.ndarray) -> np.ndarray:
    """Hessian (3N, 3N) of ``energy`` (batched, (1, N, 3) -> (1,)) at ``sites`` (N, 3)."""
    x0 = torch.tensor(np.asarray(sites, float), dtype=torch.float64)
    n = x0.shape[0]
    h = torch.autograd.functional.hessian(lambda x: energy(x.reshape(1, n, 3)).sum(),
                                          x0.reshape(-1))
    h = h.detach().numpy()
    return 0.5 * (h + h.T)


def site_spring(energy: Callable[[torch.Tensor], torch.Tensor], sites: np.ndarray,
                atom: int = 0) -> float:
    """Einstein spring k (energy/length², U_E = k Σ|u|²) matching the curvature felt by one
    atom moved alone from its site: k = tr(H_aa) / 6."""
    x0 = torch.tensor(np.asarray(sites, float), dtype=torch.float64)[None]
    tr = 0.0
    for c in range(3):
        v = torch.zeros_like(x0)
        v[0, atom, c] = 1.0
        _, hv = torch.autograd.functional.hvp(lambda x: energy(x).sum(), x0, v)
        tr += float(hv[0, atom, c])
    return tr / 6


def harmonic_free_energy(eigenvalues: np.ndarray, u0: float, kt: float, volume: float,
                         n_atoms: int, wavelength: float = 1.0) -> float:
    """A (energy units) of the harmonic crystal with Hessian ``eigenvalues`` (the 3 smallest
    in magnitude are dropped as translations), lattice energy ``u0``, temperature ``kt``."""
    w = np.sort(np.abs(np.asarray(eigenvalues, float)))[3:]
    if (w <= 0).any() or len(w) != 3 * n_atoms - 3:
        raise ValueError("need 3N eigenvalues with 3N − 3 positive (a mechanically stable "
                         "crystal)")
    beta_a = (u0 / kt - math.log(volume) - 1.5 * math.log(n_atoms)
              - 0.5 * np.log(2 * math.pi * kt / w).sum() + 3 * n_atoms * math.log(wavelength))
    return kt * float(beta_a)


def einstein_free_energy(spring: float, u0: float, kt: float, volume: float, n_atoms: int,
                         wavelength: float = 1.0) -> float:
    """A of the Einstein crystal U₀ + k Σ|u_i|² with the centre of mass fixed, then freed."""
    beta_a = (u0 / kt - math.log(volume) - 1.5 * math.log(n_atoms)
              - 1.5 * (n_atoms - 1) * math.log(math.pi * kt / spring)
              + 3 * n_atoms * math.log(wavelength))
    return kt * beta_a


__all__ = ["einstein_free_energy", "harmonic_free_energy", "hessian", "site_spring"]
