"""What the targets determine: the Fisher information of each target about log ε, log σ.

For a target with computed values y (M,), standard errors s (M,) and Jacobian
J = ∂y/∂(log θ) (M, P), the Fisher matrix is F = (J/s)ᵀ(J/s) (P, P). Its eigenvectors are
the combinations of relative parameter changes the target fixes (large eigenvalue) or leaves
free (eigenvalue near 0); ``sqrt(diag(F⁻¹))`` is the relative standard error each parameter
would have from that target alone, at the sampling that gave s. A single number (the
diffusion coefficient) has rank 1: it fixes one combination and leaves the other free.
Neighbouring g(r) points are correlated, so its F is an upper bound on the information.
"""

from __future__ import annotations

import numpy as np


def fisher(jacobian: np.ndarray, error: np.ndarray) -> np.ndarray:
    """F (P, P) from J (M, P) and standard errors (M,) (floored at 1e-12)."""
    jn = np.asarray(jacobian, float) / np.maximum(np.asarray(error, float), 1e-12)[:, None]
    return jn.T @ jn


def report(f: np.ndarray, names: list[str], rank_tol: float = 1e-6) -> dict:
    """Eigen-analysis of a Fisher matrix: eigenvalues (descending), the combination of
    log-parameters each eigenvector fixes, the relative standard errors (null where a
    direction is undetermined) and the correlation of the parameters' errors."""
    w, v = np.linalg.eigh(f)
    order = np.argsort(w)[::-1]
    w, v = w[order], v[:, order]
    determined = w > rank_tol * max(w[0], 1e-300)
    combos = []
    for k in range(len(w)):
        vec = v[:, k] * np.sign(v[np.argmax(np.abs(v[:, k])), k])
        combos.append({"eigenvalue": float(w[k]), "determined": bool(determined[k]),
                       "combination": {n: float(c) for n, c in zip(names, vec, strict=True)},
                       "standard_error": float(1 / np.sqrt(w[k])) if determined[k] else None})
    out: dict = {"directions": combos}
    if determined.all():
        cov = np.linalg.inv(f)
        se = np.sqrt(np.diag(cov))
        out["relative_standard_error"] = {n: float(s) for n, s in zip(names, se, strict=True)}
        if len(names) == 2:
            out["correlation"] = float(cov[0, 1] / (se[0] * se[1]))
    else:
        out["relative_standard_error"] = {n: None for n in names}
    return out
