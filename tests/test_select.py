"""Selection: trust window, sanity, dedup by fingerprint, budget spread over states/CV bins."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from alflow.select import SelectionConfig, fingerprint, select, select_boundary


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
    cfg = SelectionConfig(strategy="uncertainty", trust_lower=0.05, trust_upper=0.5,
                          min_distance=0.5, dedup_threshold=0.01, budget=10, cv_bins=1)
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
    cfg = SelectionConfig(strategy="uncertainty", trust_lower=0.05, trust_upper=0.5, budget=8,
                          cv_bins=4,
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


def _mixed(n_md=20, n_flow=20, seed=5):
    """Candidates of one state: n_md MD frames then n_flow flow proposals, with force
    deviations and energies that differ by origin."""
    rng = np.random.default_rng(seed)
    pos = np.array([_cluster(rng) for _ in range(n_md + n_flow)])
    from_flow = np.r_[np.zeros(n_md, bool), np.ones(n_flow, bool)]
    fd = rng.uniform(0.1, 0.4, n_md + n_flow)
    energy = rng.normal(size=n_md + n_flow)
    return pos, from_flow, fd, energy


def test_each_strategy_picks_what_it_claims():
    pos, flow, fd, en = _mixed()
    n = len(pos)
    states = ["a"] * n
    base = {"trust_lower": 0.05, "trust_upper": 0.5, "budget": 6, "cv_bins": 1,
            "dedup_threshold": 0.0}
    fd_win = fd.copy()
    fd_win[[0, 25]] = 0.9  # outside the trust window, one MD frame and one flow proposal

    def pick(strategy, **kw):
        cfg = SelectionConfig(strategy=strategy, **{**base, **kw})
        return select(pos, fd_win, states, cfg, from_flow=flow, energy=en, seed=2)

    # uncertainty: both origins, inside the window, highest force deviation first
    sel = pick("uncertainty")
    inside = np.flatnonzero(fd_win < 0.5)
    assert sel.indices.tolist() == inside[np.argsort(-fd_win[inside])][:6].tolist()
    assert flow[sel.indices].any() and (~flow[sel.indices]).any()
    # md_frames: the same rule on MD frames only
    sel = pick("md_frames")
    md_in = np.flatnonzero(~flow & (fd_win < 0.5))
    assert sel.indices.tolist() == md_in[np.argsort(-fd_win[md_in])][:6].tolist()
    assert sel.counts["other_origin"] == 20 and sel.counts["outside_trust"] == 1
    # lowest_energy: flow proposals only, the lowest quarter by energy, lowest first, any
    # force deviation (the window does not apply)
    sel = pick("lowest_energy", budget=20)
    fl = np.flatnonzero(flow)
    assert sel.indices.tolist() == fl[np.argsort(en[fl])][:5].tolist()  # ceil(0.25 * 20)
    assert sel.counts["above_energy_fraction"] == 15
    sel = pick("lowest_energy", budget=20, energy_fraction=0.5)
    assert sel.indices.tolist() == fl[np.argsort(en[fl])][:10].tolist()
    # random: MD frames only, any force deviation, not in force-deviation order
    sels = [select(pos, fd_win, states, SelectionConfig(strategy="random", **base),
                   from_flow=flow, seed=s).indices for s in range(5)]
    assert all(not flow[s].any() and len(s) == 6 for s in sels)
    assert len({tuple(sorted(s.tolist())) for s in sels}) > 1


def test_strategies_need_their_inputs_and_keep_states_apart():
    pos, flow, fd, en = _mixed()
    states = ["a"] * 10 + ["b"] * 10 + ["a"] * 10 + ["b"] * 10
    cfg = SelectionConfig(strategy="lowest_energy", budget=40, dedup_threshold=0.0)
    with pytest.raises(ValueError, match="energy"):
        select(pos, fd, states, cfg, from_flow=flow)
    with pytest.raises(ValueError, match="force_dev"):
        select(pos, None, states, SelectionConfig(strategy="md_frames"), from_flow=flow)
    sel = select(pos, fd, states, cfg, from_flow=flow, energy=en)
    for s, idx in (("a", np.arange(20, 30)), ("b", np.arange(30, 40))):
        low = idx[np.argsort(en[idx])][:3]  # ceil(0.25 * 10) per state
        assert sorted(i for i in sel.indices if states[i] == s) == sorted(low.tolist())
    # without origins every candidate is an MD frame: lowest_energy finds nothing
    assert len(select(pos, fd, states, cfg, energy=en).indices) == 0
    with pytest.raises(ValueError, match="energy_fraction"):
        SelectionConfig(energy_fraction=0.0)


def test_uncertainty_keeps_flow_proposals_within_the_boltzmann_window():
    """A flow proposal far above every MD frame of its state (no Boltzmann weight) is not a
    candidate of ``uncertainty``, however uncertain; one inside the window is; MD frames
    always are; without kT or energies no window applies."""
    pos, flow, fd, _ = _mixed(n_md=10, n_flow=10)
    kt = 0.025  # eV
    en = np.r_[np.linspace(0.0, 0.2, 10), np.full(10, 0.2 + 2.0 * kt)]  # flow: 2 kT above
    en[[10, 11]] = 0.2 + 4.0 * kt  # these two: 4 kT above the highest MD frame
    fd = fd.copy()
    fd[[10, 11]] = 0.45  # the most uncertain of all
    cfg = SelectionConfig(strategy="uncertainty", trust_lower=0.05, trust_upper=0.5, budget=40,
                          cv_bins=1,
                          dedup_threshold=0.0)
    sel = select(pos, fd, ["a"] * 20, cfg, from_flow=flow, energy=en, kt_ev=kt)
    assert sorted(sel.indices.tolist()) == [i for i in range(20) if i not in (10, 11)]
    assert sel.counts["above_boltzmann_window"] == 2
    wide = cfg.model_copy(update={"boltzmann_window_kt": 5.0})
    assert len(select(pos, fd, ["a"] * 20, wide, from_flow=flow, energy=en, kt_ev=kt)
               .indices) == 20
    off = cfg.model_copy(update={"boltzmann_window_kt": None})
    assert select(pos, fd, ["a"] * 20, off, from_flow=flow, energy=en, kt_ev=kt
                  ).indices[:2].tolist() == [10, 11]
    assert len(select(pos, fd, ["a"] * 20, cfg, from_flow=flow).indices) == 20


def test_boundary_picks_only_frames_outside_their_own_state_spread_over_states():
    rng = np.random.default_rng(3)
    pos = np.array([_cluster(rng) for _ in range(12)])
    origin = ["a"] * 6 + ["b"] * 6
    assigned = ["a", "a", None, "b", None, None, "b", "b", "b", "a", None, "b"]
    outside = [i for i in range(12) if assigned[i] != origin[i]]  # 2, 3, 4, 5, 9, 10
    cfg = SelectionConfig(min_distance=0.0, dedup_threshold=0.0)
    sel = select_boundary(pos, origin, assigned, 4, cfg, seed=1)
    picked = sel.indices.tolist()
    assert set(picked) <= set(outside) and len(picked) == 4
    assert sum(origin[i] == "b" for i in picked) == 2  # both of b's, two of a's four
    assert sel.counts == {"boundary_candidates": 6, "boundary_selected": 4}
    every = select_boundary(pos, origin, assigned, 100, cfg).indices.tolist()
    assert sorted(every) == outside  # the budget is passed on, never exceeded
    assert len(select_boundary(pos, origin, assigned, 0, cfg).indices) == 0
    assert len(select_boundary(pos, origin, origin, 4, cfg).indices) == 0


def test_boundary_drops_unsane_unsound_and_duplicate_frames():
    rng = np.random.default_rng(4)
    base = [_cluster(rng) for _ in range(5)]
    pos = np.array(base + [base[0] + 1e-4])  # 5 duplicates 0
    pos[1][1] = pos[1][0] + 0.01  # unsane
    assert fingerprint(pos[[0, 2, 3, 4]])[:, 0].min() > 0.05
    fd = np.array([0.1, 0.1, 0.9, 0.1, 0.1, 0.1])  # 2: above trust_upper
    cfg = SelectionConfig(trust_upper=0.5, min_distance=0.05, dedup_threshold=0.01)
    origin, assigned = ["a"] * 6, [None] * 6
    sel = select_boundary(pos, origin, assigned, 10, cfg, force_dev=fd, existing=pos[[3]])
    got = sorted(sel.indices.tolist())
    assert got in ([0, 4], [4, 5])  # 1 unsane, 2 unsound, 3 labelled, one of 0/5
    with pytest.raises(ValueError, match="origin and assigned"):
        select_boundary(pos, origin[:2], assigned, 1, cfg)


def test_committee_whose_states_collapse_leaves_exploration_candidates_without_a_state():
    """A rough committee that quenches two states' references to one minimum has no
    distinct states: the exploration's MD frames get no state (-2, no boundary labels)
    instead of failing the step; distinct states assign as BasinStates does."""
    from ase.io import read

    from alflow.campaign.config import StateConfig
    from alflow.campaign.steps import committee_states_of
    from alflow.campaign.system import System
    from alflow.examples import DATA
    from alflow.potential import LennardJones

    frames = {a.info["state"]: a for a in read(DATA / "lj7.extxyz", ":")}
    pbp, coh = frames["bipyramid"], frames["capped_octahedron"]
    twin = pbp.copy()
    twin.positions += np.random.default_rng(0).normal(0, 0.01, twin.positions.shape)
    numbers = pbp.numbers
    pot = LennardJones(numbers)
    states = {s: StateConfig(structures="x.xyz", definition={"kind": "basin"})
              for s in ("a", "b")}
    x = np.stack([pbp.positions, coh.positions])
    collapsed = System(numbers, pbp.get_masses(), None, {"a": [pbp], "b": [twin]})
    out = committee_states_of(pot, collapsed, states, x, "a")
    assert out.tolist() == [-2, -2]
    distinct = System(numbers, pbp.get_masses(), None, {"a": [pbp], "b": [coh]})
    assert committee_states_of(pot, distinct, states, x, "a").tolist() == [0, 1]
