"""Broadening, weighted averaging and convergence of spectra (pure numpy, fast)."""

import numpy as np
import pytest

from alflow.errors import InputError
from alflow.observables import spectra as sp


def _random_sticks(rng, n=12):
    return rng.uniform(2.0, 5.0, n), rng.uniform(0.0, 0.5, n)


@pytest.mark.parametrize("width", [0.02, 0.08, 0.3])
def test_gaussian_spectrum_integrates_to_sum_of_strengths(width):
    rng = np.random.default_rng(1)
    e, f = _random_sticks(rng)
    grid = sp.grid_for([e], width=width)
    spec = sp.broaden(e, f, grid, width=width)
    assert sp.integrate(grid, spec) == pytest.approx(f.sum(), rel=1e-6)
    # peak heights: an isolated stick of strength f gives f / (sigma sqrt(2 pi)) at its centre
    grid = sp.energy_grid(0.0, 6.0, width / 8)  # holds 3.0 exactly
    one = sp.broaden([3.0], [0.7], grid, width=width)
    assert one.max() == pytest.approx(0.7 / (width * np.sqrt(2 * np.pi)), rel=1e-3)


def test_lorentzian_integral_matches_its_cdf_on_finite_grid():
    rng = np.random.default_rng(2)
    e, f = _random_sticks(rng)
    gamma = 0.08
    grid = sp.energy_grid(0.0, 8.0, 0.002)
    spec = sp.broaden(e, f, grid, width=gamma, shape="lorentzian")
    a, b = grid[0], grid[-1]
    exact = np.sum(f * (np.arctan((b - e) / gamma) - np.arctan((a - e) / gamma)) / np.pi)
    assert sp.integrate(grid, spec) == pytest.approx(exact, rel=1e-5)
    # half maximum at +-gamma from an isolated line
    one = sp.broaden([4.0], [1.0], grid, width=gamma, shape="lorentzian")
    i0 = np.argmin(abs(grid - 4.0))
    ih = np.argmin(abs(grid - 4.0 - gamma))
    assert one[ih] / one[i0] == pytest.approx(0.5, rel=1e-3)


def test_weighted_average_of_identical_spectra_is_that_spectrum():
    rng = np.random.default_rng(3)
    e, f = _random_sticks(rng)
    grid = sp.grid_for([e])
    one = sp.broaden(e, f, grid)
    many = sp.broaden_many([e] * 5, [f] * 5, grid)
    logw = rng.normal(size=5) * 3
    mean = sp.weighted_mean(many, sp.normalise_weights(log_weights=logw))
    np.testing.assert_allclose(mean, one, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(sp.weighted_std(many, np.exp(logw)), 0.0, atol=1e-12)
    lo, hi = sp.bootstrap_band(many, np.exp(logw), n_boot=20)
    np.testing.assert_allclose(lo, one, atol=1e-12)
    np.testing.assert_allclose(hi, one, atol=1e-12)


def test_weighted_average_follows_weights_and_boltzmann_factors():
    grid = sp.energy_grid(0.0, 6.0, 0.01)
    a = sp.broaden([2.0], [1.0], grid)
    b = sp.broaden([4.0], [1.0], grid)
    kt = sp.KB_EV_PER_K * 300.0
    # two configurations 0.05 eV apart in energy: weights exp(-E/kT) normalised
    logw = sp.boltzmann_log_weights(np.array([0.0, 0.05]), 300.0)
    w = sp.normalise_weights(log_weights=logw)
    assert w[1] / w[0] == pytest.approx(np.exp(-0.05 / kt))
    mean = sp.weighted_mean(np.stack([a, b]), w)
    np.testing.assert_allclose(mean, w[0] * a + w[1] * b, rtol=1e-12)
    assert sp.effective_sample_size(np.ones(4)) == pytest.approx(4.0)
    assert sp.effective_sample_size(np.array([1.0, 0, 0, 0])) == pytest.approx(1.0)


def test_running_l1_change_and_samples_to_converge():
    grid = sp.energy_grid(0.0, 6.0, 0.01)
    rng = np.random.default_rng(4)
    # samples: one peak at 3 eV jittered; the average converges like 1/n
    spectra = np.stack([sp.broaden([3.0 + 0.1 * rng.normal()], [1.0], grid) for _ in range(60)])
    ch = sp.running_l1_change(grid, spectra)
    assert ch.shape == (59,)
    assert ch[-10:].mean() < ch[:10].mean()  # changes shrink as samples accumulate
    n = sp.samples_to_converge(ch, tol=0.05)
    assert n is not None and 2 <= n <= 60
    assert np.all(ch[n - 1:] < 0.05) and ch[n - 2] >= 0.05
    assert sp.samples_to_converge(ch, tol=1e-9) is None
    # identical samples: nothing changes, converged at once
    same = np.repeat(spectra[:1], 5, axis=0)
    assert sp.samples_to_converge(sp.running_l1_change(grid, same)) == 1


def test_bad_inputs_raise_clear_errors():
    grid = sp.energy_grid(0.0, 1.0, 0.1)
    with pytest.raises(InputError, match="width"):
        sp.broaden([0.5], [1.0], grid, width=0.0)
    with pytest.raises(InputError, match="oscillator strengths"):
        sp.broaden([0.5, 0.6], [1.0], grid)
    with pytest.raises(InputError, match="line shape"):
        sp.broaden([0.5], [1.0], grid, shape="voigt")
    with pytest.raises(InputError, match="weights"):
        sp.normalise_weights(np.array([1.0, -1.0]))
    with pytest.raises(InputError, match="emin < emax"):
        sp.energy_grid(2.0, 1.0)


def test_average_spectrum_summary_is_consistent():
    rng = np.random.default_rng(5)
    sticks = [_random_sticks(rng, 6) for _ in range(10)]
    e = [s[0] for s in sticks]
    f = [s[1] for s in sticks]
    logw = rng.normal(size=10)
    avg = sp.average_spectrum(e, f, log_weights=logw, n_boot=50)
    grid = np.asarray(avg.grid_ev)
    w = sp.normalise_weights(log_weights=logw)
    expect = sum(wi * fi.sum() for wi, fi in zip(w, f, strict=True))
    assert sp.integrate(grid, np.asarray(avg.intensity)) == pytest.approx(expect, rel=1e-6)
    assert np.all(np.asarray(avg.band_lo) <= np.asarray(avg.intensity) + 1e-12)
    assert np.all(np.asarray(avg.band_hi) >= np.asarray(avg.intensity) - 1e-12)
    assert avg.n_samples == 10 and 1.0 <= avg.ess <= 10.0 and len(avg.l1_changes) == 9
    assert avg.complete_below_ev == pytest.approx(min(x.max() for x in e))
