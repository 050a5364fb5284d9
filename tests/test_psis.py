"""Pareto k̂ (alflow.psis) on weights of known tail index, and its report by the estimators."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from ase.units import kB
from scipy.stats import genpareto

from alflow.estimate import is_free_energy, reweight
from alflow.psis import khat_threshold, pareto_khat


@pytest.mark.parametrize("xi", [0.3, 0.9])
def test_khat_recovers_gpd_shape(xi):
    """Weights drawn from a generalized Pareto of shape ξ: k̂ ≈ ξ (n = 10,000, M = 300;
    the standard error of one k̂ is ≈ (1 + ξ)/√M ≈ 0.1, of the mean of 4 draws ≈ 0.05)."""
    k = [pareto_khat(np.log(genpareto.rvs(xi, size=10_000, random_state=s))) for s in range(4)]
    assert np.mean(k) == pytest.approx(xi, abs=0.12)
    assert all(abs(v - xi) < 0.3 for v in k)


def test_khat_scale_free_and_log_space():
    """k̂ does not depend on the scale of the weights, even far beyond float range."""
    lw = np.log(genpareto.rvs(0.5, size=4000, random_state=2))
    k = pareto_khat(lw)
    assert np.isfinite(k)
    assert pareto_khat(lw + 5000.0) == pytest.approx(k, abs=1e-9)
    assert pareto_khat(lw - 5000.0) == pytest.approx(k, abs=1e-9)


def test_khat_lognormal_small_sigma_is_good():
    lw = np.random.default_rng(3).normal(0.0, 0.5, 4000)
    assert pareto_khat(lw) < 0.5


def test_khat_drops_minus_inf_and_needs_enough_weights():
    lw = np.log(genpareto.rvs(0.6, size=4000, random_state=4))
    padded = np.concatenate([lw, np.full(3000, -np.inf)])
    assert pareto_khat(padded) == pytest.approx(pareto_khat(lw), abs=1e-12)
    assert np.isnan(pareto_khat(np.r_[np.zeros(10), np.full(50, -np.inf)]))
    assert pareto_khat(np.zeros(500)) == -np.inf  # equal weights: a flat, bounded tail
    assert khat_threshold(4000) == 0.7
    assert khat_threshold(100) == pytest.approx(0.5)


def _gaussian_is(var_ratio: float, n: int, seed: int) -> np.ndarray:
    """log weights of a 2-D standard-normal target p sampled from N(0, var_ratio·I): then
    w ∝ exp(a r²/2), r² ~ var_ratio·χ²₂, so the weights are exactly Pareto-tailed with
    index ξ = 1 − σ_q²/σ_p² (infinite variance for σ_q² < σ_p²/2, bounded for σ_q > σ_p)."""
    x = np.random.default_rng(seed).normal(0.0, np.sqrt(var_ratio), (n, 2))
    r2 = (x**2).sum(1)
    return -r2 / 2 + r2 / (2 * var_ratio) + np.log(var_ratio)  # ln p − ln q


def test_narrow_proposal_warns(caplog):
    """Proposal narrower than the target: ξ = 0.9, k̂ > 0.7, a warning naming state and T,
    while the F estimate itself is the plain IS one (ln Z = 0 in expectation)."""
    lw = _gaussian_is(0.1, 10_000, seed=5)
    assert pareto_khat(lw) == pytest.approx(0.9, abs=0.2)
    with caplog.at_level(logging.WARNING, logger="alflow.estimate"):
        fe = is_free_energy(lw, 300.0, n_bootstrap=20, label="state coh")
    assert fe.extra["pareto_k"] > 0.7
    warned = [r.getMessage() for r in caplog.records if "Pareto" in r.getMessage()]
    assert len(warned) == 1 and "state coh" in warned[0] and "300 K" in warned[0]
    lz = np.log(np.mean(np.exp(lw)))
    assert fe.f_ev == pytest.approx(-kB * 300.0 * lz, rel=1e-9)


def test_wide_proposal_is_quiet(caplog):
    """Proposal wider than the target: bounded weights, k̂ < 0.5, no warning."""
    lw = _gaussian_is(2.0, 4000, seed=6)
    lw = np.where(np.arange(len(lw)) % 4 == 0, -np.inf, lw)  # a quarter outside the state
    with caplog.at_level(logging.WARNING, logger="alflow.estimate"):
        fe = is_free_energy(lw, 300.0, n_bootstrap=20, label="state pbp")
    assert fe.extra["pareto_k"] < 0.5
    assert not [r for r in caplog.records if "Pareto" in r.getMessage()]


def test_reweight_reports_khat(caplog):
    """DFT reweighting: k̂ of the exponential weights is in the result; a heavy lower tail
    of E_ref − E_pot (rare configurations the potential overestimates) is flagged."""
    rng = np.random.default_rng(7)
    e_pot = rng.normal(0.0, 0.1, 2000)
    good = reweight(e_pot, e_pot + rng.normal(0.0, 0.002, 2000), 300.0, n_bootstrap=20)
    assert good.pareto_k < 0.5 and "pareto_k" in good.to_dict()
    kt = kB * 300.0
    # exp(−ΔE/kT) Pareto-distributed with ξ = 0.9
    de = -kt * np.log(genpareto.rvs(0.9, size=2000, random_state=8) + 1.0)
    with caplog.at_level(logging.WARNING, logger="alflow.estimate"):
        bad = reweight(e_pot, e_pot + de, 300.0, n_bootstrap=20)
    assert bad.pareto_k > 0.7
    assert any("Pareto" in r.getMessage() for r in caplog.records)
