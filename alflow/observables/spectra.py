"""Absorption spectra from stick spectra: broadening, weighted averages, bands, convergence.

Pure numpy functions. A *stick spectrum* is excitation energies ``E_i`` (eV) with oscillator
strengths ``f_i``; its broadened spectrum on an energy grid ``x`` (eV) is

    I(x) = sum_i f_i g(x - E_i),   int g = 1,

so ``I`` is in 1/eV and integrates (over the whole line) to ``sum_i f_i``. ``width`` is the
standard deviation ``sigma`` of the Gaussian ``g`` and the half width at half maximum
``gamma`` of the Lorentzian ``g``. Averages over samples use normalised weights ``w_s`` (from
log-weights, e.g. importance weights of flow samples, or Boltzmann factors); arrays of spectra
are ``(S, G)``: S samples on G grid points.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel

from alflow.errors import InputError

KB_EV_PER_K = 8.617333262e-5
DEFAULT_WIDTH_EV = 0.08
_trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 has only trapz
Shape = Literal["gaussian", "lorentzian"]


def energy_grid(emin: float, emax: float, step: float = 0.01) -> np.ndarray:
    """Evenly spaced grid from ``emin`` to ``emax`` (inclusive, eV) with spacing ~``step``."""
    if not (np.isfinite(emin) and np.isfinite(emax)) or emax <= emin:
        raise InputError(f"energy grid needs emin < emax, got {emin} and {emax}")
    if step <= 0:
        raise InputError(f"energy grid step must be > 0 eV, got {step}")
    n = int(np.ceil((emax - emin) / step)) + 1
    return np.linspace(emin, emax, n)


def grid_for(energies: Sequence[np.ndarray], width: float = DEFAULT_WIDTH_EV,
             pad_widths: float = 8.0, points_per_width: int = 8) -> np.ndarray:
    """A grid covering every excitation in ``energies`` (list of arrays, eV) with a margin of
    ``pad_widths`` widths on each side (never below 0 eV), ``points_per_width`` points per
    width."""
    flat = np.concatenate([np.ravel(e) for e in energies]) if len(energies) else np.empty(0)
    if flat.size == 0:
        raise InputError("no excitation energies to build a grid from")
    lo = max(0.0, float(flat.min()) - pad_widths * width)
    hi = float(flat.max()) + pad_widths * width
    return energy_grid(lo, hi, width / points_per_width)


def line_shape(x: np.ndarray, center: np.ndarray, width: float,
               shape: Shape = "gaussian") -> np.ndarray:
    """Unit-area line shapes, shape ``(len(center), len(x))`` in 1/eV."""
    if width <= 0:
        raise InputError(f"broadening width must be > 0 eV, got {width}")
    d = np.asarray(x, float)[None, :] - np.asarray(center, float)[:, None]
    if shape == "gaussian":
        return np.exp(-0.5 * (d / width) ** 2) / (width * np.sqrt(2.0 * np.pi))
    if shape == "lorentzian":
        return (width / np.pi) / (d**2 + width**2)
    raise InputError(f"line shape must be 'gaussian' or 'lorentzian', got {shape!r}")


def broaden(energies_ev: np.ndarray, strengths: np.ndarray, grid_ev: np.ndarray,
            width: float = DEFAULT_WIDTH_EV, shape: Shape = "gaussian") -> np.ndarray:
    """Broadened spectrum ``I(x) = sum_i f_i g(x - E_i)`` on ``grid_ev`` (1/eV)."""
    e = np.asarray(energies_ev, float).ravel()
    f = np.asarray(strengths, float).ravel()
    if e.shape != f.shape:
        raise InputError(f"{e.size} excitation energies but {f.size} oscillator strengths")
    if e.size == 0:
        return np.zeros(len(grid_ev))
    return f @ line_shape(grid_ev, e, width, shape)


def broaden_many(energies: Sequence[np.ndarray], strengths: Sequence[np.ndarray],
                 grid_ev: np.ndarray, width: float = DEFAULT_WIDTH_EV,
                 shape: Shape = "gaussian") -> np.ndarray:
    """Broaden each sample's sticks: ``(S, G)``."""
    if len(energies) != len(strengths):
        raise InputError(f"{len(energies)} energy lists but {len(strengths)} strength lists")
    return np.stack([broaden(e, f, grid_ev, width, shape)
                     for e, f in zip(energies, strengths, strict=True)]) if len(energies) \
        else np.zeros((0, len(grid_ev)))


def integrate(grid_ev: np.ndarray, intensity: np.ndarray) -> np.ndarray:
    """Trapezoid integral over the last axis (dimensionless for a spectrum in 1/eV)."""
    return _trapezoid(intensity, grid_ev, axis=-1)


def normalise_weights(weights: np.ndarray | None = None, log_weights: np.ndarray | None = None,
                      n: int | None = None) -> np.ndarray:
    """Weights summing to 1, from ``weights`` (>= 0), from ``log_weights`` (stable softmax), or
    uniform over ``n`` samples."""
    if weights is not None and log_weights is not None:
        raise InputError("give weights or log_weights, not both")
    if log_weights is not None:
        lw = np.asarray(log_weights, float).ravel()
        if not np.all(np.isfinite(lw) | (lw == -np.inf)) or not np.isfinite(lw).any():
            raise InputError("log-weights must be finite (or -inf) with at least one finite")
        w = np.exp(lw - lw[np.isfinite(lw)].max())
    elif weights is not None:
        w = np.asarray(weights, float).ravel()
        if np.any(~np.isfinite(w)) or np.any(w < 0):
            raise InputError("weights must be finite and >= 0")
    else:
        if not n:
            raise InputError("cannot build uniform weights for zero samples")
        w = np.ones(n)
    total = w.sum()
    if total <= 0:
        raise InputError("weights sum to zero")
    return w / total


def boltzmann_log_weights(energies_ev: np.ndarray, temperature_k: float) -> np.ndarray:
    """``-E / kT`` (relative Boltzmann factors of configurations sampled uniformly)."""
    if temperature_k <= 0:
        raise InputError(f"temperature must be > 0 K, got {temperature_k}")
    return -np.asarray(energies_ev, float) / (KB_EV_PER_K * temperature_k)


def effective_sample_size(weights: np.ndarray) -> float:
    """Kish ESS ``1 / sum w^2`` of normalised weights."""
    w = normalise_weights(weights)
    return float(1.0 / np.sum(w**2))


def weighted_mean(spectra: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Weighted average spectrum ``sum_s w_s I_s`` of ``(S, G)`` spectra."""
    s = np.asarray(spectra, float)
    w = normalise_weights(weights, n=len(s))
    if len(w) != len(s):
        raise InputError(f"{len(s)} spectra but {len(w)} weights")
    return w @ s


def weighted_std(spectra: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Weighted standard deviation over samples at each grid point (the sample-to-sample
    spread, not the error of the mean)."""
    s = np.asarray(spectra, float)
    w = normalise_weights(weights, n=len(s))
    mean = w @ s
    return np.sqrt(np.maximum(w @ (s - mean) ** 2, 0.0))


def bootstrap_band(spectra: np.ndarray, weights: np.ndarray | None = None,
                   n_boot: int = 200, quantiles: tuple[float, float] = (0.16, 0.84),
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Band of the weighted *mean* spectrum: ``quantiles`` over ``n_boot`` resamples of the
    samples with replacement (each resample reweighted with its own weights)."""
    s = np.asarray(spectra, float)
    w = normalise_weights(weights, n=len(s))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(s), size=(n_boot, len(s)))
    wb = w[idx]
    wb = wb / wb.sum(axis=1, keepdims=True)
    means = np.einsum("bs,bsg->bg", wb, s[idx])
    lo, hi = np.quantile(means, quantiles, axis=0)
    return lo, hi


def l1_distance(grid_ev: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Relative L1 distance ``int |a - b| / int |b|``."""
    denom = float(integrate(grid_ev, np.abs(b)))
    if denom <= 0:
        return float("inf") if float(integrate(grid_ev, np.abs(a))) > 0 else 0.0
    return float(integrate(grid_ev, np.abs(a - b))) / denom


def running_l1_change(grid_ev: np.ndarray, spectra: np.ndarray,
                      weights: np.ndarray | None = None) -> np.ndarray:
    """Relative L1 change of the weighted average when sample ``n`` is added, for n = 2..S.

    Element ``k`` compares the average of the first ``k+2`` samples with that of the first
    ``k+1`` (each renormalised over its own samples)."""
    s = np.asarray(spectra, float)
    w = normalise_weights(weights, n=len(s))
    cum_w = np.cumsum(w)
    cum_ws = np.cumsum(w[:, None] * s, axis=0)
    out = []
    for n in range(2, len(s) + 1):
        prev = cum_ws[n - 2] / cum_w[n - 2] if cum_w[n - 2] > 0 else np.zeros(s.shape[1])
        cur = cum_ws[n - 1] / cum_w[n - 1]
        out.append(l1_distance(grid_ev, prev, cur))
    return np.asarray(out)


def samples_to_converge(changes: np.ndarray, tol: float = 0.05) -> int | None:
    """Smallest number of samples ``n`` after which adding any further sample changes the
    average by less than ``tol`` (relative L1); None if the last change is still >= tol.

    ``changes`` is :func:`running_l1_change` output (its element k belongs to n = k + 2)."""
    c = np.asarray(changes, float)
    if c.size == 0 or c[-1] >= tol:
        return None
    bad = np.flatnonzero(c >= tol)
    return int(bad[-1] + 2) if bad.size else 1


def complete_below(energies: Sequence[np.ndarray]) -> float:
    """Energy (eV) below which every sample's computed states are complete: the smallest, over
    samples, highest excitation energy. Above it the averaged spectrum misses states."""
    tops = [float(np.max(e)) for e in energies if np.size(e)]
    return min(tops) if tops else float("nan")


def peak_positions(grid_ev: np.ndarray, intensity: np.ndarray,
                   min_fraction: float = 0.05) -> list[float]:
    """Local maxima (eV) higher than ``min_fraction`` of the largest."""
    y = np.asarray(intensity, float)
    if y.size < 3 or y.max() <= 0:
        return []
    is_peak = (y[1:-1] > y[:-2]) & (y[1:-1] >= y[2:]) & (y[1:-1] >= min_fraction * y.max())
    return [float(g) for g in np.asarray(grid_ev)[1:-1][is_peak]]


class AveragedSpectrum(BaseModel):
    """A (weighted) average spectrum over samples with its spread and convergence.

    ``intensity``/``std``/``band_lo``/``band_hi`` are on ``grid_ev`` in 1/eV; ``std`` is the
    sample-to-sample spread, ``band_lo``/``band_hi`` the 16–84 % bootstrap band of the mean.
    ``l1_changes[k]`` is the relative L1 change when sample k+2 is added.
    """

    grid_ev: list[float]
    intensity: list[float]
    std: list[float]
    band_lo: list[float]
    band_hi: list[float]
    width_ev: float
    shape: str
    n_samples: int
    ess: float
    l1_changes: list[float]
    samples_to_converge: int | None
    tolerance: float
    complete_below_ev: float
    peaks_ev: list[float]


def average_spectrum(energies: Sequence[np.ndarray], strengths: Sequence[np.ndarray],
                     weights: np.ndarray | None = None, log_weights: np.ndarray | None = None,
                     width: float = DEFAULT_WIDTH_EV, shape: Shape = "gaussian",
                     grid_ev: np.ndarray | None = None, tol: float = 0.05,
                     n_boot: int = 200, seed: int = 0) -> AveragedSpectrum:
    """Broaden every sample's sticks, average with the weights, and summarise (see
    :class:`AveragedSpectrum`). Samples are used in the order given (for convergence)."""
    if len(energies) == 0:
        raise InputError("no spectra to average")
    grid = grid_for(energies, width) if grid_ev is None else np.asarray(grid_ev, float)
    w = normalise_weights(weights, log_weights, n=len(energies))
    if len(w) != len(energies):
        raise InputError(f"{len(energies)} spectra but {len(w)} weights")
    s = broaden_many(energies, strengths, grid, width, shape)
    mean = w @ s
    lo, hi = bootstrap_band(s, w, n_boot=n_boot, seed=seed)
    changes = running_l1_change(grid, s, w)
    return AveragedSpectrum(
        grid_ev=grid.tolist(), intensity=mean.tolist(), std=weighted_std(s, w).tolist(),
        band_lo=lo.tolist(), band_hi=hi.tolist(), width_ev=width, shape=shape,
        n_samples=len(energies), ess=effective_sample_size(w), l1_changes=changes.tolist(),
        samples_to_converge=samples_to_converge(changes, tol), tolerance=tol,
        complete_below_ev=complete_below(energies), peaks_ev=peak_positions(grid, mean),
    )
