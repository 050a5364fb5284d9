"""The ``free_energy`` selection score: where the correction to the oracle gets its variance.

Pure functions on arrays; no I/O. Energies in eV, ``kt_ev`` the thermal energy in eV,
ln q in nats.

A state's correction to the oracle is the exponential average −kT ln ⟨exp(−ΔE/kT)⟩ of
ΔE = E_oracle − E_committee over Boltzmann samples of the committee in the state
(alflow.estimate.reweight); to first order its variance is Var_B(ΔE)/kT² divided by the
number of samples. A configuration adds to that variance in proportion to how much
Boltzmann weight it carries and how far the committee may be off there, which its energy
disagreement measures. The rule, per state:

1. *Boltzmann weight* ``w`` (sums to 1 over the state's candidates): plain MD frames at the
   campaign temperature are draws of the committee's Boltzmann distribution, each weighs the
   same; a flow proposal weighs its self-normalised importance weight
   exp(−E/kT − ln q) among the state's proposals. The two pools estimate the same
   distribution and are mixed in proportion to their effective sample sizes (n for the MD
   frames, (Σw)²/Σw² for the proposals), so a poor flow (few effective samples) counts
   little and a proposal far above the MD energies counts nothing;
2. *score* = w · (σ_E/kT)², σ_E the committee's energy standard deviation (eV): the
   candidate's share of the state's Var_B(ΔE)/kT² as the committee estimates it. Their sum
   over a state (its *load*) is the committee's own estimate of that variance;
3. *budget across states* in proportion to the states' loads (largest remainders, at least
   one pick for every state with candidates): the ΔF correction's variance is the sum of
   both states', so labels go where more of it is.

The picks are ranked highest score first (alflow.select does sanity, dedup and the
round-robin over CV bins). They train the committee; they are not the correction's samples:
the correction labels its own uniform random draws of the new committee's Boltzmann
distribution (``estimate.reweight_samples``), which stay unbiased whatever is selected.
"""

from __future__ import annotations

import numpy as np


def boltzmann_weights(energy: np.ndarray, from_flow: np.ndarray, log_q: np.ndarray | None,
                      states: np.ndarray, kt_ev: float) -> np.ndarray:
    """Rule 1: weight (M,) of each candidate in its state's Boltzmann distribution (sums to
    1 per state). energy (M,) eV; from_flow (M,) bool; log_q (M,) ln q of the flow that
    proposed it (NaN for MD frames; None: proposals weigh like MD frames)."""
    en = np.asarray(energy, dtype=float)
    flow = np.asarray(from_flow, dtype=bool)
    lq = np.full(len(en), np.nan) if log_q is None else np.asarray(log_q, dtype=float)
    w = np.zeros(len(en))
    for s in set(np.asarray(states).tolist()):
        mine = np.asarray(states) == s
        md = mine & ~flow & np.isfinite(en)
        pools: list[tuple[np.ndarray, np.ndarray, float]] = []  # (indices, weights, ESS)
        if md.any():
            pools.append((np.flatnonzero(md), np.full(int(md.sum()), 1.0 / md.sum()),
                          float(md.sum())))
        prop = mine & flow & np.isfinite(en)
        if prop.any():
            idx = np.flatnonzero(prop)
            if log_q is None:
                lw = np.zeros(len(idx))
            else:
                lw = -en[idx] / kt_ev - lq[idx]
                lw[~np.isfinite(lw)] = -np.inf
            if np.isfinite(lw).any():
                p = np.exp(lw - lw[np.isfinite(lw)].max())
                p /= p.sum()
                pools.append((idx, p, float(1.0 / (p ** 2).sum())))
        total = sum(ess for _, _, ess in pools)
        for idx, p, ess in pools:
            w[idx] = p * ess / total
    return w


def free_energy_scores(energy: np.ndarray, energy_std: np.ndarray, from_flow: np.ndarray,
                       log_q: np.ndarray | None, states: np.ndarray, kt_ev: float
                       ) -> np.ndarray:
    """Rule 2: score (M,) = Boltzmann weight × (committee energy std / kT)²; 0 where the
    std is not finite."""
    w = boltzmann_weights(energy, from_flow, log_q, states, kt_ev)
    sd = np.asarray(energy_std, dtype=float) / kt_ev
    return np.where(np.isfinite(sd), w * sd ** 2, 0.0)


def split_by_load(budget: int, available: dict[str, int], load: dict[str, float]
                  ) -> dict[str, int]:
    """Rule 3: ``budget`` picks over states in proportion to ``load`` (largest remainders),
    at least one for every state with candidates, never more than a state ``available``;
    what a state cannot use goes to the others by load."""
    share = {k: 0 for k in available}
    left = budget
    open_ = [k for k in available if available[k] > 0]
    for k in open_:  # one each first (if the budget allows)
        if left > 0:
            share[k] += 1
            left -= 1
    open_ = [k for k in open_ if share[k] < available[k]]
    while left > 0 and open_:
        tot = sum(max(load.get(k, 0.0), 0.0) for k in open_)
        frac = {k: (max(load.get(k, 0.0), 0.0) / tot if tot > 0 else 1 / len(open_))
                for k in open_}
        want = {k: left * frac[k] for k in open_}
        give = {k: int(np.floor(want[k])) for k in open_}
        for k in sorted(open_, key=lambda k: want[k] - give[k], reverse=True):
            if sum(give.values()) >= left:
                break
            give[k] += 1
        for k in open_:
            take = min(give[k], available[k] - share[k])
            share[k] += take
            left -= take
        open_ = [k for k in open_ if share[k] < available[k]]
    return share
