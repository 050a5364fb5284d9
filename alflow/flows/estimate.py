"""Free energies of a state through its Boltzmann generator: importance sampling of flow
samples (optionally annealed) and BAR between the flow and samples of the state.

Convention (docs/flows.md): the free energy of state S at temperature T is

    F_S = −kT ln[ (8π² / σ_S) ∫_{S, one labelled copy} J(z) e^{−U(x(z))/kT} dz ]

(eV; lengths in Å, so F carries a unit-dependent constant shared by all states). The
translational volume (the wall acts on distances to the centre of mass, so it is the same
unbounded factor for every state), N! and the 8π²·(N!/σ_S) count of labelled copies are the
same bookkeeping for every state, so ΔF between states is exact. σ_S is the rotational
symmetry number of the state's reference (proper rotations). The generic estimators (IS,
BAR, bootstrap) are :mod:`alflow.estimate`'s.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from ase.units import kB

from alflow.estimate import (
    FreeEnergy,
    OverlapWarning,
    bar,
    bar_many,
    committee_shifts,
    ess,
    is_free_energy,
    small_sample_factor,
)
from alflow.flows.anneal import AnnealConfig
from alflow.flows.anneal import anneal as run_anneal
from alflow.flows.coordinates import LOG_8PI2
from alflow.flows.generator import BoltzmannGenerator
from alflow.potential import Potential

Predicate = Callable[[torch.Tensor], Any]


@dataclass
class FlowSamples:
    """Flow samples of one state: positions (n, N, 3) Å, energy (n,) eV (inf outside),
    log q_x (n,), log importance weights (n,) (−inf outside the state)."""

    positions: np.ndarray
    energy: np.ndarray
    log_q: np.ndarray
    log_w: np.ndarray
    inside: np.ndarray
    extra: dict[str, float] = field(default_factory=dict)


def sample_flow(bg: BoltzmannGenerator, potential: Potential, temperature_k: float,
                n: int, member: Predicate | None = None, restrict: Predicate | None = None,
                seed: int = 0, batch: int = 2000,
                anneal: AnnealConfig | None = None) -> FlowSamples:
    """Draw n flow samples and their log weights −U/kT − log q_x restricted to the state
    (``member``, e.g. ``BasinStates.member(name)``) and to ``restrict`` (e.g. the wall).

    With ``anneal`` (levels > 0) the samples are carried toward the Boltzmann distribution
    by annealed importance sampling (:mod:`alflow.flows.anneal`): positions and energies are
    the final ones, log_w the AIS weights and log_q the effective proposal density
    −U/kT − log_w, so that reweighting to another temperature stays −U/kT' − log_q."""
    kt = kB * temperature_k
    cfg = anneal or AnnealConfig()
    g = torch.Generator().manual_seed(seed)
    xs, es, lws, stats = [], [], [], []
    for i in range(0, n, batch):
        x, lq, ok = bg.sample(min(batch, n - i), g)
        ok = ok & torch.isfinite(x).all(-1).all(-1)
        if restrict is not None:
            ok = ok & torch.as_tensor(restrict(x), dtype=torch.bool)
        x, e, lw, st = run_anneal(bg, potential, 1.0 / kt, x, lq, ok, cfg, restrict, member, g)
        xs.append(x.numpy())
        es.append(e.numpy())
        lws.append(lw.numpy())
        stats.append(st)
    x, e, lw = (np.concatenate(v) for v in (xs, es, lws))
    ok = np.isfinite(e) & np.isfinite(lw)
    if member is not None and ok.any():
        inside = np.zeros_like(ok)
        inside[ok] = np.asarray(member(torch.as_tensor(x[ok])), dtype=bool)
        ok = inside
    lw = np.where(ok, lw, -np.inf)
    with np.errstate(invalid="ignore"):
        lq = np.where(np.isfinite(e) & np.isfinite(lw), -e / kt - lw, -np.inf)
    lw0 = [s.pop("initial_log_w").numpy() for s in stats if "initial_log_w" in s]
    extra = {k: float(np.mean([s[k] for s in stats])) for k in (stats[0] if stats else {})}
    if lw0:  # the flow's own efficiency, before annealing
        extra["flow_ess_fraction"] = ess(np.concatenate(lw0)) / max(len(x), 1)
    return FlowSamples(x, e, lq, lw, ok, extra)


def flow_free_energy(bg: BoltzmannGenerator, potential: Potential, temperature_k: float,
                     n: int = 4000, member: Predicate | None = None,
                     restrict: Predicate | None = None, seed: int = 0, n_bootstrap: int = 200,
                     return_samples: bool = False, anneal: AnnealConfig | None = None,
                     label: str = "") -> FreeEnergy | tuple[FreeEnergy, FlowSamples]:
    """F_S of the state by importance sampling from the flow (see module doc), with a
    bootstrap error; extra holds the fraction of samples inside the state, σ_S and the
    Pareto k̂ (``label``, e.g. the state's name, names it in the k̂ warning).
    ``anneal``: carry the flow samples toward the target first (:mod:`alflow.flows.anneal`)."""
    s = sample_flow(bg, potential, temperature_k, n, member, restrict, seed, anneal=anneal)
    # keep the scale of ln w near 0 for numerical safety: shift by the best sample
    shift = float(np.max(s.log_w)) if np.isfinite(s.log_w).any() else 0.0
    fe = is_free_energy(s.log_w - shift, temperature_k, n_bootstrap, seed,
                        offset=shift + LOG_8PI2 - math.log(bg.symmetry_number), label=label)
    ok = np.isfinite(s.log_w)
    members = _member_energies(potential, torch.as_tensor(s.positions[ok]))
    if members is not None:
        fe.extra["member_shift_ev"] = committee_shifts(members, s.energy[ok], temperature_k,
                                                       s.log_w[ok]).tolist()
    fe.extra = {**fe.extra, "inside_fraction": float(s.inside.mean()), "symmetry_number":
                bg.symmetry_number, "min_energy_ev": float(np.min(s.energy))
                if np.isfinite(s.energy).any() else float("nan"), **s.extra}
    if fe.ess_fraction < 0.01:
        warnings.warn(f"flow importance sampling: ESS fraction {fe.ess_fraction:.3g} is very "
                      "low; the free energy is unreliable", OverlapWarning, stacklevel=2)
    return (fe, s) if return_samples else fe


def flow_bar_free_energy(bg: BoltzmannGenerator, potential: Potential, temperature_k: float,
                         target_positions: np.ndarray, n: int = 4000,
                         member: Predicate | None = None, restrict: Predicate | None = None,
                         seed: int = 0, n_bootstrap: int = 200,
                         samples: FlowSamples | None = None) -> FreeEnergy:
    """F_S by BAR between the normalised flow (state 0, f=0) and the Boltzmann target of the
    state (state 1), using flow samples and ``target_positions`` sampled from the state:
    (M, N, 3) Å independent samples, or (T, W, N, 3) Å draws of W MCMC walkers.

    Targets are relabelled into the flow's labelling cell first (a walker may have crossed
    into another permutational copy of the basin, where q is ~0 though the copy is the same
    state). The error is the larger of BAR's asymptotic one and a bootstrap (over walkers:
    draws of one walker are correlated, and the asymptotic error assumes independent samples).
    ``samples``: plain (not annealed) flow samples already drawn with the same ``member`` and
    ``restrict``, reused instead of drawing ``n`` more.
    """
    kt = kB * temperature_k
    s = samples if samples is not None else sample_flow(bg, potential, temperature_k, n,
                                                        member, restrict, seed)
    e0 = float(np.min(s.energy[s.inside])) if s.inside.any() else 0.0
    u1_q = np.where(s.inside, (s.energy - e0) / kt, np.inf)
    with np.errstate(invalid="ignore"):  # inf - inf outside the state: NaN, capped in bar()
        w_f = u1_q - (-s.log_q)
    tp = np.asarray(target_positions, dtype=float)
    shape = tp.shape[:-2]
    xt = torch.as_tensor(tp.reshape(-1, *tp.shape[-2:]))
    xt = bg.coords.canonicalize(xt)
    with torch.no_grad():
        lq_t = bg.log_prob(xt).numpy()
        e_t = potential.energy(xt).double().numpy()
        u1_t = (e_t - e0) / kt
    w_r = -lq_t - u1_t
    df, ddf = bar(w_f, w_r)
    if n_bootstrap:  # walkers (columns) resampled whole; independent targets one by one
        rng = np.random.default_rng(seed)
        w_rw = w_r.reshape(shape) if len(shape) == 2 else w_r[None]
        i_f = rng.integers(0, len(w_f), (n_bootstrap, len(w_f)))
        i_w = rng.integers(0, w_rw.shape[1], (n_bootstrap, w_rw.shape[1]))
        boot = bar_many(w_f[i_f], w_rw[:, i_w].transpose(1, 0, 2).reshape(n_bootstrap, -1),
                        x0=df, tol=1e-8)
        sd = float(np.std(boot, ddof=1))
        if len(shape) == 2:  # a bootstrap over few walkers: widened to keep its 95 % coverage
            sd *= small_sample_factor(w_rw.shape[1])
        # pymbar's asymptotic error is NaN when works were capped (samples outside the state)
        ddf = max(ddf, sd) if math.isfinite(ddf) else sd
    f = kt * (df + e0 / kt - LOG_8PI2 + math.log(bg.symmetry_number))
    n_eff, n = ess(-w_f), len(w_f)
    extra: dict[str, Any] = {"n_target": len(xt), "symmetry_number": bg.symmetry_number}
    members = _member_energies(potential, xt)
    if members is not None:
        extra["member_shift_ev"] = committee_shifts(members, e_t, temperature_k).tolist()
    return FreeEnergy(f, kt * ddf, temperature_k, n, n_eff, n_eff / n, "bar", extra)


def _member_energies(potential: Potential, x: torch.Tensor) -> np.ndarray | None:
    """Energies (M, B) eV of each member of a committee potential (one with ``stats``, e.g.
    alflow.mlip.CommitteePotential) at x (B, N, 3) Å; None for any other potential."""
    stats = getattr(potential, "stats", None)
    if not callable(stats) or len(x) == 0:
        return None
    with torch.no_grad():
        return stats(x)["energies"].double().cpu().numpy()


__all__ = ["FlowSamples", "flow_bar_free_energy", "flow_free_energy", "sample_flow"]
