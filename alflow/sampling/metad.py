"""Well-tempered metadynamics on one or two CVs, in torch, with the bias stored on a grid.

Every ``pace`` MD steps each walker (each active replica of the batch; they all share one
bias) deposits a Gaussian of widths ``sigma`` (CV units) and height
``h0 exp(-V(s)/(kB dT))`` with ``dT = (bias_factor - 1) T`` (Barducci, Bussi and Parrinello
2008). The bias V and its gradient dV/ds are accumulated analytically on a grid of
``grid_bins + 1`` points per CV spanning ``[grid_min, grid_max]``; between grid points both are
interpolated (bi)linearly, so a step costs the same however many Gaussians were deposited.
Outside the grid the bias is held at its edge value with zero force (put walls there).

After each deposition the offset ``c(t) = kT ln(int exp(gamma/(gamma-1) V/kT) ds /
int exp(V/((gamma-1) kT)) ds)`` (Tiwary and Parrinello 2015) is computed on the grid; frames
reweight to the unbiased ensemble with ``exp((V(s, t) - c(t))/kT)``
(:meth:`alflow.sampling.langevin.Trajectory.log_weights`). The free-energy surface comes
either from the bias, ``F(s) = -gamma/(gamma-1) V(s)`` (:meth:`WellTemperedMetad.fes`), or from
reweighted histograms with block-average errors (:func:`reweight_fes`, any CVs).

The bias state saves to a ``.npz`` file with its config as JSON (no pickle).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from ase import units
from pydantic import Field, model_validator

from alflow.config import StrictModel, validate_model
from alflow.errors import ConfigError, InputError
from alflow.sampling.cvs import CV, CVConfig, make_cv
from alflow.sampling.langevin import BiasOutput, EnergyBias, cv_wall

log = logging.getLogger(__name__)


class CVWallConfig(StrictModel):
    """Harmonic walls on one CV of the metadynamics (PLUMED's LOWER_/UPPER_WALLS)."""

    cv: str = Field(description="name of a metadynamics CV")
    lower: float | None = None
    upper: float | None = None
    k: float = Field(10.0, gt=0, description="eV per CV unit squared")


class MetadConfig(StrictModel):
    """Well-tempered metadynamics settings (one entry per CV in the list fields)."""

    cvs: list[CVConfig] = Field(min_length=1, max_length=2)
    sigma: list[float] = Field(description="Gaussian widths, CV units")
    height_ev: float = Field(0.01, gt=0, description="initial Gaussian height, eV")
    pace: int = Field(100, ge=1, description="MD steps between depositions")
    bias_factor: float = Field(10.0, gt=1, description="gamma = (T + dT) / T")
    grid_min: list[float]
    grid_max: list[float]
    grid_bins: list[int] | None = Field(None, description="default: 5 bins per sigma")
    walls: list[CVWallConfig] = []

    @model_validator(mode="after")
    def _shapes(self):
        d = len(self.cvs)
        for name in ("sigma", "grid_min", "grid_max") + (("grid_bins",) if self.grid_bins
                                                        else ()):
            if len(getattr(self, name)) != d:
                raise ValueError(f"{name} needs {d} value(s), one per CV")
        if any(s <= 0 for s in self.sigma):
            raise ValueError("sigma must be positive")
        if any(lo >= hi for lo, hi in zip(self.grid_min, self.grid_max, strict=True)):
            raise ValueError("grid_min must be below grid_max")
        names = [c.name or c.kind for c in self.cvs]
        if len(set(names)) != d:
            raise ValueError(f"CV names must be unique, got {names}")
        for w in self.walls:
            if w.cv not in names:
                raise ValueError(f"wall on unknown CV {w.cv!r} (have {names})")
        return self

    def bins(self) -> list[int]:
        if self.grid_bins is not None:
            return list(self.grid_bins)
        return [max(8, math.ceil(5 * (hi - lo) / s)) for lo, hi, s in
                zip(self.grid_min, self.grid_max, self.sigma, strict=True)]


@dataclass
class FES:
    """Free energy (G1[, G2]) eV on bin centres ``grid`` (one array per CV), minimum 0, NaN
    where no sample fell; ``error`` (same shape, eV) from block averages, or None."""

    cv_names: list[str]
    grid: list[np.ndarray]
    free_energy: np.ndarray
    error: np.ndarray | None = None

    def to_dict(self) -> dict:
        def clean(a):
            return None if a is None else np.where(np.isfinite(a), a, None).tolist()

        return {"cv_names": self.cv_names, "grid": [g.tolist() for g in self.grid],
                "free_energy_ev": clean(self.free_energy), "error_ev": clean(self.error)}


class WellTemperedMetad:
    """The shared well-tempered bias (a :class:`~alflow.sampling.langevin.Bias`).

    ``cvs``: 1 or 2 CVs; ``sigma`` widths; ``height_ev``; ``pace`` steps; ``bias_factor``;
    ``temperature_k`` (the MD temperature); grid ``grid_min``/``grid_max``/``grid_bins``;
    ``walls``: extra static biases (added to the bias energy and forces, not deposited on)."""

    def __init__(self, cvs: Sequence[CV], sigma: Sequence[float], height_ev: float, pace: int,
                 bias_factor: float, temperature_k: float, grid_min: Sequence[float],
                 grid_max: Sequence[float], grid_bins: Sequence[int],
                 walls: Sequence[EnergyBias] = (), device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float64, config: MetadConfig | None = None):
        d = len(cvs)
        if d not in (1, 2) or not (len(sigma) == len(grid_min) == len(grid_max)
                                   == len(grid_bins) == d):
            raise ConfigError("metadynamics: 1 or 2 CVs, with one sigma/grid_min/grid_max/"
                              "grid_bins each")
        if temperature_k <= 0:
            raise ConfigError("metadynamics needs a temperature above 0 K")
        self.cvs, self.walls, self.config = list(cvs), list(walls), config
        self.dev, self.dtype = torch.device(device), dtype
        self.sigma = torch.tensor(sigma, dtype=dtype, device=self.dev)
        self.lo = torch.tensor(grid_min, dtype=dtype, device=self.dev)
        self.hi = torch.tensor(grid_max, dtype=dtype, device=self.dev)
        self.bins = [int(b) for b in grid_bins]
        self.h0, self.pace, self.gamma = float(height_ev), int(pace), float(bias_factor)
        self.temperature_k = float(temperature_k)
        self.kt = units.kB * self.temperature_k
        self.dx = (self.hi - self.lo) / torch.tensor(self.bins, dtype=dtype, device=self.dev)
        axes = [torch.linspace(float(a), float(b), n + 1, dtype=dtype, device=self.dev)
                for a, b, n in zip(self.lo, self.hi, self.bins, strict=True)]
        self.axes = axes
        mesh = torch.meshgrid(*axes, indexing="ij")
        self.points = torch.stack([m.reshape(-1) for m in mesh], -1)  # (P, D)
        self.shape = tuple(n + 1 for n in self.bins)
        self.v = torch.zeros(self.points.shape[0], dtype=dtype, device=self.dev)
        self.dv = torch.zeros_like(self.points)
        d = len(cvs)
        self._nb_minus_1 = torch.tensor(self.bins, device=self.dev) - 1
        self._strides = torch.tensor([self.shape[1], 1] if d == 2 else [1], device=self.dev)
        self._corners = torch.tensor([[0], [1]] if d == 1 else
                                     [[0, 0], [1, 0], [0, 1], [1, 1]], device=self.dev)
        self._corner_offsets = (self._corners * self._strides).sum(-1)
        self.n_steps = 0
        self.centers: list[np.ndarray] = []
        self.heights: list[np.ndarray] = []
        self.deposit_steps: list[int] = []
        self.c_history: list[float] = []
        self._last_s: torch.Tensor | None = None
        self._warned = False

    # -------------------------------------------------------------- construction
    @classmethod
    def from_config(cls, config: MetadConfig, temperature_k: float, natoms: int | None = None,
                    device: str | torch.device = "cpu",
                    dtype: torch.dtype = torch.float64) -> WellTemperedMetad:
        cvs = [make_cv(c, natoms) for c in config.cvs]
        by_name = {cv.name: cv for cv in cvs}
        walls = [cv_wall(by_name[w.cv], w.lower, w.upper, w.k) for w in config.walls]
        return cls(cvs, config.sigma, config.height_ev, config.pace, config.bias_factor,
                   temperature_k, config.grid_min, config.grid_max, config.bins(), walls,
                   device, dtype, config)

    @property
    def cv_names(self) -> list[str]:
        return [cv.name for cv in self.cvs]

    # -------------------------------------------------------------- grid
    def _interp(self, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Bias (B,) and gradient (B, D) at CV values s (B, D), (bi)linear on the grid."""
        inside = ((s >= self.lo) & (s <= self.hi)).all(-1)
        if not self._warned and not bool(inside.all()):
            log.warning("metadynamics: CV values outside the grid %s..%s (bias held constant "
                        "there; add walls)", self.lo.tolist(), self.hi.tolist())
            self._warned = True
        u = (s.clamp(self.lo, self.hi) - self.lo) / self.dx
        i0 = torch.minimum(u.floor().long(), self._nb_minus_1)
        t = u - i0.to(u.dtype)
        flat0 = (i0 * self._strides).sum(-1)  # (B,)
        idx = flat0[:, None] + self._corner_offsets  # (B, K)
        w = torch.where(self._corners.bool(), t[:, None, :], 1.0 - t[:, None, :]).prod(-1)
        v = (w * self.v[idx]).sum(-1)
        g = (w[..., None] * self.dv[idx]).sum(-2)
        return v, g * inside[:, None].to(g.dtype)

    def bias_at(self, s) -> np.ndarray:
        """Bias (B,) eV at CV values s (B, D)."""
        s = torch.as_tensor(np.asarray(s, dtype=float), dtype=self.dtype,
                            device=self.dev).reshape(-1, len(self.cvs))
        return self._interp(s)[0].cpu().numpy()

    def grid_bias(self) -> np.ndarray:
        """The bias on the grid points, shape (G1[, G2]) eV."""
        return self.v.reshape(self.shape).cpu().numpy()

    # -------------------------------------------------------------- Bias protocol
    def evaluate(self, positions: torch.Tensor) -> BiasOutput:
        with torch.enable_grad():
            x = positions.detach().to(self.dtype).requires_grad_(True)
            s = torch.stack([cv(x) for cv in self.cvs], -1)
            v, dvds = self._interp(s.detach())
            (grad,) = torch.autograd.grad((dvds * s).sum(), x)
        self._last_s = s.detach()
        energy, forces = v, -grad
        for w in self.walls:
            wo = w.evaluate(x.detach())
            energy, forces = energy + wo.energy, forces + wo.forces
        return BiasOutput(energy=energy.to(positions.dtype), forces=forces.to(positions.dtype))

    def update(self) -> None:
        """Count one MD step; every ``pace`` steps deposit at the last evaluated CV values."""
        self.n_steps += 1
        if self.n_steps % self.pace == 0 and self._last_s is not None:
            self.deposit(self._last_s)

    def offset(self) -> float:
        """c(t), eV (0 before the first deposition)."""
        return self.c_history[-1] if self.c_history else 0.0

    def deposit(self, s: torch.Tensor) -> None:
        """Add one well-tempered Gaussian per row of s (B, D) (walkers deposit together)."""
        s = s.to(self.dtype).reshape(-1, len(self.cvs))
        v_here, _ = self._interp(s)
        h = self.h0 * torch.exp(-v_here / (self.kt * (self.gamma - 1.0)))
        diff = (self.points[None, :, :] - s[:, None, :]) / self.sigma  # (B, P, D)
        gauss = h[:, None] * torch.exp(-0.5 * (diff**2).sum(-1))  # (B, P)
        self.v += gauss.sum(0)
        self.dv += (-(diff / self.sigma) * gauss[..., None]).sum(0)
        self.centers.append(s.cpu().numpy())
        self.heights.append(h.cpu().numpy())
        self.deposit_steps.append(self.n_steps)
        self.c_history.append(self._c_of_t())

    def _c_of_t(self) -> float:
        b = self.v / self.kt
        g = self.gamma
        c = torch.logsumexp(g / (g - 1.0) * b, 0) - torch.logsumexp(b / (g - 1.0), 0)
        return float(self.kt * c)

    # -------------------------------------------------------------- results
    def fes(self) -> FES:
        """Free energy from the bias, ``-gamma/(gamma-1) V`` on the grid points, min 0."""
        f = -self.gamma / (self.gamma - 1.0) * self.grid_bias()
        return FES(self.cv_names, [a.cpu().numpy() for a in self.axes], f - f.min())

    # -------------------------------------------------------------- persistence
    def save(self, path: str | Path) -> None:
        """Save the bias state to ``path`` (.npz; config as JSON, no pickled objects)."""
        k = len(self.centers)
        d = len(self.cvs)
        meta = {"config": None if self.config is None else self.config.model_dump(mode="json"),
                "temperature_k": self.temperature_k, "n_steps": self.n_steps,
                "format": "alflow-metad-1"}
        np.savez(path, v=self.v.cpu().numpy(), dv=self.dv.cpu().numpy(),
                 centers=np.concatenate(self.centers) if k else np.zeros((0, d)),
                 heights=np.concatenate(self.heights) if k else np.zeros(0),
                 walkers=np.array([len(c) for c in self.centers], dtype=np.int64),
                 deposit_steps=np.array(self.deposit_steps, dtype=np.int64),
                 c_history=np.array(self.c_history), meta=np.array(json.dumps(meta)))

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu",
             dtype: torch.dtype = torch.float64, natoms: int | None = None) -> WellTemperedMetad:
        """Restore a bias saved by :meth:`save` (rebuilds its CVs from the stored config)."""
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
            meta = json.loads(str(data["meta"]))
        except (OSError, KeyError, ValueError) as err:
            raise InputError(f"{path}: not an alflow metadynamics bias file ({err})") from None
        if meta.get("config") is None:
            raise InputError(f"{path}: bias file has no config; cannot rebuild its CVs")
        cfg = validate_model(MetadConfig, meta["config"], f"{path} (config)")
        self = cls.from_config(cfg, meta["temperature_k"], natoms, device, dtype)
        if data["v"].shape != tuple(self.v.shape):
            raise InputError(f"{path}: grid shape does not match its config")
        self.v = torch.as_tensor(data["v"], dtype=dtype, device=self.dev)
        self.dv = torch.as_tensor(data["dv"], dtype=dtype, device=self.dev)
        self.n_steps = int(meta["n_steps"])
        splits = np.cumsum(data["walkers"])[:-1]
        self.centers = list(np.split(data["centers"], splits))
        self.heights = list(np.split(data["heights"], splits))
        self.deposit_steps = [int(s) for s in data["deposit_steps"]]
        self.c_history = [float(c) for c in data["c_history"]]
        return self


# ------------------------------------------------------------------ reweighting
def reweight_fes(values, log_weights, temperature_k: float, grid_min: Sequence[float],
                 grid_max: Sequence[float], bins: Sequence[int], n_blocks: int = 5,
                 cv_names: Sequence[str] | None = None, mask=None) -> FES:
    """Free energy along 1 or 2 CVs from weighted samples, with block-average errors.

    ``values`` (F, R, D) or (F, D) in time order; ``log_weights`` (F, R) or (F,) (e.g.
    ``Trajectory.log_weights()``: beta (V - c(t))); ``mask`` selects frames (e.g. valid and
    past the transient). Frames split into ``n_blocks`` consecutive time blocks; each block's
    weighted histogram P_b, the weighted mean P and its error over blocks (effective block
    number from the block weights) give ``F = -kT ln P`` and ``sigma_F = kT sigma_P / P``."""
    v = np.asarray(values, dtype=float)
    lw = np.asarray(log_weights, dtype=float)
    if v.ndim == lw.ndim:
        v = v[..., None]
    if v.shape[:-1] != lw.shape:
        raise InputError(f"reweight_fes: values {v.shape} and log_weights {lw.shape} disagree")
    if v.ndim == 2:
        v, lw = v[:, None], lw[:, None]
        mask = None if mask is None else np.asarray(mask)[:, None]
    d = v.shape[-1]
    if not (len(grid_min) == len(grid_max) == len(bins) == d):
        raise InputError(f"reweight_fes: need {d} grid_min/grid_max/bins")
    m = np.ones(lw.shape, bool) if mask is None else np.asarray(mask, bool)
    if n_blocks < 2 or m.sum() < n_blocks:
        raise InputError("reweight_fes: need at least 2 blocks and a sample per block")
    kt = units.kB * temperature_k
    w = np.where(m, np.exp(lw - lw[m].max()), 0.0)
    edges = [np.linspace(a, b, n + 1) for a, b, n in zip(grid_min, grid_max, bins, strict=True)]
    frames = np.flatnonzero(m.any(1))
    hists, wsum = [], []
    for blk in np.array_split(frames, n_blocks):
        h, _ = np.histogramdd(v[blk].reshape(-1, d), bins=edges, weights=w[blk].reshape(-1))
        total = h.sum()
        hists.append(h / total if total > 0 else h)
        wsum.append(total)
    hists, wsum = np.array(hists), np.array(wsum)
    p = np.tensordot(wsum, hists, 1) / wsum.sum()
    n_eff = wsum.sum() ** 2 / (wsum**2).sum()
    var = np.tensordot(wsum, (hists - p) ** 2, 1) / wsum.sum() * n_eff / max(n_eff - 1, 1e-12)
    sig_p = np.sqrt(var / n_eff)
    with np.errstate(divide="ignore", invalid="ignore"):
        f = np.where(p > 0, -kt * np.log(p), np.nan)
        err = np.where(p > 0, kt * sig_p / p, np.nan)
    f = f - np.nanmin(f)
    centers = [0.5 * (e[1:] + e[:-1]) for e in edges]
    names = list(cv_names) if cv_names is not None else [f"cv{i}" for i in range(d)]
    return FES(names, centers, f, err)


def trajectory_fes(traj, cv_names: Sequence[str], grid_min: Sequence[float],
                   grid_max: Sequence[float], bins: Sequence[int], n_blocks: int = 5,
                   skip_ps: float = 0.0) -> FES:
    """Reweighted FES along ``cv_names`` of a metadynamics Trajectory (valid frames after
    ``skip_ps``), weights ``exp(beta (V - c(t)))``; see :func:`reweight_fes`."""
    values = np.stack([traj.cv(n) for n in cv_names], -1)
    mask = traj.valid & (traj.time_ps >= skip_ps)[:, None]
    return reweight_fes(values, traj.log_weights(), traj.temperature_k, grid_min, grid_max,
                        bins, n_blocks, cv_names, mask)
