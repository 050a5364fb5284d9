"""Flows for crystals: lattice-site coordinates with the box as a degree of freedom, and
Helmholtz (fixed cell) or Gibbs (NPT) free energies through them.

A configuration is *packed*: (B, N + 3, 3), the positions (N, 3) Å followed by the cell rows
(3, 3) Å (ASE's convention). :class:`CrystalCoordinates` maps it to a real vector
y = (ρ, c) and whitens it, z = L⁻¹(y − μ):

- ρ (3(N − 1),): displacements of atoms 1..N−1 from their lattice sites *relative to atom 0*
  (translation removed exactly: atom 0 sits on its site), in scaled coordinates — the
  fractional displacement times the reference cell h₀, so that a displacement r in the cell
  h = h₀S is r = ρS. Each atom keeps its own site (permutations are fixed by the lattice
  reference: samples are first relabelled by assignment to the sites, :func:`assign_to_sites`).
  Bounded domain: every relative fractional displacement lies in [−½, ½); flow samples outside
  have weight zero, so estimates are exact for the crystal state so defined.
- c: the box. ``box="fixed"``: none (Helmholtz F at the reference cell); ``"isotropic"``:
  c = ln λ, S = λI (the volume); ``"triangular"``: S lower triangular, diagonal e^{c₀..c₂} and
  off-diagonal c₃..c₅ (the full cell without rotations; needs a lower-triangular h₀).

Free-energy convention (classical, configurational; no thermal wavelength): the crystal state
is one labelled copy of the lattice (atom a near site a), of which N! labellings cancel the
1/N! of identical atoms, and atom 0 ranges over its Wigner–Seitz cell (volume V/N), so

    F(h) = −kT ln[ (V/N) ∫_D e^{−U/kT} dρ ],      G = −kT ln ∫ dμ(h) e^{−PV/kT} (V/N) ∫_D …

with dμ(h) = dV (``isotropic``, Å³) or, for ``triangular``, the volume times the invariant
measure of lower-triangular cells,

    dμ(h) = V d⁶h / (h₀₀ h₁₁² h₂₂³) = V Π_i d ln h_ii Π_{i>j} d(h_ij / h_ii)   (Å³),

strains and tilts measured relative to the cell itself. It is unchanged by any change of
reference cell (h → h₀h, h₀ lower triangular), so the cubic fcc and orthorhombic hcp cells
get the same measure on their strains; d⁶h itself would weight a cell by h₁₁h₂₂² / V (a
shape term: +0.49 kT/N per atom in favour of a 32-atom hcp cell over fcc at equal volume).
The measure is in log J(z) (exact: the scaled-coordinate Jacobian det(S)^{N−1}, the cell
measure and V/N), so that exp(−H/kT)·J/q is the importance weight and the estimators of
:mod:`alflow.estimate` and :mod:`alflow.flows.estimate` apply unchanged. ΔG between phases of
the same N is independent of these conventions up to terms O(kT/N) per atom from the volume
and shape fluctuations (the phases' elastic constants).

:class:`CrystalFlow` (the coordinates + :class:`alflow.solids.cell_flow.CrystalCouplingFlow`,
alflow's coupling flow and a layer scaling the displacements with the cell) has the
attributes :func:`alflow.flows.train.train_flow` and :func:`alflow.flows.estimate.sample_flow`
use, so it trains by energy (reverse KL), by samples (forward KL) or both with them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from ase.units import kB
from scipy.optimize import linear_sum_assignment

from alflow.errors import InputError
from alflow.estimate import FreeEnergy, bar, ess, is_free_energy
from alflow.flows.estimate import sample_flow
from alflow.flows.model import FlowConfig
from alflow.solids.cell_flow import CrystalCouplingFlow
from alflow.solids.local_flow import LocalCrystalFlow, LocalFlowConfig

Box = Literal["fixed", "isotropic", "triangular"]
N_CELL = {"fixed": 0, "isotropic": 1, "triangular": 6}


def pack(positions: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
    """(B, N, 3) and (B, 3, 3) Å -> packed (B, N + 3, 3)."""
    return torch.cat([positions, cell], dim=-2)


def unpack(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Packed (B, N + 3, 3) -> positions (B, N, 3), cell (B, 3, 3) Å."""
    return x[..., :-3, :], x[..., -3:, :]


class Enthalpy:
    """H = U(positions, cell) + P·V (eV) of packed configurations; ``crystal`` has
    ``energy(positions, cell)`` and ``numbers``; ``pressure`` eV/Å³ (0: the energy alone)."""

    def __init__(self, crystal, pressure: float = 0.0):
        self.crystal, self.pressure = crystal, float(pressure)
        self.numbers = np.append(np.asarray(crystal.numbers), [0, 0, 0])

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        pos, cell = unpack(x)
        h = self.crystal.energy(pos, cell)
        if self.pressure:
            h = h + self.pressure * torch.linalg.det(cell).abs()
        return h


def assign_to_sites(positions: np.ndarray, cell: np.ndarray, reference: np.ndarray,
                    cell0: np.ndarray) -> np.ndarray:
    """Relabel configurations (B, N, 3) Å in cells (B, 3, 3) so that atom a is the one nearest
    site a (optimal assignment on minimum-image distances in scaled coordinates); atom 0 is
    then whichever atom occupies site 0."""
    frac0 = reference @ np.linalg.inv(cell0)
    out = np.empty_like(positions)
    for b, (x, h) in enumerate(zip(positions, cell, strict=True)):
        frac = x @ np.linalg.inv(h)
        d = frac[None, :, :] - frac0[:, None, :]
        d = (d - np.round(d)) @ cell0
        _, col = linear_sum_assignment((d**2).sum(-1))
        out[b] = x[col]
    return out


class CrystalCoordinates:
    """Packed configurations <-> whitened lattice coordinates z (B, dim); see module doc.

    ``reference`` (N, 3) Å lattice sites in ``cell0`` (3, 3) Å; ``mean`` (dim,) and ``chol``
    (dim, dim) the whitening y = mean + chol·z (identity if None), lower or upper triangular.
    :func:`gaussian_fit` gives an upper factor: then the cell coordinates of y depend on those
    of z alone, so that z's cell part is a coordinate of the cell (:class:`CellScale`).
    """

    def __init__(self, reference: np.ndarray, cell0: np.ndarray, box: Box = "fixed",
                 mean: np.ndarray | None = None, chol: np.ndarray | None = None):
        ref, h0 = np.asarray(reference, float), np.asarray(cell0, float)
        if ref.ndim != 2 or ref.shape[1] != 3 or ref.shape[0] < 2 or h0.shape != (3, 3):
            raise InputError(f"CrystalCoordinates: reference must be (N >= 2, 3) and cell0 "
                             f"(3, 3), got {ref.shape} and {h0.shape}")
        if box not in N_CELL:
            raise InputError(f"CrystalCoordinates: box must be one of {list(N_CELL)}, got {box!r}")
        if box == "triangular" and np.abs(np.triu(h0, 1)).max() > 1e-12:
            raise InputError("CrystalCoordinates: box 'triangular' needs a lower-triangular "
                             "cell0 (rows a, b, c with a along x and b in the xy plane)")
        self.box, self.n_atoms = box, len(ref)
        self.n_disp, self.n_cell = 3 * (len(ref) - 1), N_CELL[box]
        self.dim = self.n_disp + self.n_cell
        self.cell0 = torch.as_tensor(h0)
        self.inv_cell0 = torch.linalg.inv(self.cell0)
        frac0 = torch.as_tensor(ref) @ self.inv_cell0
        self.frac_rel0 = frac0 - frac0[0]
        self.frac_site0 = frac0[0]
        self.log_v0 = float(np.log(abs(np.linalg.det(h0))))
        self.mean = torch.zeros(self.dim, dtype=torch.float64) if mean is None else \
            torch.as_tensor(mean, dtype=torch.float64)
        self.chol = torch.eye(self.dim, dtype=torch.float64) if chol is None else \
            torch.as_tensor(chol, dtype=torch.float64)
        if not (torch.equal(self.chol, torch.tril(self.chol))
                or torch.equal(self.chol, torch.triu(self.chol))):
            raise InputError("CrystalCoordinates: chol must be lower or upper triangular")
        self.upper = bool(torch.equal(self.chol, torch.triu(self.chol)))
        self.log_det_chol = float(torch.log(torch.diagonal(self.chol).abs()).sum())
        self.reference = pack(torch.as_tensor(ref), self.cell0).numpy()

    # ---------------------------------------------------------------- box
    def strain(self, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """S (B, 3, 3) from cell coordinates c (B, n_cell), and log det S (B,)."""
        b = c.shape[0]
        eye = torch.eye(3, dtype=c.dtype).expand(b, 3, 3)
        if self.box == "fixed":
            return eye, torch.zeros(b, dtype=c.dtype)
        if self.box == "isotropic":
            return eye * torch.exp(c[:, :1, None]), 3 * c[:, 0]
        s = torch.diag_embed(torch.exp(c[:, :3]))
        s = s + torch.zeros_like(s).index_put((torch.arange(b)[:, None].expand(b, 3),
                                               torch.tensor([1, 2, 2]).expand(b, 3),
                                               torch.tensor([0, 0, 1]).expand(b, 3)), c[:, 3:])
        return s, c[:, :3].sum(-1)

    def _cell_coords(self, s: torch.Tensor) -> torch.Tensor:
        if self.box == "fixed":
            return s.new_zeros(s.shape[0], 0)
        if self.box == "isotropic":
            return torch.log(s[:, 0, 0])[:, None]
        return torch.stack([torch.log(s[:, 0, 0]), torch.log(s[:, 1, 1]), torch.log(s[:, 2, 2]),
                            s[:, 1, 0], s[:, 2, 0], s[:, 2, 1]], -1)

    def log_measure(self, c: torch.Tensor) -> torch.Tensor:
        """log of V/N · det(S)^{N−1} · (dμ(h) per d c) (B,): the volume element of y, with
        dμ = dV = 3V dc (isotropic) or V d⁶h / (h₀₀h₁₁²h₂₂³) = V e^{−c₁−2c₂} d⁶c (triangular)."""
        _, logdet = self.strain(c)
        log_v = self.log_v0 + logdet
        out = log_v - math.log(self.n_atoms) + (self.n_atoms - 1) * logdet
        if self.box == "isotropic":  # dV = 3V dc
            out = out + math.log(3.0) + log_v
        elif self.box == "triangular":  # V d⁶h / (h₀₀ h₁₁² h₂₂³) = V e^{−c₁−2c₂} d⁶c
            out = out + log_v - c[:, 1] - 2 * c[:, 2]
        return out

    # ---------------------------------------------------------------- maps
    def to_raw(self, z: torch.Tensor) -> torch.Tensor:
        return self.mean.to(z) + z @ self.chol.to(z).T

    def inverse(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Packed configurations (B, N + 3, 3) Å and log J (B,) of z (B, dim)."""
        y = self.to_raw(z)
        rho = y[:, :self.n_disp].reshape(-1, self.n_atoms - 1, 3)
        c = y[:, self.n_disp:]
        s, _ = self.strain(c)
        cell = self.cell0.to(y) @ s
        frac_rel = torch.cat([torch.zeros_like(rho[:, :1]), rho @ self.inv_cell0.to(y)], 1)
        frac = self.frac_site0.to(y) + self.frac_rel0.to(y) + frac_rel
        return pack(frac @ cell, cell), self.log_measure(c) + self.log_det_chol

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z (B, dim) and log J (B,) of packed configurations (labels as given)."""
        pos, cell = unpack(x.to(torch.float64))
        s = self.inv_cell0.to(cell) @ cell
        c = self._cell_coords(s)
        frac = pos @ torch.linalg.inv(cell)
        d = (frac[:, 1:] - frac[:, :1]) - self.frac_rel0[1:].to(frac)
        d = d - torch.round(d.detach())
        rho = (d @ self.cell0.to(d)).reshape(x.shape[0], -1)
        y = torch.cat([rho, c], -1)
        z = torch.linalg.solve_triangular(self.chol.to(y), (y - self.mean.to(y)).T,
                                          upper=self.upper).T
        return z, self.log_measure(c) + self.log_det_chol

    def valid(self, z: torch.Tensor) -> torch.Tensor:
        """(B,) bool: every relative fractional displacement in [−½, ½) (the crystal state)."""
        rho = self.to_raw(z)[:, :self.n_disp].reshape(z.shape[0], -1, 3)
        f = rho @ self.inv_cell0.to(rho)
        return ((f >= -0.5) & (f < 0.5)).all(-1).all(-1) & torch.isfinite(z).all(-1)


def gaussian_fit(coords: CrystalCoordinates, target, temperature_k: float,
                 newton_steps: int = 20, quasi_harmonic: bool = False,
                 step: float = 2e-3) -> tuple[np.ndarray, np.ndarray]:
    """The Laplace approximation of the target in the raw coordinates y: the minimum μ of
    φ(y) = H(x(y))/kT − log J(y) (Newton from the lattice) and the upper-triangular factor U
    of Σ = (∇²φ(μ))⁻¹ = UUᵀ (the harmonic crystal, with the box's quasi-harmonic fluctuations;
    upper, so that the cell part of y = μ + Uz depends on the cell part of z alone).

    ``quasi_harmonic``: move μ to the mode of the cell's marginal instead of the joint mode.
    The vibrations add ½ ln det H_ρρ(c) to the cell's −log marginal (H_ρρ the displacement
    block of ∇²φ; they soften as the crystal expands); its gradient g (central differences
    of ±``step`` along each cell coordinate, displacements relaxed) shifts the Gaussian's
    mean by −Σ_{·c} g, exact for a linear term: the quasi-harmonic thermal expansion and
    strain, at 2 n_cell more Hessians."""
    beta = 1.0 / (kB * temperature_k)
    raw = CrystalCoordinates(coords.reference[:-3], coords.reference[-3:], coords.box)

    def phi(y: torch.Tensor) -> torch.Tensor:  # (B, dim) -> (B,)
        x, logj = raw.inverse(y)
        return beta * target.energy(x) - logj

    def grad_hess(y: torch.Tensor, chunk: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
        """Gradient and Hessian by double-backward passes over copies of y, ``chunk`` rows
        of the Hessian at a time (memory)."""
        rows, g0 = [], None
        for i0 in range(0, raw.dim, chunk):
            m = min(chunk, raw.dim - i0)
            yb = y.detach().expand(m, raw.dim).clone().requires_grad_(True)
            (g,) = torch.autograd.grad(phi(yb).sum(), yb, create_graph=True)
            (h,) = torch.autograd.grad(g[torch.arange(m), i0 + torch.arange(m)].sum(), yb)
            rows.append(h.detach())
            g0 = g[0].detach() if g0 is None else g0
        return g0, torch.cat(rows)

    y = torch.zeros(raw.dim, dtype=torch.float64)
    for _ in range(newton_steps):
        g, hess = grad_hess(y)
        if float(g.abs().max()) < 1e-8:
            break
        y = y - torch.linalg.solve(hess, g).clamp(-0.2, 0.2)
    g, hess = grad_hess(y)
    try:
        chol_p = torch.linalg.cholesky(0.5 * (hess + hess.T))
    except torch.linalg.LinAlgError:
        raise InputError("gaussian_fit: the Hessian at the lattice is not positive definite: "
                         "the reference is not a (mechanically stable) minimum of the "
                         "target at this pressure") from None
    sigma = torch.cholesky_inverse(chol_p)
    nd = raw.n_disp
    if quasi_harmonic and raw.n_cell:
        relax = -torch.linalg.solve(hess[:nd, :nd], hess[:nd, nd:])  # dρ*/dc (n_disp, n_cell)
        g_c = torch.zeros(raw.n_cell, dtype=torch.float64)
        for k in range(raw.n_cell):
            d = torch.cat([relax[:, k], torch.eye(raw.n_cell, dtype=torch.float64)[k]])
            ld = [torch.linalg.slogdet(grad_hess(y + sign * step * d)[1][:nd, :nd])[1]
                  for sign in (1.0, -1.0)]
            g_c[k] = 0.5 * (ld[0] - ld[1]) / (2 * step)
        y = y - sigma[:, nd:] @ g_c
    return y.numpy(), upper_factor(sigma.numpy())


def upper_factor(sigma: np.ndarray) -> np.ndarray:
    """Upper-triangular U with UUᵀ = ``sigma`` (dim, dim), positive definite."""
    rev = np.asarray(sigma)[::-1, ::-1]
    return np.linalg.cholesky(0.5 * (rev + rev.T))[::-1, ::-1].copy()


class CrystalFlow(torch.nn.Module):
    """A flow density over packed crystal configurations of one phase (see module doc).

    ``log_prob(x)`` (B,) w.r.t. the measure of the module doc; ``sample(n)`` -> packed x
    (n, N + 3, 3), log q_x (n,), valid (n,). Trains with :func:`alflow.flows.train.train_flow`.
    ``local`` (layers > 0): neighbour-aware coupling layers after the whitened flow
    (:class:`alflow.solids.local_flow.LocalCrystalFlow`); they read the whitening of
    ``coords`` as it is when the flow is built.
    """

    def __init__(self, coords: CrystalCoordinates, cfg: FlowConfig | None = None,
                 local: LocalFlowConfig | None = None):
        super().__init__()
        self.coords = coords
        self.cfg = cfg or FlowConfig(transform="spline")
        flow = CrystalCouplingFlow(coords.n_disp, coords.n_cell, self.cfg).double()
        if local is not None and local.layers:
            flow = LocalCrystalFlow(flow, coords, local)
        self.flow = flow

    @classmethod
    def build(cls, reference: np.ndarray, cell0: np.ndarray, target, temperature_k: float,
              box: Box = "fixed", cfg: FlowConfig | None = None,
              local: LocalFlowConfig | None = None) -> CrystalFlow:
        """Whitened by the target's Laplace approximation at the quasi-harmonic cell
        (:func:`gaussian_fit`), the cell recentred where the flow's ESS allows
        (:meth:`recentre_cell`): the untrained flow is the harmonic crystal with its
        quasi-harmonic cell, training adds the anharmonicity."""
        raw = CrystalCoordinates(reference, cell0, box)
        mean, chol = gaussian_fit(raw, target, temperature_k, quasi_harmonic=True)
        cf = cls(CrystalCoordinates(reference, cell0, box, mean, chol), cfg, local)
        cf.recentre_cell(target, temperature_k, min_ess=100)
        return cf

    @torch.no_grad()
    def recentre_cell(self, target, temperature_k: float, n: int = 2000, rounds: int = 4,
                      seed: int = 0, min_ess: float = 3.0) -> None:
        """Move the cell coordinates' centre to their importance-weighted mean under the
        target (beyond the quasi-harmonic shift of :func:`gaussian_fit`: the anharmonic
        thermal expansion); ``rounds`` of ``n`` flow samples, stopped when their ESS is
        below ``min_ess`` (a mean of fewer samples moves the centre by noise). Exact either
        way: only the proposal moves."""
        c = self.coords
        if c.n_cell == 0:
            return
        for r in range(rounds):
            s = sample_flow(self, target, temperature_k, n, seed=seed + r)
            if ess(s.log_w) < 3:
                return
            w = np.exp(s.log_w - s.log_w.max())
            z, _ = c.forward(torch.as_tensor(s.positions[s.inside]))
            y = c.to_raw(z)[:, c.n_disp:].numpy()
            shift = (w[s.inside, None] * (y - c.mean[c.n_disp:].numpy())).sum(0) / w.sum()
            c.mean[c.n_disp:] += torch.as_tensor(shift)

    def prepare(self, x: np.ndarray | torch.Tensor, symmetrise: bool = False) -> torch.Tensor:
        """z (B, dim) of packed samples (B, N + 3, 3), relabelled to the lattice sites."""
        xt = np.asarray(x, dtype=float)
        n = self.coords.n_atoms
        if xt.ndim != 3 or xt.shape[1:] != (n + 3, 3):
            raise InputError(f"samples must be packed (B, {n + 3}, 3) (positions then cell "
                             f"rows), got {xt.shape}")
        pos = assign_to_sites(xt[:, :n], xt[:, n:], self.coords.reference[:n],
                              self.coords.reference[n:])
        return self.coords.forward(pack(torch.as_tensor(pos), torch.as_tensor(xt[:, n:])))[0]

    def fit_normalisation(self, x: np.ndarray | torch.Tensor) -> None:
        """Per-dimension mean and scale of the flow from packed samples (B, N + 3, 3)."""
        self.flow.fit_normalisation(self.prepare(x))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        z, logj = self.coords.forward(x)
        lp = self.flow.log_prob(z) - logj
        return torch.where(self.coords.valid(z), lp, torch.full_like(lp, -math.inf))

    def sample(self, n: int, generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            z, logq = self.flow.sample(n, generator)
            x, logj = self.coords.inverse(z)
        return x, logq - logj, self.coords.valid(z)


@dataclass
class CrystalFreeEnergy:
    """F (fixed cell) or G (NPT) of a phase: total and per atom (eV), ESS of the flow."""

    total: FreeEnergy
    n_atoms: int

    @property
    def per_atom(self) -> float:
        return self.total.f_ev / self.n_atoms

    @property
    def err_per_atom(self) -> float:
        return self.total.err_ev / self.n_atoms


def crystal_free_energy(cf: CrystalFlow, target, temperature_k: float, n: int = 4000,
                        seed: int = 0, n_bootstrap: int = 200,
                        label: str = "") -> CrystalFreeEnergy:
    """F (``box="fixed"``) or G of the phase by importance sampling from the flow, with a
    bootstrap error; ``target`` an :class:`Enthalpy` (its pressure makes G)."""
    s = sample_flow(cf, target, temperature_k, n, seed=seed)
    shift = float(np.max(s.log_w)) if np.isfinite(s.log_w).any() else 0.0
    fe = is_free_energy(s.log_w - shift, temperature_k, n_bootstrap, seed, offset=shift,
                        label=label)
    fe.extra.update(inside_fraction=float(s.inside.mean()),
                    mean_volume=float(_mean_volume(s.positions, s.log_w)))
    return CrystalFreeEnergy(fe, cf.coords.n_atoms)


def _mean_volume(x: np.ndarray, log_w: np.ndarray) -> float:
    ok = np.isfinite(log_w)
    if not ok.any():
        return float("nan")
    w = np.exp(log_w[ok] - log_w[ok].max())
    v = np.abs(np.linalg.det(x[ok, -3:]))
    return float((w * v).sum() / w.sum())


def crystal_bar_free_energy(cf: CrystalFlow, target, temperature_k: float,
                            target_samples: np.ndarray, n: int = 4000,
                            seed: int = 0) -> CrystalFreeEnergy:
    """F or G by BAR between the flow and ``target_samples`` (M, N + 3, 3) of the phase's
    Boltzmann distribution (e.g. MD frames, packed; relabelled to the sites here)."""
    kt = kB * temperature_k
    s = sample_flow(cf, target, temperature_k, n, seed=seed)
    e0 = float(np.min(s.energy[s.inside]))
    with np.errstate(invalid="ignore"):
        w_f = np.where(s.inside, (s.energy - e0) / kt + s.log_q, np.inf)
    with torch.no_grad():
        z = cf.prepare(target_samples)
        xt, logj = cf.coords.inverse(z)
        lq_t = (cf.flow.log_prob(z) - logj).numpy()
        u_t = (target.energy(xt).double().numpy() - e0) / kt
    df, ddf = bar(w_f, -lq_t - u_t)
    f = kt * (df + e0 / kt)
    n_eff = ess(-w_f)
    fe = FreeEnergy(f, kt * ddf, temperature_k, n, n_eff, n_eff / n, "bar",
                    {"n_target": len(xt)})
    return CrystalFreeEnergy(fe, cf.coords.n_atoms)


__all__ = ["CrystalCoordinates", "CrystalFlow", "CrystalFreeEnergy", "Enthalpy",
           "assign_to_sites", "crystal_bar_free_energy", "crystal_free_energy",
           "gaussian_fit", "pack", "unpack", "upper_factor"]
