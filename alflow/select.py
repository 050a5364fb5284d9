"""Selection of configurations to label: trust window, sanity, deduplication, budget.

Pure functions on arrays; no I/O. Positions in Å, force deviations in eV/Å.

The rule (DP-GEN's, made explicit and stratified):

1. *trust window*: keep candidates whose committee force deviation ``force_dev`` lies in
   ``[trust_lower, trust_upper)`` — below, the model is already right; above, the
   configuration is likely unphysical (the model extrapolates wildly);
2. *sanity*: finite positions and no pair closer than ``min_distance`` Å;
3. *dedup*: a candidate is dropped when its structural fingerprint lies within
   ``dedup_threshold`` Å (RMS) of an already selected or already labelled one. The fingerprint
   is the sorted vector of all pair distances: invariant to translation, rotation, reflection
   and permutation of atoms, cheap for clusters, and needs no descriptor library;
4. *budget*: at most ``budget`` picks, spread evenly across states (unused share passed on)
   and, within a state, round-robin across ``cv_bins`` quantile bins of a collective variable,
   taking the highest ``force_dev`` first in each bin.

``strategy`` chooses what the candidates are and how they are ranked; every strategy keeps
the sanity, dedup and budget rules (``benchmarks/al_efficiency.py`` compares them):

- ``free_energy``: plain MD frames and flow proposals ranked by their share
  of the variance of the correction to the oracle, Boltzmann weight × (committee energy
  std / kT)², the budget split over states by their summed shares
  (alflow.select_free_energy); only the upper trust level applies (force deviation below
  ``trust_upper``), stratified as above;
- ``uncertainty`` (the default): plain MD frames and the flow proposals whose committee
  energy lies at most ``boltzmann_window_kt`` above the highest energy of the state's MD
  frames (the MD at the campaign temperature samples the committee's Boltzmann
  distribution: a proposal far above all of it carries no Boltzmann weight and its label
  does not improve the free energy), the trust window, stratified as above;
- ``md_frames``: the same rule on plain MD frames only (what DP-GEN and psiflow do);
- ``lowest_energy``: flow proposals only, the ``energy_fraction`` of each state's proposals
  with the lowest committee energy, lowest first (the seed rule of the reference Ag6 work);
  no trust window;
- ``random``: plain MD frames drawn uniformly at random (no trust window, no
  stratification).

Besides ``budget``, the strategies ``uncertainty`` and ``free_energy`` label up to
``boundary_budget`` configurations of the committee's state boundaries
(:func:`select_boundary`): plain MD frames started in one state that the committee's own
state definition puts in no state or another one. A committee that is accurate at the
minima can still move a boundary (on lj7 it gave about 4 % of the capped octahedron's
Boltzmann mass to a third isomer, which raised ΔF by 0.03-0.05 kT); the energy correction
to the oracle cannot see that, because it labels samples drawn inside the committee's
state. Labels on the boundary teach the committee where it lies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from alflow.config import StrictModel
from alflow.select_free_energy import free_energy_scores, split_by_load


class SelectionConfig(StrictModel):
    """Which explored configurations are sent to the oracle (see the module docstring)."""

    strategy: Literal["uncertainty", "md_frames", "lowest_energy", "random",
                      "free_energy"] = Field(
        "uncertainty", description="uncertainty: trust window on all candidates; md_frames: "
        "the same on plain MD frames only; lowest_energy: the lowest-energy flow proposals; "
        "random: plain MD frames at random; free_energy: Boltzmann weight x committee "
        "energy variance")
    trust_lower: float = Field(0.02, ge=0, description="eV/Å: below, the model is trusted")
    trust_upper: float = Field(0.5, gt=0, description="eV/Å: above, the frame is discarded")
    min_distance: float = Field(0.5, ge=0, description="Å: closest allowed pair")
    dedup_threshold: float = Field(0.01, ge=0, description="Å RMS of sorted pair distances")
    budget: int = Field(20, ge=0, description="labels per generation (all states)")
    cv_bins: int = Field(4, ge=1, description="quantile bins of the CV within a state")
    energy_fraction: float = Field(0.25, gt=0, le=1, description="lowest_energy: share of "
                                   "each state's flow proposals eligible, lowest energy first")
    boltzmann_window_kt: float | None = Field(
        3.0, ge=0, description="uncertainty: kT above the highest MD-frame energy of the "
        "state beyond which a flow proposal is not a candidate; null: no limit")
    boundary_budget: int = Field(
        8, ge=0, description="labels per generation besides budget (uncertainty and "
        "free_energy): MD frames the committee's state definition puts outside the state "
        "their MD started in (the committee's state boundaries)")

    @model_validator(mode="after")
    def _window(self) -> SelectionConfig:
        if self.trust_upper <= self.trust_lower:
            raise ValueError(f"trust_upper ({self.trust_upper}) must exceed trust_lower "
                             f"({self.trust_lower})")
        return self


@dataclass
class Selection:
    """Indices (into the candidate arrays) chosen, in pick order, and counts of why others
    were dropped."""

    indices: np.ndarray
    counts: dict[str, int] = field(default_factory=dict)


def fingerprint(positions: np.ndarray) -> np.ndarray:
    """Sorted pair distances (Å): (..., N, 3) -> (..., N(N-1)/2)."""
    pos = np.asarray(positions, dtype=float)
    n = pos.shape[-2]
    i, j = np.triu_indices(n, k=1)
    d = np.linalg.norm(pos[..., i, :] - pos[..., j, :], axis=-1)
    return np.sort(d, axis=-1)


def _rms_to_set(fp: np.ndarray, pool: np.ndarray) -> float:
    if len(pool) == 0:
        return np.inf
    return float(np.sqrt(((pool - fp) ** 2).mean(axis=-1)).min())


def _split_budget(budget: int, available: dict[str, int]) -> dict[str, int]:
    """Even share per group, unused share passed to groups with more available (stable)."""
    share = {k: 0 for k in available}
    left = budget
    open_ = [k for k in available if available[k] > 0]
    while left > 0 and open_:
        per = max(left // len(open_), 1)
        for k in list(open_):
            if left == 0:
                break
            take = min(per, available[k] - share[k], left)
            share[k] += take
            left -= take
            if share[k] >= available[k]:
                open_.remove(k)
    return share


def _cv_bins(cv: np.ndarray, nbins: int) -> np.ndarray:
    if nbins == 1 or len(cv) == 0 or not np.all(np.isfinite(cv)):
        return np.zeros(len(cv), dtype=int)
    edges = np.quantile(cv, np.linspace(0, 1, nbins + 1)[1:-1])
    return np.searchsorted(edges, cv, side="right")


def select(positions: np.ndarray, force_dev: np.ndarray | None, states: Sequence[str],
           config: SelectionConfig, cv: np.ndarray | None = None,
           existing: np.ndarray | None = None, seed: int = 0,
           from_flow: np.ndarray | None = None, energy: np.ndarray | None = None,
           kt_ev: float | None = None, energy_std: np.ndarray | None = None,
           log_q: np.ndarray | None = None) -> Selection:
    """Choose candidates to label.

    positions (M, N, 3) Å; force_dev (M,) eV/Å (needed by ``uncertainty`` and
    ``md_frames``); states (M,) state name per candidate; cv (M,) optional collective
    variable; existing (K, N, 3) Å already labelled configurations (dedup against them);
    from_flow (M,) bool, True for a flow proposal, False for a plain MD frame (None: all MD);
    energy (M,) committee energy, eV (needed by ``lowest_energy``; with ``kt_ev``, the
    thermal energy in eV, ``uncertainty`` applies ``boltzmann_window_kt`` to it);
    ``free_energy`` needs ``energy``, ``kt_ev`` and energy_std (M,) the committee's energy
    standard deviation, eV, and uses log_q (M,) ln q of the flow behind each proposal (NaN
    for MD frames; None: proposals weigh like MD frames).
    """
    pos = np.asarray(positions, dtype=float)
    m = len(pos)
    states = np.asarray(list(states), dtype=object)
    if len(states) != m:
        raise ValueError(f"states has {len(states)} entries for {m} candidates")
    strategy = config.strategy
    counts = {"candidates": m, "other_origin": 0, "above_boltzmann_window": 0,
              "outside_trust": 0, "no_weight": 0, "above_energy_fraction": 0, "unsane": 0,
              "duplicate": 0, "over_budget": 0, "selected": 0}
    if m == 0:
        return Selection(np.zeros(0, dtype=int), counts)
    flow = np.zeros(m, bool) if from_flow is None else np.asarray(from_flow, dtype=bool)
    ok = flow.copy() if strategy == "lowest_energy" else (~flow if strategy in (
        "md_frames", "random") else np.ones(m, dtype=bool))
    counts["other_origin"] = int((~ok).sum())
    if (strategy == "uncertainty" and config.boltzmann_window_kt is not None
            and energy is not None and kt_ev is not None):
        en = np.asarray(energy, dtype=float)
        far = np.zeros(m, dtype=bool)
        for s in set(states.tolist()):
            mine = states == s
            md = en[mine & ~flow & np.isfinite(en)]
            if len(md):  # without MD frames of the state there is no Boltzmann scale
                top = md.max() + config.boltzmann_window_kt * kt_ev
                far |= mine & flow & ~(en <= top)
        counts["above_boltzmann_window"] = int((ok & far).sum())
        ok &= ~far
    fd = np.zeros(m)
    if strategy in ("uncertainty", "md_frames"):
        if force_dev is None:
            raise ValueError(f"strategy {strategy!r} needs force_dev")
        fd = np.asarray(force_dev, dtype=float)
        inside = np.isfinite(fd) & (fd >= config.trust_lower) & (fd < config.trust_upper)
        counts["outside_trust"] = int((ok & ~inside).sum())
        ok &= inside
    elif strategy == "lowest_energy":
        if energy is None:
            raise ValueError("strategy 'lowest_energy' needs energy")
        en = np.asarray(energy, dtype=float)
        low = np.zeros(m, dtype=bool)
        for s in set(states[ok].tolist()):
            mine = ok & (states == s) & np.isfinite(en)
            k = int(np.ceil(config.energy_fraction * mine.sum()))
            low[np.flatnonzero(mine)[np.argsort(en[mine], kind="stable")[:k]]] = True
        counts["above_energy_fraction"] = int((ok & ~low).sum())
        ok &= low
        fd = -en  # the ranking below takes the highest first: lowest energy first
    elif strategy == "free_energy":
        if energy is None or energy_std is None or kt_ev is None:
            raise ValueError("strategy 'free_energy' needs energy, energy_std and kt_ev")
        if force_dev is not None:
            dev = np.asarray(force_dev, dtype=float)
            sound = ~(dev >= config.trust_upper)
            counts["outside_trust"] = int((ok & ~sound).sum())
            ok &= sound
        fd = free_energy_scores(energy, energy_std, flow, log_q, states, kt_ev)
        counts["no_weight"] = int((ok & ~(fd > 0)).sum())
        ok &= fd > 0
    finite = np.all(np.isfinite(pos.reshape(m, -1)), axis=1)
    fps = np.zeros((m, pos.shape[1] * (pos.shape[1] - 1) // 2))
    fps[finite] = fingerprint(pos[finite])
    sane = finite & (fps[:, 0] >= config.min_distance if fps.shape[1] else finite)
    counts["unsane"] = int((ok & ~sane).sum())
    ok &= sane

    rng = np.random.default_rng(seed)
    idx = np.flatnonzero(ok)
    # order within each (state, bin) queue: highest force deviation (or lowest energy)
    # first, or random
    order = rng.permutation(idx) if strategy == "random" else idx[np.argsort(-fd[idx],
                                                                             kind="stable")]
    queues: dict[str, list[list[int]]] = {}
    names = list(dict.fromkeys(states.tolist()))
    for s in names:
        members = [i for i in order if states[i] == s]
        if strategy in ("random", "lowest_energy") or cv is None:
            queues[s] = [members]
        else:
            cvs = np.asarray(cv, dtype=float)[members]
            b = _cv_bins(cvs, config.cv_bins)
            queues[s] = [[i for i, bi in zip(members, b, strict=True) if bi == k]
                         for k in range(config.cv_bins)]
    pool = [fingerprint(np.asarray(existing, dtype=float))] if existing is not None and len(
        existing) else []
    pool_arr = np.concatenate(pool) if pool else np.zeros((0, fps.shape[1]))
    chosen: list[int] = []
    chosen_fps: list[np.ndarray] = []

    def is_dup(i: int) -> bool:
        fp = fps[i]
        if _rms_to_set(fp, pool_arr) <= config.dedup_threshold:
            return True
        return bool(chosen_fps) and _rms_to_set(fp, np.array(chosen_fps)) <= config.dedup_threshold

    # dedup first (so budget shares count only distinct candidates), then share the budget
    distinct: dict[str, list[list[int]]] = {}
    for s in names:
        distinct[s] = []
        for q in queues[s]:
            keep = []
            for i in q:
                if is_dup(i):
                    counts["duplicate"] += 1
                else:
                    keep.append(i)
                    chosen_fps.append(fps[i])
            distinct[s].append(keep)
    avail = {s: sum(map(len, distinct[s])) for s in names}
    share = (split_by_load(config.budget, avail, {s: float(sum(fd[i] for q in distinct[s]
                                                               for i in q)) for s in names})
             if strategy == "free_energy" else _split_budget(config.budget, avail))
    for s in names:
        bins = [list(q) for q in distinct[s]]
        taken = 0
        while taken < share[s] and any(bins):
            for q in bins:
                if q and taken < share[s]:
                    chosen.append(q.pop(0))
                    taken += 1
        counts["over_budget"] += sum(map(len, bins))
    counts["selected"] = len(chosen)
    return Selection(np.asarray(chosen, dtype=int), counts)


def select_boundary(positions: np.ndarray, origin: Sequence[str],
                    assigned: Sequence[str | None], budget: int, config: SelectionConfig,
                    force_dev: np.ndarray | None = None, existing: np.ndarray | None = None,
                    seed: int = 0) -> Selection:
    """Configurations on the committee's state boundaries (see the module docstring).

    positions (M, N, 3) Å of plain MD frames; origin (M,) the state whose structure each
    frame's MD started from; assigned (M,) the state the committee's state definition gives
    it (None: no state). Candidates are the frames with assigned != origin that are sane
    (no pair closer than ``min_distance`` Å), sound (force_dev (M,) eV/Å below
    ``trust_upper``) and distinct (``dedup_threshold`` against each other and ``existing``
    (K, N, 3) Å). At most ``budget`` are chosen, spread evenly over origin states, in a
    random order of ``seed``.
    """
    pos = np.asarray(positions, dtype=float)
    m = len(pos)
    origin_a = np.asarray(list(origin), dtype=object)
    assigned_a = np.asarray(list(assigned), dtype=object)
    if len(origin_a) != m or len(assigned_a) != m:
        raise ValueError(f"origin and assigned need {m} entries, got {len(origin_a)} and "
                         f"{len(assigned_a)}")
    left = np.array([a != o for a, o in zip(assigned_a, origin_a, strict=True)], dtype=bool)
    counts = {"boundary_candidates": int(left.sum()), "boundary_selected": 0}
    if m == 0 or budget == 0 or not left.any():
        return Selection(np.zeros(0, dtype=int), counts)
    if force_dev is not None:
        left &= ~(np.asarray(force_dev, dtype=float) >= config.trust_upper)
    left &= np.all(np.isfinite(pos.reshape(m, -1)), axis=1)
    fps = np.zeros((m, pos.shape[1] * (pos.shape[1] - 1) // 2))
    fps[left] = fingerprint(pos[left])
    if fps.shape[1]:
        left &= fps[:, 0] >= config.min_distance
    pool = (fingerprint(np.asarray(existing, dtype=float)) if existing is not None
            and len(existing) else np.zeros((0, fps.shape[1])))
    names = list(dict.fromkeys(origin_a.tolist()))
    distinct: dict[str, list[int]] = {s: [] for s in names}
    for i in np.random.default_rng(seed).permutation(np.flatnonzero(left)):
        if _rms_to_set(fps[i], pool) > config.dedup_threshold:
            distinct[origin_a[i]].append(int(i))
            pool = np.concatenate([pool, fps[i][None]])
    share = _split_budget(budget, {s: len(v) for s, v in distinct.items()})
    chosen = [i for s in names for i in distinct[s][:share[s]]]
    counts["boundary_selected"] = len(chosen)
    return Selection(np.asarray(chosen, dtype=int), counts)
