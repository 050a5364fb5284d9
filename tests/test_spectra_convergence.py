"""Order-free convergence estimates of averaged spectra, on cases with a known answer."""

import numpy as np
import pytest

from alflow.errors import InputError
from alflow.observables import convergence as cv
from alflow.observables import spectra as sp

GRID = sp.energy_grid(2.0, 4.0, 0.002)


def _two_peak_samples(n: int, a: float) -> tuple[np.ndarray, np.ndarray]:
    """n spectra ``mu + a eps_i phi`` (eps_i = +1 for half, -1 for the other half): the mean is
    exactly ``mu`` (int mu = 1), int|phi| = 1, int phi = 0, and every spectrum is >= 0."""
    g1 = sp.broaden([2.9], [1.0], GRID, width=0.1)
    g2 = sp.broaden([3.1], [1.0], GRID, width=0.1)
    mu = (g1 + g2) / sp.integrate(GRID, g1 + g2)
    phi = (g1 - g2) / sp.integrate(GRID, np.abs(g1 - g2))
    eps = np.array([1.0, -1.0] * (n // 2))
    s = mu[None, :] + a * eps[:, None] * phi[None, :]
    assert np.all(s >= 0)  # a proper (positive) set of spectra
    return s, eps


def test_leave_one_out_spread_has_the_exact_value():
    n, a = 10, 0.5
    s, _ = _two_peak_samples(n, a)
    # s_i - mean of the others = a eps_i phi n/(n-1); int|.| = a n/(n-1); int|mean| = 1
    d = cv.leave_one_out_l1(GRID, s)
    assert d == pytest.approx(np.full(n, a * n / (n - 1)), rel=1e-9)
    assert cv.samples_for_change(float(d.mean()), tol=0.05) == 11  # 0.5556/0.05 = 11.1
    # identical samples: no spread, one sample is enough
    assert cv.leave_one_out_l1(GRID, np.repeat(s[:1], 4, axis=0)) == pytest.approx(0.0)
    assert cv.samples_for_change(0.0) == 1


def test_permuted_changes_match_the_exact_expectations():
    n, a = 10, 0.5
    s, _ = _two_peak_samples(n, a)
    ch = cv.permuted_l1_changes(GRID, s, n_perm=4000, seed=3)
    assert ch.shape == (4000, n - 1)
    # the last sample added, whichever it is, moves the average by a/(n-1): c/n exactly
    assert ch[:, -1] == pytest.approx(np.full(4000, a / (n - 1)), rel=1e-9)
    # the second sample: change a when its sign differs from the first (p = n/(2(n-1))), else 0
    p = n / (2 * (n - 1))
    assert set(np.round(ch[:, 0], 9)) == {0.0, a}
    assert abs(ch[:, 0].mean() - a * p) < 5 * a * np.sqrt(p * (1 - p) / 4000)


def test_expected_samples_to_converge_agrees_with_the_c_over_n_law():
    c = 0.56
    curve = c / np.arange(2, 40)  # expected change on adding sample 2, 3, ...
    assert cv.expected_samples_to_converge(curve, tol=0.05) == cv.samples_for_change(c) == 11
    assert cv.expected_samples_to_converge(curve[:5], tol=0.05) is None
    assert cv.expected_samples_to_converge(curve, tol=1.0) == 1


def test_bad_inputs_name_the_field():
    with pytest.raises(InputError, match="spectra"):
        cv.leave_one_out_l1(GRID, np.ones((1, GRID.size)))
    with pytest.raises(InputError, match="n_perm"):
        cv.permuted_l1_changes(GRID, np.ones((3, GRID.size)), n_perm=0)
    with pytest.raises(InputError, match="spread"):
        cv.samples_for_change(float("nan"))
    with pytest.raises(InputError, match="zero"):
        cv.leave_one_out_l1(GRID, np.zeros((3, GRID.size)))
