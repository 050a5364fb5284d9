"""Replica exchange between neighbouring temperatures (parallel tempering), in NumPy.

Replicas of C independent chains at K temperatures ``temps`` (K,) K, lowest first. One
exchange round proposes swapping replicas k and k+1 for every k of one parity (0 or 1,
alternated by the caller), in every chain at once, and accepts with the Metropolis
probability min(1, exp[(β_k − β_{k+1})(E_k − E_{k+1})]). Accepted swaps exchange the
configurations and what belongs to them; velocities are rescaled by √(T_k/T_{k+1}) so that
each keeps its Maxwell–Boltzmann distribution at its new temperature.
"""

from __future__ import annotations

import numpy as np
from ase import units


def exchange_neighbours(energies: np.ndarray, temps: np.ndarray, parity: int,
                        rng: np.random.Generator, carried: tuple[np.ndarray, ...] = (),
                        velocities: np.ndarray | None = None) -> list[tuple[int, np.ndarray]]:
    """One exchange round, in place.

    energies (C, K) eV; ``carried``: arrays of shape (C, K, ...) that move with a configuration
    (positions, forces; ``energies`` always moves); ``velocities`` (C, K, ...) are rescaled.
    Returns, for each proposed pair k, the mask (C,) of chains whose swap k <-> k+1 was
    accepted (for callers that hold per-replica objects of their own).
    """
    temps = np.asarray(temps, dtype=float)
    beta = 1.0 / (units.kB * temps)
    out = []
    for k in range(parity % 2, len(temps) - 1, 2):
        ok = np.log(rng.random(energies.shape[0])) < (beta[k] - beta[k + 1]) * (
            energies[:, k] - energies[:, k + 1])
        r = np.sqrt(temps[k] / temps[k + 1])
        moved = [(a, 1.0) for a in (energies, *carried)]
        if velocities is not None:
            moved.append((velocities, r))
        for arr, scale in moved:
            a, b = arr[ok, k].copy(), arr[ok, k + 1].copy()
            arr[ok, k], arr[ok, k + 1] = b * scale, a / scale
        out.append((k, ok))
    return out
