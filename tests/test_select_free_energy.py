"""``selection.strategy: free_energy`` (alflow.select_free_energy): Boltzmann weights of MD
frames and flow proposals, the score weight × (energy std / kT)², and the budget over states
by their summed scores."""

from __future__ import annotations

import numpy as np
import pytest

from alflow.select import SelectionConfig, select
from alflow.select_free_energy import boltzmann_weights, free_energy_scores, split_by_load

KT = 0.025  # eV


def _positions(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.array([[0, 0, 0], [1.1, 0, 0], [0, 1.1, 0], [0, 0, 1.1]], dtype=float)
    return base[None] * 2.0 + rng.normal(scale=0.05, size=(n, 4, 3))


def test_weights_md_frames_equal_and_flow_proposals_by_importance():
    # 4 MD frames; 3 proposals whose exp(-E/kT)/q are 1 : 1 : 0 (the third: ln q = +inf)
    en = np.array([0.0, 0.1, 0.2, 0.3, 0.0, KT, 0.0])
    flow = np.array([0, 0, 0, 0, 1, 1, 1], dtype=bool)
    lq = np.array([np.nan] * 4 + [0.0, -1.0, np.inf])
    w = boltzmann_weights(en, flow, lq, np.array(["a"] * 7), KT)
    # pools mixed by ESS: MD 4, flow 2 (two equal weights) -> 4/6 and 2/6 of the mass
    assert w[:4] == pytest.approx([1 / 6] * 4)
    assert w[4:] == pytest.approx([1 / 6, 1 / 6, 0.0])
    assert w.sum() == pytest.approx(1.0)
    # a proposal 40 kT above the others carries no weight (exp(-40)); the flow pool's ESS
    # falls to 1, so its one useful proposal weighs as one MD frame
    en2 = en.copy()
    en2[5] = 40 * KT
    w2 = boltzmann_weights(en2, flow, lq, np.array(["a"] * 7), KT)
    assert w2[5] < 1e-15 and w2[[0, 1, 2, 3, 4]] == pytest.approx([0.2] * 5)


def test_weights_are_per_state():
    en = np.zeros(6)
    flow = np.zeros(6, bool)
    w = boltzmann_weights(en, flow, None, np.array(["a", "a", "b", "b", "b", "b"]), KT)
    assert w.tolist() == pytest.approx([0.5, 0.5, 0.25, 0.25, 0.25, 0.25])


def test_score_is_weight_times_variance_in_kt():
    en = np.zeros(3)
    sd = np.array([KT, 2 * KT, np.nan])
    s = free_energy_scores(en, sd, np.zeros(3, bool), None, np.array(["a"] * 3), KT)
    assert s.tolist() == pytest.approx([1 / 3, 4 / 3, 0.0])


def test_split_by_load():
    assert split_by_load(10, {"a": 50, "b": 50}, {"a": 3.0, "b": 1.0}) == {"a": 7, "b": 3}
    # at least one each; a state short of candidates passes its share on
    assert split_by_load(10, {"a": 50, "b": 50}, {"a": 1.0, "b": 0.0}) == {"a": 9, "b": 1}
    assert split_by_load(10, {"a": 2, "b": 50}, {"a": 9.0, "b": 1.0}) == {"a": 2, "b": 8}
    assert split_by_load(3, {"a": 0, "b": 1}, {"a": 5.0, "b": 1.0}) == {"a": 0, "b": 1}
    assert sum(split_by_load(7, {"a": 9, "b": 9, "c": 9}, {"a": 1, "b": 1, "c": 1})
               .values()) == 7


def test_select_free_energy_picks_weight_times_disagreement():
    """MD frames and proposals of two states: the picks are the highest-scoring ones, an
    uncertain proposal without Boltzmann weight is not picked, the state with the larger
    summed score gets more of the budget, force deviations above trust_upper are dropped."""
    n = 24
    pos = _positions(n)
    states = np.array(["a"] * 12 + ["b"] * 12)
    flow = np.array(([False] * 8 + [True] * 4) * 2)
    en = np.zeros(n)
    lq = np.where(flow, 0.0, np.nan)
    sd = np.full(n, 0.2 * KT)
    sd[:8] = np.linspace(1, 3, 8) * KT  # state a's MD frames disagree most
    sd[8] = 50 * KT  # a proposal of a: very uncertain ...
    en[8] = 60 * KT  # ... but 60 kT up: no Boltzmann weight
    fd = np.full(n, 0.1)
    fd[7] = 0.9  # a's most uncertain MD frame: beyond the upper trust level
    cfg = SelectionConfig(strategy="free_energy", budget=6, cv_bins=1, dedup_threshold=0.0)
    sel = select(pos, fd, states, cfg, from_flow=flow, energy=en, kt_ev=KT, energy_std=sd,
                 log_q=lq)
    picked = sel.indices.tolist()
    assert 8 not in picked and 7 not in picked
    assert sel.counts["outside_trust"] == 1
    a = [i for i in picked if states[i] == "a"]
    assert a == [6, 5, 4, 3, 2][:len(a)] and len(a) == 5  # load a >> load b: 5 of 6
    assert len(picked) - len(a) == 1
    with pytest.raises(ValueError, match="energy_std"):
        select(pos, fd, states, cfg, from_flow=flow, energy=en, kt_ev=KT)
