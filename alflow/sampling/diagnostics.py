"""MCMC convergence diagnostics: rank-normalised split R-hat and bulk ESS (Vehtari et al. 2021).

``chains`` are arrays (M, T): M chains (walkers) of T draws of one scalar (a CV).
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtri
from scipy.stats import rankdata


def _split(chains: np.ndarray) -> np.ndarray:
    x = np.asarray(chains, dtype=float)
    if x.ndim != 2 or x.shape[1] < 4:
        raise ValueError(f"chains must have shape (M, T >= 4), got {x.shape}")
    half = x.shape[1] // 2
    return np.concatenate([x[:, :half], x[:, -half:]])


def _rank_normalise(x: np.ndarray) -> np.ndarray:
    r = rankdata(x, method="average").reshape(x.shape)
    return ndtri((r - 0.375) / (x.size + 0.25))


def _rhat(x: np.ndarray) -> float:
    m, n = x.shape
    w = x.var(axis=1, ddof=1).mean()
    b = n * x.mean(axis=1).var(ddof=1)
    if w <= 0:
        return float("nan") if b > 0 else 1.0
    return float(np.sqrt(((n - 1) / n * w + b / n) / w))


def split_rhat(chains: np.ndarray) -> float:
    """Rank-normalised split R-hat: the max of bulk and folded (tail) R-hat."""
    s = _split(chains)
    bulk = _rhat(_rank_normalise(s))
    folded = _rhat(_rank_normalise(np.abs(s - np.median(s))))
    return max(bulk, folded)


def _autocov(x: np.ndarray) -> np.ndarray:
    n = x.shape[-1]
    f = np.fft.rfft(x - x.mean(-1, keepdims=True), n=2 * n)
    return np.fft.irfft(f * np.conj(f))[..., :n] / n


def ess_bulk(chains: np.ndarray) -> float:
    """Bulk effective sample size of the rank-normalised split chains (Geyer's initial
    monotone sequence on the multi-chain autocorrelation)."""
    x = _rank_normalise(_split(chains))
    m, n = x.shape
    acov = _autocov(x)
    mean_var = acov[:, 0].mean() * n / (n - 1)
    var_plus = mean_var * (n - 1) / n
    if m > 1:
        var_plus += x.mean(1).var(ddof=1)
    if var_plus <= 0:
        return float(m * n)
    rho = 1 - (mean_var - acov.mean(0)) / var_plus
    rho[0] = 1.0
    tau, prev = -1.0, np.inf
    for t in range(0, n - 1, 2):
        pair = rho[t] + rho[t + 1]
        if pair < 0:
            break
        pair = min(pair, prev)
        tau += 2 * pair
        prev = pair
    return float(m * n / max(tau, 1.0 / np.log10(m * n + 10)))


__all__ = ["ess_bulk", "split_rhat"]
