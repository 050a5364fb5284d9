"""Pareto k̂: how heavy the tail of the importance weights is (PSIS diagnostic).

Vehtari, Simpson, Gelman, Yao, Gabry, "Pareto smoothed importance sampling", JMLR 25
(2024): fit a generalized Pareto distribution (GPD) to the M = ⌈min(n/5, 3√n)⌉ largest
of n importance weights; its shape k̂ estimates the tail index of the weight distribution.

* k̂ < 0.5: finite variance, the central limit theorem holds and the bootstrap error of an
  importance-sampling (IS) estimate is meaningful;
* 0.5 ≤ k̂ < 0.7: infinite variance, but the estimate still converges at a usable rate;
* k̂ > min(0.7, 1 − 1/log10 n) (:func:`khat_threshold`): the estimate may be badly biased
  and its error bar is not to be trusted (the sample misses tail mass the proposal barely
  covers).

The GPD fit is the profile-likelihood / quasi-Bayesian estimator of Zhang & Stephens
(Technometrics 51, 2009), with the weakly informative prior (k̂ shrunk toward 0.5 as if
by 10 extra observations) of the R package loo and of arviz. Written here rather than
importing arviz, which is a heavy dependency for one function; only the diagnostic is
computed (the weights are not smoothed).
"""

from __future__ import annotations

import math

import numpy as np

MIN_FINITE = 20  # fewer finite weights than this: no k̂ (nan)
_PRIOR_N, _PRIOR_K = 10.0, 0.5  # weakly informative prior on k (loo, arviz)
_LOG_RANGE = 700.0  # tail exceedances kept within e^-700 of the largest (no underflow)


def khat_threshold(n: int) -> float:
    """k̂ above which an IS estimate from n samples is unreliable: min(0.7, 1 − 1/log10 n)."""
    if n <= 1:
        return float("-inf")
    return min(0.7, 1.0 - 1.0 / math.log10(n))


def gpd_fit(y: np.ndarray) -> tuple[float, float]:
    """Shape k and scale σ of a generalized Pareto distribution (location 0),
    F(y) = 1 − (1 + k y/σ)^(−1/k), fitted to y (m,) ≥ 0 sorted ascending, with y > 0 at
    its upper quarter (Zhang & Stephens 2009; k here is minus their k). The prior
    adjustment of k is not applied here (see :func:`pareto_khat`)."""
    y = np.asarray(y, dtype=float)
    m = len(y)
    n_grid = 30 + int(math.sqrt(m))
    j = np.arange(1, n_grid + 1)
    y_q = y[max(int(m / 4 + 0.5), 1) - 1]  # first quartile
    # grid over θ = k/σ on the Zhang–Stephens prior (θ > −1/max y keeps 1 + θy > 0)
    theta = -1.0 / y[-1] - (1.0 - np.sqrt(n_grid / (j - 0.5))) / (3.0 * y_q)
    k = np.log1p(theta[:, None] * y[None, :]).mean(axis=1)  # profile MLE of k given θ
    with np.errstate(divide="ignore", invalid="ignore"):
        loglik = m * (np.log(theta / k) - k - 1.0)
    loglik = np.where(np.isfinite(loglik), loglik, -np.inf)
    post = np.exp(loglik - loglik.max())
    post /= post.sum()
    th = float(np.sum(post * theta))
    k_hat = float(np.mean(np.log1p(th * y)))
    return k_hat, (k_hat / th if th != 0 else float(np.mean(y)))


def pareto_khat(log_w: np.ndarray) -> float:
    """Pareto k̂ of importance weights exp(log_w), log_w (n,) of any scale.

    Non-finite entries (−inf: samples outside the state, weight 0) are dropped first.
    Returns nan with fewer than :data:`MIN_FINITE` finite weights, −inf when the largest
    weights are all equal (a flat, bounded tail), else the GPD shape of the exceedances of
    the M largest weights over the (M+1)-th, shrunk toward 0.5 by the loo/arviz prior.
    Works in log space: weights are never exponentiated outside [e^−700, 1].
    """
    lw = np.asarray(log_w, dtype=float).ravel()
    lw = np.sort(lw[np.isfinite(lw)])
    n = len(lw)
    if n < MIN_FINITE:
        return float("nan")
    m = max(5, math.ceil(min(0.2 * n, 3.0 * math.sqrt(n))))
    cut = lw[-m - 1]
    d = lw[-m:] - cut  # log-ratio of each tail weight to the cutoff weight, ≥ 0
    d = d[d > 0]  # ties with the cutoff carry no exceedance
    if len(d) == 0:
        return float("-inf")
    if len(d) < 5:
        return float("nan")
    # log exceedance ln(w − w_cut) − ln w_cut = d + ln(1 − e^−d), scaled by its largest
    log_y = d + np.log(-np.expm1(-d))
    y = np.exp(np.maximum(log_y - log_y.max(), -_LOG_RANGE))
    k, _ = gpd_fit(y)
    return float((len(y) * k + _PRIOR_N * _PRIOR_K) / (len(y) + _PRIOR_N))


__all__ = ["MIN_FINITE", "gpd_fit", "khat_threshold", "pareto_khat"]
