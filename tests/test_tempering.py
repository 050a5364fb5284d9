"""Replica exchange: Metropolis acceptance, what moves with a swap, velocity rescaling."""

from __future__ import annotations

import numpy as np
from ase import units

from alflow.sampling.tempering import exchange_neighbours


def test_acceptance_is_the_metropolis_probability():
    temps = np.array([100.0, 200.0])
    dbeta = 1 / (units.kB * 100.0) - 1 / (units.kB * 200.0)
    n = 40000
    e = np.zeros((n, 2))
    e[:, 0] = -1.0 / dbeta          # the cold replica lies 1/Δβ lower: accept with e^-1
    (k, ok), = exchange_neighbours(e, temps, 0, np.random.default_rng(1))
    p, se = np.exp(-1.0), np.sqrt(np.exp(-1.0) * (1 - np.exp(-1.0)) / n)
    assert k == 0 and abs(ok.mean() - p) < 4 * se
    assert np.all(e[ok, 0] == 0.0) and np.all(e[~ok, 0] < 0)   # energies moved with the swap
    e[:, 0], e[:, 1] = 0.0, -1.0     # the hot replica lower: always accepted
    (_, ok), = exchange_neighbours(e, temps, 0, np.random.default_rng(2))
    assert ok.all()


def test_swap_moves_configurations_and_rescales_velocities_for_one_parity():
    temps = np.array([100.0, 150.0, 300.0, 600.0])
    c, k = 3, len(temps)
    e = np.zeros((c, k))             # equal energies: every proposed swap is accepted
    x = np.arange(c * k * 2, dtype=float).reshape(c, k, 2)
    v = np.ones((c, k, 2)) * np.sqrt(temps)[None, :, None]
    x0, v0 = x.copy(), v.copy()
    swaps = exchange_neighbours(e, temps, 1, np.random.default_rng(0), (x,), v)
    assert [s[0] for s in swaps] == [1]                 # parity 1: only the pair (1, 2)
    assert np.array_equal(x[:, 1], x0[:, 2]) and np.array_equal(x[:, 2], x0[:, 1])
    assert np.array_equal(x[:, [0, 3]], x0[:, [0, 3]])
    # v/sqrt(T) is what each configuration keeps: its kinetic energy fits the new temperature
    np.testing.assert_allclose(v / np.sqrt(temps)[None, :, None],
                               v0 / np.sqrt(temps)[None, :, None])
    assert [s[0] for s in exchange_neighbours(e, temps, 0, np.random.default_rng(0))] == [0, 2]
