"""Free energies with error bars, for any sampler: importance sampling, BAR, ΔF, populations
and reweighting to the oracle (exponential averaging), with their standard errors.

F = −kT ln Z in eV (kB from ``ase.units``); the estimators take log weights or reduced works
and know nothing of how the samples were drawn. The flows' own estimators (importance
sampling and BAR through a Boltzmann generator) build on these in :mod:`alflow.flows.estimate`.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from ase.units import kB

from alflow.psis import khat_threshold, pareto_khat

log = logging.getLogger(__name__)


class OverlapWarning(UserWarning):
    """The two ensembles overlap too little for the estimate to be trusted."""


def log_mean_exp(a: np.ndarray, axis: int = -1) -> np.ndarray:
    a = np.asarray(a, dtype=float)
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        return np.squeeze(m, axis) + np.log(np.mean(np.exp(a - m), axis=axis))


def ess(log_w: np.ndarray) -> float:
    """Kish effective sample size of importance weights exp(log_w)."""
    lw = np.asarray(log_w, dtype=float)
    if not np.isfinite(lw).any():
        return 0.0
    w = np.exp(lw - lw[np.isfinite(lw)].max())
    return float(w.sum() ** 2 / (w**2).sum())


@dataclass
class FreeEnergy:
    """A free energy (eV) with its standard error (eV) and sampling figures."""

    f_ev: float
    err_ev: float
    temperature_k: float
    n: int = 0
    ess: float = 0.0
    ess_fraction: float = 0.0
    method: str = "is"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DeltaF:
    """ΔF = F(to) − F(from) (eV) and its standard error."""

    value_ev: float
    error_ev: float
    temperature_k: float

    @property
    def value_kt(self) -> float:
        return self.value_ev / (kB * self.temperature_k)

    @property
    def error_kt(self) -> float:
        return self.error_ev / (kB * self.temperature_k)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "value_kt": self.value_kt, "error_kt": self.error_kt}


def is_free_energy(log_w: np.ndarray, temperature_k: float, n_bootstrap: int = 200,
                   seed: int = 0, offset: float = 0.0, label: str = "") -> FreeEnergy:
    """F = −kT (ln mean exp(log_w) + offset), bootstrap standard error. log_w (n,): log of
    unnormalised target / normalised proposal (−inf where the target is zero).

    ``extra['pareto_k']`` is the Pareto k̂ of the weights (:mod:`alflow.psis`; diagnostic
    only, F uses the raw weights); above :func:`alflow.psis.khat_threshold` (0.7 for
    n ≳ 2000) a warning naming ``label`` (e.g. the state) and the temperature is logged:
    the weights are so heavy-tailed that F and its bootstrap error are unreliable."""
    kt = kB * temperature_k
    lw = np.asarray(log_w, dtype=float)
    n = len(lw)
    rng = np.random.default_rng(seed)
    lz = float(log_mean_exp(lw))
    boots = log_mean_exp(lw[rng.integers(0, n, (n_bootstrap, n))], axis=1)
    boots = boots[np.isfinite(boots)]
    err = float(kt * boots.std(ddof=1)) if len(boots) > 1 else float("inf")
    e = ess(lw)
    k, k_max = pareto_khat(lw), khat_threshold(int(np.isfinite(lw).sum()))
    if k > k_max:
        log.warning("%simportance sampling at %g K: Pareto k̂ = %.2f > %.2f (ESS fraction "
                    "%.3g): the weights are heavy-tailed; the free energy and its bootstrap "
                    "error are unreliable", f"{label}: " if label else "", temperature_k, k,
                    k_max, e / max(n, 1))
    return FreeEnergy(-kt * (lz + offset), err, temperature_k, n, e, e / max(n, 1), "is",
                      {"pareto_k": k})


def bar(w_f: np.ndarray, w_r: np.ndarray) -> tuple[float, float]:
    """BAR (pymbar) reduced free-energy difference Δf = f_1 − f_0 and its error, from forward
    works w_f = u_1 − u_0 on samples of 0 and reverse works w_r = u_0 − u_1 on samples of 1
    (reduced units; infinite works are capped, as their Fermi weights vanish anyway)."""
    from pymbar.other_estimators import bar as _bar

    cap = 1e6
    wf = np.clip(np.nan_to_num(np.asarray(w_f, float), nan=cap, posinf=cap), -cap, cap)
    wr = np.clip(np.nan_to_num(np.asarray(w_r, float), nan=cap, posinf=cap), -cap, cap)
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # log(0) of capped works; NaN error
        out = _bar(wf, wr, compute_uncertainty=True)
    return float(out["Delta_f"]), float(out["dDelta_f"])


def bar_many(w_f: np.ndarray, w_r: np.ndarray, x0: float | None = None, tol: float = 1e-10,
             max_iter: int = 200) -> np.ndarray:
    """BAR Δf (B,) of B independent sets of works at once: forward works w_f (B, n_f) and
    reverse works w_r (B, n_r) in :func:`bar`'s convention, e.g. bootstrap resamples. Solves
    Σ_F σ(Δf − M − w_F) = Σ_R σ(−Δf + M − w_R) (M = ln n_f/n_r, σ the logistic function;
    the left side minus the right rises monotonically in Δf) by Newton steps kept inside a
    shrinking bracket (bisection where Newton leaves it), to ``tol``, from ``x0`` (e.g. the
    full sample's Δf: bootstrap resamples then need 2–3 steps) or else from the mean of the
    two exponential (Zwanzig) estimates. Infinite works are capped as in :func:`bar`."""
    from scipy.special import expit

    cap = 1e6
    wf = np.clip(np.nan_to_num(np.atleast_2d(np.asarray(w_f, float)), nan=cap, posinf=cap),
                 -cap, cap)
    wr = np.clip(np.nan_to_num(np.atleast_2d(np.asarray(w_r, float)), nan=cap, posinf=cap),
                 -cap, cap)
    m = math.log(wf.shape[1] / wr.shape[1])
    lo = np.minimum(wf.min(1), -wr.max(1)) + m - 50.0
    hi = np.maximum(wf.max(1), -wr.min(1)) + m + 50.0
    if x0 is None:
        with np.errstate(over="ignore", divide="ignore"):
            x = 0.5 * (-log_mean_exp(-wf, 1) + log_mean_exp(-wr, 1))
    else:
        x = np.full(len(wf), float(x0))
    x = np.where(np.isfinite(x), np.clip(x, lo, hi), 0.5 * (lo + hi))
    for _ in range(max_iter):
        p = expit(x[:, None] - m - wf)
        q = expit(m - x[:, None] - wr)
        g = p.sum(1) - q.sum(1)
        dg = (p * (1 - p)).sum(1) + (q * (1 - q)).sum(1)
        lo = np.where(g < 0, x, lo)
        hi = np.where(g > 0, x, hi)
        with np.errstate(divide="ignore", invalid="ignore"):
            nx = x - g / dg
        nx = np.where(np.isfinite(nx) & (nx > lo) & (nx < hi), nx, 0.5 * (lo + hi))
        done = np.abs(nx - x) < tol
        x = nx
        if done.all():
            break
    return x


def delta_f(from_: FreeEnergy, to: FreeEnergy) -> DeltaF:
    """ΔF = F(to) − F(from) with independent errors added in quadrature."""
    if abs(from_.temperature_k - to.temperature_k) > 1e-9:
        raise ValueError("delta_f: free energies at different temperatures")
    return DeltaF(to.f_ev - from_.f_ev, math.hypot(to.err_ev, from_.err_ev), to.temperature_k)


def populations(free: Mapping[str, FreeEnergy], n_draws: int = 2000,
                seed: int = 0) -> dict[str, tuple[float, float]]:
    """Boltzmann populations p_S ∝ exp(−F_S/kT) of the states (mean, std over Gaussian draws
    of the free energies within their errors)."""
    names = list(free)
    kt = kB * next(iter(free.values())).temperature_k
    f = np.array([free[n].f_ev for n in names])
    e = np.array([free[n].err_ev for n in names])
    rng = np.random.default_rng(seed)
    draws = f + e * rng.standard_normal((n_draws, len(f)))
    a = -draws / kt
    p = np.exp(a - a.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    a0 = -f / kt
    p0 = np.exp(a0 - a0.max())
    p0 /= p0.sum()
    return {n: (float(p0[i]), float(p[:, i].std())) for i, n in enumerate(names)}


@dataclass
class Reweighting:
    """Correction F_ref − F_pot (eV) of one state from the potential to a reference (DFT)."""

    correction_ev: float
    error_ev: float
    ess: float
    ess_fraction: float
    n: int
    method: str
    reliable: bool
    temperature_k: float
    pareto_k: float = float("nan")  # of the exponential weights (alflow.psis)
    bias_ev: float = 0.0  # the plain exponential average minus the bias-corrected one

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def jackknife(estimator: Callable[[np.ndarray], float], n: int, groups: int = 100
              ) -> tuple[float, float, float]:
    """Delete-a-group jackknife of ``estimator(indices) -> float`` over n samples in
    g = min(n, ``groups``) contiguous groups: (bias-corrected estimate g·θ − (g−1)·mean θ₋ᵢ,
    its standard error √((g−1)/g Σ (θ₋ᵢ − mean)²), the plain estimate θ). The correction
    removes the O(1/n) bias of smooth nonlinear estimators such as the exponential average."""
    full = float(estimator(np.arange(n)))
    g = min(n, groups)
    edges = np.linspace(0, n, g + 1).astype(int)
    loo = np.array([estimator(np.r_[0:edges[i], edges[i + 1]:n]) for i in range(g)])
    loo = loo[np.isfinite(loo)]
    if len(loo) < 2:
        return full, float("inf"), full
    se = math.sqrt((g - 1) / g * float(((loo - loo.mean()) ** 2).sum()))
    return g * full - (g - 1) * float(loo.mean()), se, full


def small_sample_factor(n: int) -> float:
    """t_{0.975, n−1} / z_{0.975}: widens a standard error estimated from n samples so that
    ±2σ keeps about its 95 % coverage (1.09 at n = 16, 1.01 at n = 100)."""
    from scipy.stats import norm, t

    return float(t.ppf(0.975, max(n - 1, 1)) / norm.ppf(0.975)) if n > 1 else float("inf")


def reweight(e_pot: np.ndarray, e_ref: np.ndarray, temperature_k: float,
             log_w: np.ndarray | None = None, e_pot_ref_samples: np.ndarray | None = None,
             e_ref_ref_samples: np.ndarray | None = None, n_bootstrap: int = 200,
             min_ess: float = 10.0, seed: int = 0) -> Reweighting:
    """F_ref − F_pot of a state from labelled samples of the potential's ensemble.

    e_pot, e_ref (n,) eV: potential and reference (DFT) energies of the same configurations,
    drawn independently from the potential's Boltzmann distribution, or from a flow with log
    importance weights ``log_w`` (n,) toward it. Exponential averaging (Zwanzig),
    ΔF = −kT ln ⟨exp(−(E_ref − E_pot)/kT)⟩, made unbiased to O(1/n²) by a delete-a-group
    :func:`jackknife` (the plain average is biased upward by about var(ΔE/kT)/(2n) kT: 0.03
    kT for a 1 kT spread over 16 labels); its error is the larger of the jackknife's and a
    bootstrap's (``n_bootstrap`` resamples of the plain average), widened by
    :func:`small_sample_factor` (``bias_ev`` holds the plain average minus the corrected
    one). If configurations of the reference ensemble are also labelled
    (``e_pot_ref_samples``, ``e_ref_ref_samples``), BAR. An :class:`OverlapWarning` is
    issued (and ``reliable`` is False) when the effective sample size of the exponential
    weights is below ``min_ess``; ``pareto_k`` is their Pareto k̂ (:mod:`alflow.psis`; nan
    below 20 samples), a warning is logged when it is above
    :func:`alflow.psis.khat_threshold` and the exponential average is used.
    """
    kt = kB * temperature_k
    de = (np.asarray(e_ref, float) - np.asarray(e_pot, float)) / kt
    n = len(de)
    if n == 0:
        raise ValueError("reweight: no labelled samples")
    lw0 = np.zeros(n) if log_w is None else np.asarray(log_w, float)
    shift = float(np.mean(de))
    lw_tot = lw0 - (de - shift)
    n_eff = ess(lw_tot)
    k = pareto_khat(lw_tot)
    bias = 0.0
    if e_pot_ref_samples is not None and e_ref_ref_samples is not None:
        if log_w is not None:
            raise ValueError("reweight: BAR needs unweighted samples of both ensembles")
        w_r = (np.asarray(e_pot_ref_samples, float) - np.asarray(e_ref_ref_samples, float)) / kt
        df, ddf = bar(de, w_r)
        corr, err, method = kt * df, kt * ddf, "bar"
    else:
        rng = np.random.default_rng(seed)

        def est(idx: np.ndarray) -> float:
            return float(log_mean_exp(lw_tot[idx]) - log_mean_exp(lw0[idx]))

        unbiased, jk_err, plain = jackknife(est, n)
        corr = -kt * (unbiased - shift)
        bias = -kt * (plain - unbiased)
        boots = np.array([est(rng.integers(0, n, n)) for _ in range(n_bootstrap)])
        boots = boots[np.isfinite(boots)]
        boot_err = float(boots.std(ddof=1)) if len(boots) > 1 else 0.0
        err = kt * max(jk_err, boot_err) * small_sample_factor(n)
        method = "exp-jackknife"
        if k > khat_threshold(int(np.isfinite(lw_tot).sum())):
            log.warning("reweighting to the reference at %g K: Pareto k̂ = %.2f of the "
                        "exponential weights; the correction and its error are unreliable",
                        temperature_k, k)
    reliable = n_eff >= min_ess
    if not reliable:
        warnings.warn(f"reweighting to the reference: ESS {n_eff:.1f} of {n} samples is below "
                      f"{min_ess}; the overlap is too poor to trust the correction",
                      OverlapWarning, stacklevel=2)
    return Reweighting(float(corr), float(err), n_eff, n_eff / n, n, method, reliable,
                       temperature_k, k, float(bias))


def committee_shifts(e_members: np.ndarray, e_mean: np.ndarray, temperature_k: float,
                     log_w: np.ndarray | None = None) -> np.ndarray:
    """F_m − F (M,) eV of each committee member m against the committee mean, by exponential
    averaging over samples of the mean's Boltzmann distribution in a state: e_members
    (M, n) and e_mean (n,) eV, or flow samples with log importance weights ``log_w`` (n,)."""
    kt = kB * temperature_k
    de = (np.asarray(e_members, float) - np.asarray(e_mean, float)[None]) / kt
    lw = np.zeros(de.shape[1]) if log_w is None else np.asarray(log_w, float)
    ok = np.isfinite(lw) & np.isfinite(de).all(0)
    if not ok.any():
        return np.full(len(de), np.nan)
    return -kt * (log_mean_exp(lw[ok][None] - de[:, ok], 1) - log_mean_exp(lw[ok]))


def committee_spread(shifts_from: list[float] | None, shifts_to: list[float] | None) -> float:
    """Standard deviation (eV) over committee members of their own ΔF = F(to) − F(from)
    (:func:`committee_shifts` of both states, member by member): the uncertainty of the
    potential itself, 0 without two members' shifts in both states."""
    if not shifts_from or not shifts_to or len(shifts_from) != len(shifts_to) \
            or len(shifts_to) < 2:
        return 0.0
    d = np.asarray(shifts_to, float) - np.asarray(shifts_from, float)
    return float(np.std(d, ddof=1)) if np.isfinite(d).all() else 0.0


def corrected_delta_f(from_: FreeEnergy, to: FreeEnergy, corr_from: Reweighting,
                      corr_to: Reweighting) -> dict[str, float]:
    """ΔF = F(to) − F(from) on the potential and corrected to the reference (eV): the
    states' free energies and their corrections (:func:`reweight`) are independent
    estimates, their errors add in quadrature. Keys: value_ev, error_ev, correction_ev,
    correction_error_ev, corrected_ev, corrected_error_ev."""
    d = delta_f(from_, to)
    c = corr_to.correction_ev - corr_from.correction_ev
    ce = math.hypot(corr_to.error_ev, corr_from.error_ev)
    return {"value_ev": d.value_ev, "error_ev": d.error_ev, "correction_ev": c,
            "correction_error_ev": ce, "corrected_ev": d.value_ev + c,
            "corrected_error_ev": math.hypot(d.error_ev, ce)}


__all__ = ["DeltaF", "FreeEnergy", "OverlapWarning", "Reweighting", "bar", "bar_many",
           "committee_shifts", "committee_spread", "corrected_delta_f", "delta_f", "ess",
           "is_free_energy", "jackknife", "log_mean_exp", "populations", "reweight",
           "small_sample_factor"]
