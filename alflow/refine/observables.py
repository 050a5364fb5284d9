"""Observables of periodic MD, differentiable in the positions and velocities (pure torch).

- :func:`rdf`: g(r) of all pairs from a smooth histogram (a normalised Gaussian of width w
  per pair distance), per configuration.
- :func:`msd` and :func:`diffusion_from_msd`: self-diffusion D = slope(MSD)/6 (Å²/ps).
- :func:`vacf`, :func:`diffusion_from_vacf`: the velocity autocorrelation over all time
  origins and Green–Kubo D = ⅓∫VACF dt (Å²/ps).
- :func:`vdos`: the vibrational density of states, the Hann-windowed cosine transform of the
  normalised VACF, normalised to unit area over the frequencies given (THz).
- :func:`mean_and_error`: mean over replicas and its standard error.

Frames are (F, R, N, 3): F frames of R independent replicas of N atoms; velocities in ASE
units (Å/(ASE time)), converted here to Å/ps. There is no dipole model for the systems
refined here, so no IR spectrum.
"""

from __future__ import annotations

import math

import torch
from ase import units

from alflow.periodic import PairList, pair_distances, pair_list

#: ASE velocity unit -> Å/ps
VELOCITY_A_PER_PS = units.fs * 1000.0


def rdf(positions: torch.Tensor, cell: torch.Tensor, r: torch.Tensor, width: float,
        pairs: PairList | None = None) -> torch.Tensor:
    """g(r) (B, M) at radii r (M,) Å of configurations (B, N, 3) Å in cells (B, 3, 3) Å.

    ``g(r) = V / (N(N−1)/2) · Σ_pairs 𝒩(r; r_ij, w) / (4π r²)``, which tends to the histogram
    estimate as w → 0; r + 4w must not exceed half the cell's width (pairs are built to it).
    """
    b, n = positions.shape[:2]
    rc = float(r.max()) + 4 * width
    pairs = pair_list(positions, cell, rc) if pairs is None else pairs
    d = pair_distances(positions, cell, pairs)
    kern = torch.exp(-0.5 * ((r[None, :] - d[:, None]) / width) ** 2) / (
        width * math.sqrt(2 * math.pi))
    counts = torch.zeros(b, r.shape[0], dtype=kern.dtype).index_add(0, pairs.batch, kern)
    volume = torch.linalg.det(cell).abs()
    return counts * (volume / (n * (n - 1) / 2))[:, None] / (4 * math.pi * r**2)


def msd(positions: torch.Tensor) -> torch.Tensor:
    """Mean-squared displacement (F, R) Å² from frame 0, averaged over atoms (unwrapped
    positions)."""
    return ((positions - positions[:1]) ** 2).sum(-1).mean(-1)


def diffusion_from_msd(positions: torch.Tensor, time_ps: torch.Tensor,
                       skip_fraction: float = 0.3) -> torch.Tensor:
    """Self-diffusion D (R,) Å²/ps: least-squares slope of the MSD over the frames after the
    first ``skip_fraction`` of the time (the ballistic start), divided by 6."""
    m = msd(positions)
    keep = time_ps >= skip_fraction * time_ps[-1]
    t = time_ps[keep] - time_ps[keep].mean()
    y = m[keep] - m[keep].mean(0)
    return (t[:, None] * y).sum(0) / (t * t).sum() / 6.0


def vacf(velocities: torch.Tensor, max_lag: int) -> torch.Tensor:
    """⟨v(t0)·v(t0 + τ)⟩ (L, R) in (Å/ps)² for lags 0..max_lag−1 frames, averaged over atoms
    and all time origins of each replica."""
    v = velocities * VELOCITY_A_PER_PS
    f = v.shape[0]
    if not 1 <= max_lag <= f:
        raise ValueError(f"max_lag must be in [1, {f}], got {max_lag}")
    return torch.stack([(v[: f - k] * v[k:]).sum(-1).mean((0, -1)) for k in range(max_lag)])


def diffusion_from_vacf(c: torch.Tensor, dt_ps: float) -> torch.Tensor:
    """Green–Kubo D (R,) Å²/ps = ⅓ ∫ VACF dt by the trapezoid rule; c (L, R) (Å/ps)²."""
    return torch.trapezoid(c, dx=dt_ps, dim=0) / 3.0


def vdos(c: torch.Tensor, dt_ps: float, freq_thz: torch.Tensor) -> torch.Tensor:
    """VDOS (M, R) at frequencies (M,) THz from a VACF c (L, R): the cosine transform of
    c/c(0) with a Hann half-window, normalised to unit area (1/THz) over ``freq_thz``."""
    lag = c.shape[0]
    t = torch.arange(lag, dtype=c.dtype) * dt_ps
    window = 0.5 * (1 + torch.cos(math.pi * torch.arange(lag, dtype=c.dtype) / lag))
    weights = torch.full((lag,), dt_ps, dtype=c.dtype)
    weights[0] = weights[-1] = dt_ps / 2
    cn = c / c[:1] * (window * weights)[:, None]
    spec = 4 * torch.cos(2 * math.pi * freq_thz[:, None] * t[None, :]) @ cn
    area = torch.trapezoid(spec, freq_thz, dim=0)
    return spec / area


def mean_and_error(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean over the leading (replica) axis and its standard error (std / √R)."""
    r = values.shape[0]
    return values.mean(0), values.detach().std(0) / math.sqrt(r)
