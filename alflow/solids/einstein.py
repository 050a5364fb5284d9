"""Einstein-crystal thermodynamic integration (Frenkel–Ladd) for crystal free energies.

API (what other modules and benchmarks call):

* :func:`frenkel_ladd` ``(energy, sites, cell, kt, ...) -> TIResult``: Helmholtz free energy
  per atom A/N at fixed volume, with its error bar, for any batched differentiable energy
  ``energy(x (B, N, 3)) -> (B,)``.
* :func:`delta_g` ``(n_atoms, kt, pressure, ..., model=None) -> DeltaG``: ΔG = G(hcp) −
  G(fcc) per atom at (T, P), with error (fields ``delta_g_per_atom``, ``err``, ``units``;
  ``fcc``/``hcp`` the per-phase :class:`Gibbs`): Lennard-Jones crystals in reduced units
  (:mod:`alflow.solids.lj`) by default, ``model=emt_model("Cu")``
  (:mod:`alflow.solids.models`) for EMT copper (eV, Å).
  :func:`gibbs` (:func:`gibbs_lj`) gives one phase.

Path: U_λ = λU + (1 − λ)U_E for λ ∈ [0, 1], U_E = U(sites) + k Σ|x_i − site_i|², sampled by
Langevin dynamics with the centre of mass fixed (:mod:`alflow.solids.md`). Then

    A = A_E + ∫₀¹ ⟨U − U_E⟩_λ dλ,

A_E the Einstein crystal's exact free energy with the centre of mass fixed and then freed
(:func:`alflow.solids.harmonic.einstein_free_energy`: −kT ln V − (3/2)kT ln N from the centre
of mass, (3N − 3) Gaussian modes). The integral is Gauss–Legendre in λ; each node's mean has
an error from block averages of its time series (and independent copies), propagated with the
quadrature weights. A node's error is the larger of the block errors with 8 and with 4
blocks per copy: at 600 steps the blocks of 8 are shorter than the slowest correlations of
the intermediate-λ nodes, and the 8-block error alone understated the scatter of G between
seeds by a factor 1.7 (32-atom LJ hcp, T* = 0.1, P* = 2). The quadrature error is estimated
as the difference between the Gauss–Legendre sum and the integral of the natural cubic
spline through the same node means (extrapolated to λ = 0 and 1), and added to the error bar
(about 1e-5 ε per atom on the LJ crystals: small). The spring k defaults to the curvature one
atom feels moved alone from its site, so that U_E resembles U near the lattice.

Gibbs free energy: G(T, P) = A(T, V*) + PV*, V* the volume whose NVT pressure ⟨P⟩ is P
(linear fit of ⟨P⟩ at the static lattice's volume V₀ at P and at V₀ + ΔV, V₀ + 1.5ΔV, ΔV the
expansion that relieves the thermal pressure at V₀ along the static dP/dV, at least 0.5 % of
V₀; cell scaled isotropically, hcp at ideal c/a). The fit's error in V* (weighted least
squares with the pressures' errors) enters G only at second order, since dG/dV = 0 at V*:
its error bar gets ½|dP/dV|·var(V*) (per atom, about 1e-6 ε on the LJ crystals: small).
This drops terms O(ln N / N) per atom from
the volume fluctuations, equal for both phases to leading order. Free energies take the thermal
wavelength Λ = 1 length unit (cancels in ΔG at equal T and N).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.interpolate import CubicSpline
from scipy.optimize import brentq

from alflow.periodic import energy_forces_stress
from alflow.solids.harmonic import (
    einstein_free_energy,
    harmonic_free_energy,
    hessian,
    site_spring,
)
from alflow.solids.md import ForceFn, autograd_forces, langevin_fixed_com
from alflow.solids.models import Built, CrystalModel, lj_model

Energy = Callable[[torch.Tensor], torch.Tensor]


def block_error(series: np.ndarray, n_blocks: int = 8) -> float:
    """Standard error of the mean of ``series`` (S, C): S steps of C independent copies,
    from the spread of n_blocks block means per copy."""
    s = np.asarray(series, float)
    s = s.reshape(len(s), -1)
    m = len(s) // n_blocks
    if m < 1:
        raise ValueError(f"need at least {n_blocks} samples for {n_blocks} blocks, got {len(s)}")
    means = s[: m * n_blocks].reshape(n_blocks, m, -1).mean(1).reshape(-1)
    return float(means.std(ddof=1) / math.sqrt(len(means)))


@dataclass
class TIResult:
    """Frenkel–Ladd result (energy units of the potential; per atom unless named).

    ``free_energy_per_atom`` A/N ± ``err`` (statistical and ``quadrature_err`` combined);
    parts ``einstein_per_atom`` (A_E/N, includes the
    lattice energy ``lattice_energy_per_atom``) and ``integral_per_atom`` (∫⟨U − U_E⟩dλ / N);
    ``lambdas`` the nodes, ``integrand`` ⟨U − U_E⟩ (total) and ``integrand_err`` there;
    ``spring`` k (energy/length²); ``volume``; ``kt``; ``n_atoms``."""

    free_energy_per_atom: float
    err: float
    einstein_per_atom: float
    integral_per_atom: float
    lattice_energy_per_atom: float
    lambdas: list[float]
    integrand: list[float]
    integrand_err: list[float]
    spring: float
    volume: float
    kt: float
    n_atoms: int
    quadrature_err: float = 0.0


def quadrature_error(lambdas: np.ndarray, weights: np.ndarray, values: np.ndarray) -> float:
    """|Gauss–Legendre sum − ∫₀¹ of the natural cubic spline through (λ_i, f_i)|: an estimate
    of the quadrature error of the integral of f over [0, 1] from the node values alone, for f
    smooth on the scale of the node spacing (it misses a near-singular end, e.g. an Einstein
    reference whose atoms overlap at λ → 0)."""
    spline = CubicSpline(lambdas, values, bc_type="natural", extrapolate=True)
    return float(abs((weights * values).sum() - spline.integrate(0.0, 1.0)))


def frenkel_ladd(energy: Energy, sites: np.ndarray, cell: np.ndarray, kt: float,
                 forces: ForceFn | None = None, spring: float | None = None,
                 n_lambda: int = 8, n_steps: int = 2000,
                 n_equil: int = 400, dt: float = 0.005, friction: float = 2.0,
                 mass: float = 1.0, copies: int = 2, every: int = 5, n_blocks: int = 8,
                 seed: int = 0) -> TIResult:
    """Helmholtz free energy per atom of the crystal with lattice ``sites`` (N, 3) in ``cell``
    (3, 3) at temperature ``kt`` (energy units), by Einstein-crystal integration.

    ``energy`` is batched and differentiable, (B, N, 3) -> (B,); ``forces(x)`` -> (energies,
    forces) may give both faster (default: autograd of ``energy``). Runs ``n_lambda`` Gauss–
    Legendre nodes × ``copies`` independent replicas in one batch for ``n_equil`` + ``n_steps``
    Langevin steps of ``dt`` (time unit of the energy, length and ``mass`` units), sampling
    every ``every`` steps.
    """
    if kt <= 0:
        raise ValueError(f"kt must be positive, got {kt}")
    sites = np.asarray(sites, float)
    n = len(sites)
    volume = abs(float(np.linalg.det(np.asarray(cell, float))))
    x0 = torch.tensor(sites, dtype=torch.float64)
    u0 = float(energy(x0[None])[0])
    k = site_spring(energy, sites) if spring is None else float(spring)
    if not k > 0:
        raise ValueError(f"the Einstein spring must be positive, got {k} (unstable lattice?)")
    nodes, weights = np.polynomial.legendre.leggauss(n_lambda)
    lam_nodes, w = 0.5 * (nodes + 1), 0.5 * weights
    lam = torch.tensor(np.repeat(lam_nodes, copies), dtype=torch.float64)[:, None, None]

    potential = autograd_forces(energy) if forces is None else forces

    def mixed(x):
        e, f = potential(x)
        return e, lam * f - (1 - lam) * 2 * k * (x - x0)

    def observe(x, e):
        return e - u0 - k * (x - x0).square().sum((-1, -2))

    gen = torch.Generator().manual_seed(seed)
    start = x0.expand(len(lam), n, 3).clone()
    run = langevin_fixed_com(mixed, start, kt, dt, n_steps, friction=friction, mass=mass,
                             n_equil=n_equil, every=every, observe=observe, generator=gen)
    obs = run.observables.numpy().reshape(-1, n_lambda, copies)
    mean = obs.mean((0, 2))
    errs = np.array([max(block_error(obs[:, i], n_blocks),
                         block_error(obs[:, i], max(2, n_blocks // 2)))
                     for i in range(n_lambda)])
    integral = float((w * mean).sum())
    quad = quadrature_error(lam_nodes, w, mean) if n_lambda > 2 else 0.0
    err = float(math.sqrt(((w * errs) ** 2).sum() + quad**2))
    a_e = einstein_free_energy(k, u0, kt, volume, n)
    return TIResult((a_e + integral) / n, err / n, a_e / n, integral / n, u0 / n,
                    lam_nodes.tolist(), mean.tolist(), errs.tolist(), k, volume, kt, n,
                    quad / n)


# ------------------------------------------------------------------ G(T, P) of a crystal model
@dataclass
class Gibbs:
    """G/N ± err of one crystal at (kt, pressure); ``volume_per_atom`` V*/N where ⟨P⟩ = P,
    ``pressure_fit`` the (V/N, ⟨P⟩, err) points fitted, ``volume_err`` the fit's error in
    V*/N and ``fit_err`` its contribution ½|dP/dV|·var(V*) to ``err``; ``ti`` the
    Frenkel–Ladd result at V*."""

    structure: str
    g_per_atom: float
    err: float
    volume_per_atom: float
    kt: float
    pressure: float
    ti: TIResult
    pressure_fit: list[tuple[float, float, float]] = field(default_factory=list)
    volume_err: float = 0.0
    fit_err: float = 0.0


def pressure_fit_volume(v: np.ndarray, p: np.ndarray, p_err: np.ndarray, pressure: float
                        ) -> tuple[float, float, float]:
    """V* where the weighted straight-line fit of ⟨P⟩(V) (points ``v``, ``p`` ± ``p_err``)
    equals ``pressure``; its standard error (first-order propagation of the fit's
    covariance) and the slope dP/dV."""
    wts = 1.0 / np.maximum(np.asarray(p_err, float), 1e-300) ** 2
    a = np.stack([v, np.ones_like(v)], -1)
    cov = np.linalg.inv(a.T @ (wts[:, None] * a))
    slope, icpt = cov @ (a.T @ (wts * p))
    v_star = (pressure - icpt) / slope
    grad = np.array([-(pressure - icpt) / slope**2, -1.0 / slope])  # ∂V*/∂(slope, icpt)
    return float(v_star), float(math.sqrt(max(grad @ cov @ grad, 0.0))), float(slope)


def _pressure(built: Built, x: torch.Tensor) -> torch.Tensor:
    """Virial pressure (B,) of positions (B, N, 3) at the built crystal's cell."""
    cell = torch.tensor(built.atoms.cell.array, dtype=x.dtype).expand(len(x), 3, 3)
    _, _, s = energy_forces_stress(built.energy_cell, x, cell)
    return -torch.diagonal(s, dim1=-2, dim2=-1).sum(-1) / 3


def static_density(structure: str, pressure: float, cutoff: float = 2.5,
                   n_atoms: int = 108, model: CrystalModel | None = None) -> float:
    """Density at which the perfect lattice's pressure −dU/dV equals ``pressure`` (default
    model: LJ with r_c = ``cutoff``)."""
    model = lj_model(cutoff) if model is None else model

    def p_static(rho):
        built = model.build(structure, n_atoms, rho)
        return float(_pressure(built, torch.tensor(built.atoms.positions)[None])[0]) - pressure
    g = model.density_guess
    return brentq(p_static, 0.6 * g, 1.6 * g, xtol=1e-10 * g)


def nvt_pressure(structure: str, n_atoms: int, density: float, kt: float,
                 cutoff: float = 2.5, n_steps: int = 1000, n_equil: int = 200,
                 copies: int = 2, seed: int = 0, model: CrystalModel | None = None
                 ) -> tuple[float, float]:
    """⟨P⟩ ± err of the crystal at ``density``, ``kt`` (virial plus ρk_BT, centre of mass
    fixed; default model LJ with r_c = ``cutoff``, reduced units)."""
    model = lj_model(cutoff) if model is None else model
    built = model.build(structure, n_atoms, density)
    x0 = torch.tensor(built.atoms.positions)
    volume = built.atoms.get_volume()
    forces = built.forces or autograd_forces(
        lambda y: built.energy_cell(y, torch.tensor(built.atoms.cell.array)))
    gen = torch.Generator().manual_seed(seed)
    run = langevin_fixed_com(forces, x0.expand(copies, -1, -1), kt, model.dt, n_steps,
                             friction=model.friction, mass=model.mass, n_equil=n_equil,
                             every=5, observe=lambda x, e: _pressure(built, x), generator=gen)
    p = run.observables.numpy() + n_atoms * kt / volume
    return float(p.mean()), max(block_error(p), block_error(p, 4))


def gibbs(model: CrystalModel, structure: str, n_atoms: int, kt: float, pressure: float,
          quick: bool = False, seed: int = 0, n_steps: int | None = None,
          copies: int | None = None, n_lambda: int = 8, n_equil: int = 400) -> Gibbs:
    """G/N of a ``structure`` crystal of ``n_atoms`` at ``kt``, ``pressure`` (the model's
    units); ``quick``: 600 steps × 2 copies per λ node instead of 2000 × 4 (``n_steps``,
    ``copies`` override either); each NVT pressure point runs half the steps and equilibrates
    half of ``n_equil``."""
    steps, n_copies = (600, 2) if quick else (2000, 4)
    steps, copies = n_steps or steps, copies or n_copies
    v0 = 1 / static_density(structure, pressure, n_atoms=n_atoms, model=model)

    def measure(v):
        p, e = nvt_pressure(structure, n_atoms, 1 / v, kt, n_steps=steps // 2, copies=copies,
                            n_equil=n_equil // 2, seed=seed + len(fit), model=model)
        fit.append((v, p, e))
        return p

    fit: list[tuple[float, float, float]] = []
    # the thermal pressure at the static volume, relieved along the static lattice's
    # dP/dV, predicts the expansion; fit through the static volume and two beyond it
    thermal = measure(v0) - pressure
    h = 1e-3 * v0
    built = [model.build(structure, n_atoms, 1 / v) for v in (v0 - h, v0 + h)]
    dp_dv = float(sum(sign * _pressure(b, torch.tensor(b.atoms.positions)[None])[0]
                      for sign, b in zip((-1, 1), built, strict=True))) / (2 * h)
    dv = max(thermal / -dp_dv, 0.005 * v0)
    measure(v0 + dv)
    measure(v0 + 1.5 * dv)
    v, p, p_err = map(np.array, zip(*fit, strict=True))
    v_star, v_err, slope = pressure_fit_volume(v, p, p_err, pressure)
    built = model.build(structure, n_atoms, 1 / v_star)
    cell = torch.tensor(built.atoms.cell.array)
    ti = frenkel_ladd(lambda y: built.energy_cell(y, cell), built.atoms.positions,
                      built.atoms.cell.array, kt, forces=built.forces, n_steps=steps,
                      n_lambda=n_lambda, n_equil=n_equil, copies=copies, dt=model.dt,
                      friction=model.friction, mass=model.mass, seed=seed)
    # V* carries the error of the pressure fit; dG/dV* = 0 at the true V*: second order
    fit_err = 0.5 * abs(slope) * v_err**2
    return Gibbs(structure, ti.free_energy_per_atom + pressure * v_star,
                 math.hypot(ti.err, fit_err), v_star, kt, pressure, ti, fit, v_err, fit_err)


def harmonic_gibbs(model: CrystalModel, structure: str, n_atoms: int, volume_per_atom: float,
                   kt: float, pressure: float) -> float:
    """G/N of the harmonic crystal (the model's Hessian at its lattice) at the same volume:
    A_harm/N + P V/N, the reference that isolates the anharmonic part of :func:`gibbs`."""
    built = model.build(structure, n_atoms, 1 / volume_per_atom)
    cell = torch.tensor(built.atoms.cell.array)

    def energy(y):
        return built.energy_cell(y, cell)

    eig = np.linalg.eigvalsh(hessian(energy, built.atoms.positions))
    u0 = float(energy(torch.tensor(built.atoms.positions)[None])[0])
    a = harmonic_free_energy(eig, u0, kt, built.atoms.get_volume(), n_atoms)
    return a / n_atoms + pressure * volume_per_atom


def gibbs_lj(structure: str, n_atoms: int, kt: float, pressure: float, cutoff: float = 2.5,
             quick: bool = False, seed: int = 0) -> Gibbs:
    """G/N (ε) of an LJ crystal at T* = ``kt``, P* = ``pressure`` (reduced units)."""
    return gibbs(lj_model(cutoff), structure, n_atoms, kt, pressure, quick, seed)


@dataclass
class DeltaG:
    """ΔG = G(hcp) − G(fcc) per atom ± err at (kt, pressure) in ``units``; both phases."""

    delta_g_per_atom: float
    err: float
    n_atoms: int
    kt: float
    pressure: float
    units: str
    fcc: Gibbs
    hcp: Gibbs


def delta_g(n_atoms: int = 108, kt: float = 0.3, pressure: float = 0.0, cutoff: float = 2.5,
            quick: bool = False, seed: int = 0, model: CrystalModel | None = None) -> DeltaG:
    """ΔG(hcp − fcc) per atom from Einstein-crystal integration of each phase (both of
    ``n_atoms`` atoms) at ``kt``, ``pressure``. Default model: LJ with r_c = ``cutoff`` in
    reduced units; ``model=emt_model("Cu")`` for EMT copper (kt in eV, pressure in eV/Å³)."""
    model = lj_model(cutoff) if model is None else model
    fcc = gibbs(model, "fcc", n_atoms, kt, pressure, quick, seed)
    hcp = gibbs(model, "hcp", n_atoms, kt, pressure, quick, seed + 1000)
    return DeltaG(hcp.g_per_atom - fcc.g_per_atom, math.hypot(fcc.err, hcp.err), n_atoms, kt,
                  pressure, model.units, fcc, hcp)


__all__ = ["DeltaG", "Gibbs", "TIResult", "block_error", "delta_g", "frenkel_ladd", "gibbs",
           "gibbs_lj", "harmonic_gibbs", "nvt_pressure", "pressure_fit_volume",
           "quadrature_error", "static_density"]
