"""Selection: trust window, sanity, dedup by fingerprint, budget spread over states/CV bins."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from alflow.select import SelectionConfig, fingerprint, select


def _cluster(rng, n=5):
    return rng.normal(scale=2.0, size=(n, 3)) + np.arange(n)[:, None] * 1.5


def test_fingerprint_invariant_to_rotation_translation_permutation():
    rng = np.random.default_rng(1)
    x = _cluster(rng)
    y = Rotation.random(random_state=2).apply(x)[rng.permutation(len(x))] + 3.0
    assert np.allclose(fingerprint(x), fingerprint(y), atol=1e-12)
    z = x.copy()
    z[0] += 0.3
    assert np.abs(fingerprint(z) - fingerprint(x)).max() > 0.05


def test_trust_window_sanity_and_dedup():
    rng = np.random.default_rng(0)
    base = [_cluster(rng) for _ in range(6)]
    pos = np.array(base + [base[0] + 1e-4])  # last is a duplicate of the first
    pos[5][1] = pos[5][0] + 0.1  # two atoms 0.1 Å apart: unsane
    fd = np.array([0.1, 0.01, 0.9, 0.2, 0.3, 0.2, 0.1])  # 1: below window, 2: above
    cfg = SelectionConfig(trust_lower=0.05, trust_upper=0.5, min_distance=0.5,
                          dedup_threshold=0.01, budget=10, cv_bins=1)
    sel = select(pos, fd, ["a"] * 7, cfg)
    assert sorted(sel.indices.tolist()) in ([0, 3, 4], [3, 4, 6])
    assert sel.counts["outside_trust"] == 2
    assert sel.counts["unsane"] == 1
    assert sel.counts["duplicate"] == 1
    # against already-labelled structures: the duplicate pair is dropped entirely
    sel2 = select(pos, fd, ["a"] * 7, cfg, existing=pos[[0]])
    assert sorted(sel2.indices.tolist()) == [3, 4]


def test_budget_spread_over_states_and_cv_bins():
    rng = np.random.default_rng(3)
    pos = np.array([_cluster(rng) for _ in range(40)])
    states = ["a"] * 30 + ["b"] * 10
    fd = rng.uniform(0.1, 0.4, size=40)
    cv = np.concatenate([np.linspace(0, 1, 30), np.linspace(0, 1, 10)])
    cfg = SelectionConfig(trust_lower=0.05, trust_upper=0.5, budget=8, cv_bins=4,
                          dedup_threshold=0.0)
    sel = select(pos, fd, states, cfg, cv=cv)
    chosen = np.asarray(states, dtype=object)[sel.indices]
    assert (chosen == "a").sum() == 4 and (chosen == "b").sum() == 4
    a_idx = [i for i in sel.indices if states[i] == "a"]
    bins = np.searchsorted(np.quantile(cv[:30], [0.25, 0.5, 0.75]), cv[a_idx], side="right")
    assert sorted(bins.tolist()) == [0, 1, 2, 3]  # one per CV quartile
    # a state with fewer candidates than its share passes the rest on
    sel = select(pos, fd, states, cfg.model_copy(update={"budget": 30}), cv=cv)
    chosen = np.asarray(states, dtype=object)[sel.indices]
    assert (chosen == "b").sum() == 10 and (chosen == "a").sum() == 20


def test_random_baseline_ignores_trust_and_config_checks():
    rng = np.random.default_rng(4)
    pos = np.array([_cluster(rng) for _ in range(20)])
    cfg = SelectionConfig(strategy="random", budget=5, dedup_threshold=0.0)
    sel = select(pos, None, ["a"] * 20, cfg, seed=1)
    assert len(sel.indices) == 5 and len(set(sel.indices.tolist())) == 5
    with pytest.raises(ValueError, match="trust_upper"):
        SelectionConfig(trust_lower=0.3, trust_upper=0.2)
