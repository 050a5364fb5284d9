"""The umbrella estimators of benchmarks/ag6_xtb_reference.py on a two-class model along
planarity whose ΔF is known: frames drawn exactly from each window's biased density."""

import sys
from pathlib import Path

import numpy as np
import pytest
from ase import units

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
ref = pytest.importorskip("ag6_xtb_reference")

BETA = 1.0 / (units.kB * ref.T_K)
K_BIAS = 15.0
CENTRES = np.linspace(0.0, 1.2, 13)
GRID = np.linspace(0.0, 1.6, 16001)
# unbiased class densities along p (per Å): planar near 0, 3d near 0.8 Å
RHO = np.stack([np.exp(-GRID**2 / (2 * 0.2**2)), 0.05 * np.exp(-(GRID - 0.75)**2 / (2 * 0.1**2))])
EXACT = -np.log(RHO[1].sum() / RHO[0].sum())


def draw(n: int, rng: np.random.Generator, stuck: tuple[int, ...] = ()
         ) -> tuple[np.ndarray, np.ndarray]:
    """n frames per window (n, K) of planarity and class, exact samples of each window; the
    ``stuck`` windows hold 3d frames only (exact samples of the 3d class there: a class
    that never converts, as a window started 3d whose planar channel is never reached)."""
    plan, label = np.zeros((n, len(CENTRES))), np.zeros((n, len(CENTRES)), int)
    for k, c in enumerate(CENTRES):
        dens = RHO * np.exp(-BETA * 0.5 * K_BIAS * (GRID - c) ** 2)
        if k in stuck:
            dens = dens * np.array([[0.0], [1.0]])
        cdf = np.cumsum(dens.sum(0))
        i = np.searchsorted(cdf / cdf[-1], rng.random(n))
        plan[:, k] = GRID[i]
        label[:, k] = rng.random(n) < dens[1, i] / np.maximum(dens[:, i].sum(0), 1e-300)
    return plan, label


def test_mbar_and_linked_windows_recover_the_known_delta_f():
    rng = np.random.default_rng(1)
    runs = [draw(400, rng) for _ in range(2)]
    plan = np.concatenate([p for p, _ in runs])
    label = np.concatenate([lab for _, lab in runs])
    plain = ref.mbar_delta_f(plan, label, np.zeros(plan.shape, bool), CENTRES, K_BIAS,
                             [(0, 400), (400, 800)], 5, 50)
    assert abs(plain["value"] - EXACT) < 3 * plain["error"] + 0.02, (plain["value"], EXACT)
    linked = ref.linked_delta_f(runs, CENTRES, K_BIAS, 5, 50)
    assert len(linked["link_windows"]) >= 2
    assert abs(linked["value"] - EXACT) < 3 * linked["error"] + 0.02, (linked["value"], EXACT)
    # every linking window implies the same ΔF within its error (equilibrium)
    for k in linked["link_windows"]:
        x, e = linked["window_delta_f_kt"][k], linked["window_error_kt"][k]
        assert abs(x - EXACT) < 3 * e + 0.02, (k, x, e, EXACT)


def test_a_window_stuck_in_its_start_class_is_not_a_link_and_does_not_bias_the_result():
    rng = np.random.default_rng(2)
    runs = [draw(400, rng), draw(400, rng, stuck=(4, 5))]
    plan = np.concatenate([p for p, _ in runs])
    label = np.concatenate([lab for _, lab in runs])
    plain = ref.mbar_delta_f(plan, label, np.zeros(plan.shape, bool), CENTRES, K_BIAS,
                             [(0, 400), (400, 800)], 5, 50)
    linked = ref.linked_delta_f(runs, CENTRES, K_BIAS, 5, 50)
    assert linked["link_windows"] and not set(linked["link_windows"]) & {4, 5}
    assert abs(linked["value"] - EXACT) < 3 * linked["error"] + 0.02
    assert abs(plain["value"] - EXACT) > abs(linked["value"] - EXACT)


def test_round_trips_count_visits_of_both_end_windows():
    # replica 0 goes 0 -> 2 -> 0 -> 2 -> 0 in a 3-window ladder (two round trips)
    where = [0, 1, 2, 1, 0, 1, 2, 2, 0]
    replica = np.array([[0, 1, 2]] * len(where))
    for t, w in enumerate(where):
        row = [r for r in (1, 2)]
        row.insert(w, 0)
        replica[t] = row
    assert ref.round_trips(replica)[0] == 2
