"""How many samples an averaged spectrum needs: order-free estimates of its convergence.

:func:`alflow.observables.spectra.running_l1_change` follows one order of the samples, and a
single order is noisy (one far-off sample late in the order resets the count). Two estimates
that do not depend on the order, for spectra arrays ``(S, G)`` on a grid (eV):

- the *expected* change on adding the n-th sample, averaged over random orders
  (:func:`permuted_l1_changes`, :func:`expected_samples_to_converge`), for n <= S;
- the *spread* ``c``: with uniform weights, adding the n-th sample changes the average by
  ``(s_n - mean_{n-1}) / n``, so the relative L1 change is about ``c / n`` with
  ``c = E int|s - mean| / int|mean|``. :func:`leave_one_out_l1` gives the per-sample terms
  (each sample against the average of the others); their mean is ``c``, exactly ``S`` times the
  order-averaged change at n = S, and their standard error gives an interval.
  :func:`samples_for_change` turns ``c`` into a sample count beyond the S computed.
"""

from __future__ import annotations

import math

import numpy as np

from alflow.errors import InputError
from alflow.observables.spectra import integrate, normalise_weights, running_l1_change


def permuted_l1_changes(grid_ev: np.ndarray, spectra: np.ndarray,
                        weights: np.ndarray | None = None, n_perm: int = 200,
                        seed: int = 0) -> np.ndarray:
    """Relative L1 change on adding sample n = 2..S for ``n_perm`` random orders of the
    samples (each weight stays with its sample); shape ``(n_perm, S - 1)``. The column mean is
    the expected change at n."""
    s = np.asarray(spectra, float)
    if s.ndim != 2 or len(s) < 2:
        raise InputError(f"spectra: need an (S, G) array with S >= 2, got shape {s.shape}")
    if n_perm < 1:
        raise InputError(f"n_perm: must be >= 1, got {n_perm}")
    w = normalise_weights(weights, n=len(s))
    rng = np.random.default_rng(seed)
    out = np.empty((n_perm, len(s) - 1))
    for k in range(n_perm):
        p = rng.permutation(len(s))
        out[k] = running_l1_change(grid_ev, s[p], w[p])
    return out


def expected_samples_to_converge(expected_changes: np.ndarray, tol: float = 0.05) -> int | None:
    """Smallest n at which the expected change on adding sample n + 1 is below ``tol``.

    ``expected_changes[k]`` belongs to adding sample k + 2 (the column mean of
    :func:`permuted_l1_changes`); None if it never falls below ``tol``."""
    below = np.flatnonzero(np.asarray(expected_changes, float) < tol)
    return int(below[0] + 1) if below.size else None


def leave_one_out_l1(grid_ev: np.ndarray, spectra: np.ndarray) -> np.ndarray:
    """Per sample (uniform weights), ``int|s_i - mean of the others| / int|mean of all|``;
    shape ``(S,)``. Their mean is the spread ``c`` of the module docstring."""
    s = np.asarray(spectra, float)
    if s.ndim != 2 or len(s) < 2:
        raise InputError(f"spectra: need an (S, G) array with S >= 2, got shape {s.shape}")
    n = len(s)
    total = s.sum(axis=0)
    denom = float(integrate(grid_ev, np.abs(total / n)))
    if denom <= 0:
        raise InputError("spectra: the average spectrum is zero, no relative change exists")
    others = (total[None, :] - s) / (n - 1)
    return np.asarray(integrate(grid_ev, np.abs(s - others)), float) / denom


def samples_for_change(spread: float, tol: float = 0.05) -> int:
    """Smallest n with ``spread / (n + 1) < tol``: after n samples, one more is expected to
    change the average by less than ``tol``."""
    if not (spread >= 0 and math.isfinite(spread)):
        raise InputError(f"spread: must be finite and >= 0, got {spread}")
    if tol <= 0:
        raise InputError(f"tol: must be > 0, got {tol}")
    return max(1, math.floor(spread / tol))
