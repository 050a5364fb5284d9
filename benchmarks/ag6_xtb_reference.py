"""Reference ΔF = F(3d) − F(planar) of Ag6 on GFN1-xTB at 300 K on the oracle itself, with
tblite, numpy and ASE only (none of alflow's MLIPs, flows or estimators).

States as the ag6-xtb example defines them: a frame is quenched on GFN1-xTB (FIRE to 5e-3
eV/Å) and is ``planar`` if the minimum's planarity (RMS distance of the atoms from their
best-fit plane) is below 0.1 Å, ``3d`` otherwise; frames beyond the hard wall (8 Å from the
centre of mass; a soft wall beyond it keeps the dynamics finite) or whose quench does not
converge count for neither. Every force is a GFN1-xTB calculation (one tblite calculator per
replica, restarted from its previous density); BAOAB Langevin, 5 fs, friction 0.01/fs.

``--method umbrella`` (default): umbrella sampling along the planarity p of the
configuration. ``windows`` harmonic biases ½ k (p − c)² (centres c from 0 to ``--p-max``
Å, k ``--k-bias`` eV/Å²), one replica per window at 300 K, neighbouring windows exchanging
configurations every 10 steps (Metropolis on the bias energies: no oracle calls). One run
per entry of ``--starts``: ``planar`` starts every window from the triangle, ``3d`` from the
bicapped tetrahedron (a biased GFN1-xTB sweep from the minimum outwards), ``nearest`` from
the minimum whose planarity is nearest the centre. Every ``quench_every``-th recorded frame
is classed: by p outside ``--band`` (below it planar, above it 3d; a random ``--verify``
sample of them quenched, a disagreement widens the band), by quench inside it.

Between about 0.2 and 0.7 Å buckled triangles and flattened 3D isomers coexist at the same
p, separated by a barrier across p: a window keeps the class it started in for tens of
picoseconds, so plain MBAR over every window (printed for comparison) returns the starts'
class ratios. The result uses the class ratio only of windows where the classes
interconvert: MBAR on each class's frames alone gives each window's class-restricted free
energy f_{k,c} and the class's partition function Z_c, each class up to a constant; a window
in equilibrium fixes the constants' ratio by its counts, giving ΔF_k = ln(n_{k,planar} /
n_{k,3d}) + f_{k,planar} − f_{k,3d} − ln(Z_3d / Z_planar). A window links the classes if it
holds 10 frames of each class in every run and the runs' ΔF_k agree within twice their
error; ΔF is the inverse-variance mean of ΔF_k over them. Error: bootstrap over 10
contiguous time blocks per run (the same blocks in every window: exchanges couple them).
Printed: ΔF_k of every window per run, first and second half, exchange acceptance per pair,
round trips, each window's class fraction per time quarter, the band's check.
``--budget-minutes T`` splits T between the runs (MD to 60 %, quenches to 95 % of each
share) and analyses what is done; ``--save P`` keeps each run's frames' p and classes,
``--analyse P`` recomputes the figures from them.

``--method tempering``: ``chains`` independent chains of replicas at geometrically spaced
temperatures (300 K ... ``t_max``) exchanging neighbouring configurations; frames of the
300 K replica quenched and counted, ΔF = −kT ln(n_3d / n_planar), error by bootstrap over
chains. Planar ↔ 3D crossings are rare: it does not converge in affordable time
(docs/campaign.md).

Both print each distinct minimum reached (energy eV, planarity Å, 300 K population), the
exchange acceptance, GFN1-xTB calls and their mean cost.

    python benchmarks/ag6_xtb_reference.py [--quick] [--method umbrella|tempering]
        [--windows N --steps N --quench-every N --p-max Å --k-bias eV/Å²] [--chains N]
        [--starts planar,3d --band 0.1,0.8 --verify F --budget-minutes T --save P]
        [--analyse P]
    # last line: JSON
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings

import numpy as np
from ase import units
from ase.data import atomic_masses
from ase.io import read

from alflow.sampling.tempering import exchange_neighbours

T_K = 300.0
WALL = 8.0  # Å, as the ag6-xtb example
PLANAR = 0.1  # Å: planarity bound of the ag6-xtb example's states


class Oracle:
    """GFN1-xTB energy (eV) and forces (eV/Å) of one replica, restarted from its last density;
    a harmonic wall (``k_wall`` eV/Å²) beyond ``WALL`` from the centroid."""

    calls = 0

    def __init__(self, numbers: np.ndarray, x: np.ndarray, k_wall: float = 1.0):
        from tblite.interface import Calculator

        self.calc = Calculator("GFN1-xTB", numbers, x / units.Bohr)
        self.calc.set("verbosity", 0)
        self.res = None
        self.k_wall = k_wall

    def __call__(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        self.calc.update(positions=x / units.Bohr)
        try:
            self.res = self.calc.singlepoint(self.res)
        except RuntimeError:  # a restart from a far density: start afresh once
            self.res = self.calc.singlepoint()
        Oracle.calls += 1
        e = float(self.res["energy"]) * units.Hartree
        f = -np.asarray(self.res["gradient"]) * units.Hartree / units.Bohr
        rel = x - x.mean(0)
        r = np.linalg.norm(rel, axis=-1, keepdims=True)
        over = np.maximum(r - WALL, 0.0)
        fw = -self.k_wall * over * rel / np.maximum(r, 1e-12)
        self.last_forces = f + fw - fw.mean(0)
        return e + 0.5 * self.k_wall * float((over**2).sum()), self.last_forces


def planarity(x: np.ndarray) -> float:
    """RMS distance of the atoms from their best-fit plane, Å."""
    d = x - x.mean(0)
    return float(np.sqrt(max(np.linalg.eigvalsh(d.T @ d / len(x))[0], 0.0)))


def quench(oracle: Oracle, x: np.ndarray, fmax: float = 5e-3, steps: int = 600,
           deadline: float = np.inf) -> tuple[np.ndarray, float, bool]:
    """FIRE (unit masses) of x (N, 3) Å on GFN1-xTB: minimum, its energy eV, converged
    (False also when stopped at ``deadline``, time.perf_counter())."""
    x = x.copy()
    v = np.zeros_like(x)
    dt, alpha, n_up = 0.5, 0.1, 0
    for _ in range(steps):
        if time.perf_counter() > deadline:
            break
        e, f = oracle(x)
        if np.linalg.norm(f, axis=-1).max() < fmax:
            return x, e, True
        p = float((f * v).sum())
        v = (1 - alpha) * v + alpha * f / (np.linalg.norm(f) + 1e-300) * np.linalg.norm(v)
        if p > 0:
            n_up += 1
            if n_up > 5:
                dt, alpha = min(dt * 1.1, 5.0), alpha * 0.99
        else:
            n_up, dt, alpha, v = 0, dt * 0.5, 0.1, np.zeros_like(v)
        v = v + dt * f
        dx = dt * v
        x = x + dx * min(0.1 / max(np.linalg.norm(dx, axis=-1).max(), 1e-300), 1.0)
    return x, oracle(x)[0], False


def classify(frames: np.ndarray, numbers: np.ndarray, order: np.ndarray | None = None,
             deadline: float = np.inf, label: np.ndarray | None = None,
             minima: list[dict] | None = None) -> tuple[np.ndarray, list[dict]]:
    """Quench every frame (..., N, 3) Å on GFN1-xTB: its class (0 planar, 1 3d, -1 beyond the
    wall or not converged; shape frames.shape[:-2]) and the distinct minima reached, each with
    the indices of the frames that reached it. ``order``: the frames' flat indices in the
    order to quench them; at ``deadline`` (time.perf_counter()) the rest stay unquenched
    (-2). ``label`` and ``minima``: those of earlier calls, updated in place."""
    lead = frames.shape[:-2]
    q = Oracle(numbers, frames.reshape(-1, *frames.shape[-2:])[0])
    label = np.full(lead, -2) if label is None else label
    minima = [] if minima is None else minima
    flat = np.arange(int(np.prod(lead))) if order is None else order
    for idx in (np.unravel_index(i, lead) for i in flat):
        if time.perf_counter() > deadline:
            break
        label[idx] = -1
        x = frames[idx]
        if np.linalg.norm(x - x.mean(0), axis=-1).max() > WALL:
            continue
        m, em, ok = quench(q, x, deadline=deadline)
        if time.perf_counter() > deadline:
            label[idx] = -2
            break
        if not ok:
            continue
        p = planarity(m)
        label[idx] = 0 if p < PLANAR else 1
        d = np.sort(np.linalg.norm(m[:, None] - m[None], axis=-1)[np.triu_indices(len(m), 1)])
        for mm in minima:
            if abs(mm["energy_ev"] - em) < 2e-3 and np.sqrt(((mm["_d"] - d) ** 2).mean()) < 0.05:
                mm["_idx"].append(idx)
                break
        else:
            minima.append({"energy_ev": round(em, 4), "planarity_a": round(p, 3),
                           "_idx": [idx], "_d": d})
    return label, minima


def _populations(minima: list[dict], label: np.ndarray, weight: np.ndarray) -> None:
    """Each minimum's 300 K population: the (unbiased) weight of the frames that reached it
    over that of every classified frame; frame counts and state names added in place."""
    total = float(weight[label >= 0].sum())
    for mm in minima:
        mm.pop("_d")
        idx = mm.pop("_idx")
        mm["frames"] = len(idx)
        mm["population"] = round(float(sum(weight[i] for i in idx)) / max(total, 1e-300), 4)
        mm["state"] = "planar" if mm["planarity_a"] < PLANAR else "3d"


def baoab(x: np.ndarray, v: np.ndarray, f: np.ndarray, mass: np.ndarray, dt: float,
          c1: float, noise: np.ndarray, rng: np.random.Generator, forces) -> None:
    """One BAOAB Langevin step, in place: x Å, v, f eV/Å (ASE units); ``c1`` the friction
    factor exp(−γ dt), ``noise`` sqrt(1 − c1²) sqrt(kT/m); ``forces()`` refreshes f from x."""
    v += 0.5 * dt * f / mass
    x += 0.5 * dt * v
    v[...] = c1 * v + noise * rng.normal(size=x.shape)
    x += 0.5 * dt * v
    forces()
    v += 0.5 * dt * f / mass


def parallel_tempering(starts: np.ndarray, numbers: np.ndarray, chains: int, steps: int,
                       temps: np.ndarray, record_every: int, exchange_every: int = 10,
                       dt_fs: float = 5.0, friction_per_fs: float = 0.01, seed: int = 0
                       ) -> tuple[np.ndarray, float, np.ndarray]:
    """BAOAB Langevin of ``chains`` x len(temps) replicas with neighbour exchanges, chain c
    starting from ``starts[c % len(starts)]`` (S, N, 3) Å; returns frames of the temps[0]
    replica (F, chains, N, 3) Å, the exchange acceptance and the final configurations."""
    rng = np.random.default_rng(seed)
    k = len(temps)
    mass = atomic_masses[numbers][None, None, :, None]
    dt, gamma = dt_fs * units.fs, friction_per_fs / units.fs
    c1 = np.exp(-gamma * dt)
    c2 = np.sqrt(1 - c1 * c1)
    sig = np.sqrt(units.kB * np.asarray(temps)[None, :, None, None] / mass)
    starts = starts - starts.mean(-2, keepdims=True)
    x = np.repeat(starts[np.arange(chains) % len(starts)][:, None], k, 1)
    oracles = [[Oracle(numbers, x[c, i]) for i in range(k)] for c in range(chains)]
    v = rng.normal(size=x.shape) * sig
    e = np.zeros((chains, k))
    f = np.zeros_like(x)

    def forces() -> None:
        for c in range(chains):
            for i in range(k):
                e[c, i], f[c, i] = oracles[c][i](x[c, i])

    forces()
    frames, acc = [], []
    for s in range(steps):
        baoab(x, v, f, mass, dt, c1, c2 * sig, rng, forces)
        if (s + 1) % exchange_every == 0:
            for i, ok in exchange_neighbours(e, temps, s // exchange_every, rng, (x, f), v):
                acc.append(float(ok.mean()))
                for c in np.flatnonzero(ok):  # each density follows its configuration
                    oracles[c][i], oracles[c][i + 1] = oracles[c][i + 1], oracles[c][i]
        if (s + 1) % record_every == 0:
            frames.append(x[:, 0].copy())
    return np.array(frames), float(np.mean(acc)) if acc else float("nan"), x


def reference(chains: int, steps: int, record_every: int, t_max: float, n_temps: int,
              burn_fraction: float = 0.2, seed: int = 0, n_bootstrap: int = 1000) -> dict:
    """ΔF = F(3d) − F(planar) (kT and eV) at 300 K by parallel-tempering counts."""
    from alflow.examples import DATA

    t0 = time.perf_counter()
    frames0 = {a.info["point_group"]: a for a in read(DATA / "ag6_xtb.extxyz", ":")}
    starts = np.stack([frames0["D3h"].positions, frames0["C5v"].positions])  # half each
    numbers = frames0["D3h"].numbers
    temps = np.geomspace(T_K, t_max, n_temps)
    frames, acc, _ = parallel_tempering(starts, numbers, chains, steps, temps, record_every,
                                        seed=seed)
    md_s, md_calls = time.perf_counter() - t0, Oracle.calls
    frames = frames[int(burn_fraction * len(frames)):]
    label, minima = classify(frames, numbers)
    counts = np.stack([(label == 0).sum(0), (label == 1).sum(0)])  # (2, chains)
    rng = np.random.default_rng(seed)
    boot = counts[:, rng.integers(0, chains, (n_bootstrap, chains))].sum(-1)
    kt = units.kB * T_K
    with np.errstate(divide="ignore", invalid="ignore"):
        value = float(-np.log(counts[1].sum() / counts[0].sum()))
        error = float(np.std(-np.log(boot[1] / boot[0])))
    _populations(minima, label, np.ones(label.shape))
    seconds = time.perf_counter() - t0
    return {"delta_f_kt": _num(value), "error_kt": _num(error), "delta_f_ev": _num(value * kt),
            "error_ev": _num(error * kt), "temperature_k": T_K, "frames": int(label.size),
            "planar": int(counts[0].sum()), "3d": int(counts[1].sum()),
            "neither": int((label == -1).sum()), "exchange_acceptance": acc,
            "minima": sorted(minima, key=lambda m: m["energy_ev"]),
            "chains": chains, "steps": steps, "ps_per_replica": steps * 5.0 / 1000,
            "temperatures_k": temps.round(1).tolist(), "md_seconds": round(md_s, 1),
            "oracle_calls": Oracle.calls, "md_oracle_calls": md_calls,
            "ms_per_call": round(1e3 * seconds / max(Oracle.calls, 1), 2),
            "seconds": round(seconds, 1)}


def planarity_grad(x: np.ndarray) -> tuple[float, np.ndarray]:
    """Planarity p (Å) of x (N, 3) Å and dp/dx (N, 3): p² is the smallest eigenvalue of the
    centred gyration tensor, dp/dx_i = (v·d_i) v / (N p) with v its eigenvector."""
    d = x - x.mean(0)
    lam, vec = np.linalg.eigh(d.T @ d / len(x))
    p = float(np.sqrt(max(lam[0], 0.0)))
    v = vec[:, 0]
    return p, np.outer(d @ v, v) / (len(x) * max(p, 1e-8))


class Biased:
    """GFN1-xTB plus the window bias ½ k (p − centre)² (eV, Å): energy and forces of x."""

    def __init__(self, oracle: Oracle, centre: float, k_bias: float):
        self.oracle, self.centre, self.k = oracle, centre, k_bias

    def __call__(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        e, f = self.oracle(x)
        p, g = planarity_grad(x)
        return e + 0.5 * self.k * (p - self.centre) ** 2, f - self.k * (p - self.centre) * g


def window_starts(origin: np.ndarray, numbers: np.ndarray, centres: np.ndarray,
                  k_bias: float, seed: int = 0) -> np.ndarray:
    """One start (K, N, 3) Å per window, all from one minimum ``origin`` (N, 3) Å: a sweep
    outwards from the origin's planarity, each window's start the biased GFN1-xTB minimum
    (FIRE to 0.05 eV/Å) reached from its neighbour's (0.02 Å of noise breaks the triangle's
    symmetry, where dp/dx vanishes)."""
    rng = np.random.default_rng(seed)
    p0 = planarity(origin)
    out = np.zeros((len(centres), *origin.shape))
    q = Oracle(numbers, origin)
    for side in (np.flatnonzero(centres >= p0), np.flatnonzero(centres < p0)[::-1]):
        x = origin.copy()
        for i in side:
            x = x + rng.normal(scale=0.02, size=x.shape)
            x = quench(Biased(q, centres[i], k_bias), x, fmax=0.05, steps=300)[0]
            out[i] = x - x.mean(0)
    return out


def umbrella(x0: np.ndarray, numbers: np.ndarray, centres: np.ndarray,
             k_bias: float, steps: int, record_every: int, exchange_every: int = 10,
             dt_fs: float = 5.0, friction_per_fs: float = 0.01, seed: int = 0,
             deadline: float = np.inf) -> dict:
    """Hamiltonian replica exchange of umbrella windows along planarity: one BAOAB Langevin
    replica per window (bias ½ k_bias (p − centre)², k_bias eV/Å², centres (K,) Å) at 300 K
    started from ``x0`` (K, N, 3) Å, neighbours exchanging configurations (Metropolis on the
    bias energies; no oracle calls). Returns ``frames`` (F, K, N, 3) Å recorded every
    ``record_every`` steps, their planarity ``plan`` (F, K) Å (index k: the window's bias),
    ``replica`` (F, K) (which replica, numbered by its starting window, sits in window k)
    and the exchange acceptance per neighbour pair (K − 1,); stops early at ``deadline``
    (time.perf_counter())."""
    rng = np.random.default_rng(seed)
    kw = len(centres)
    mass = atomic_masses[numbers][None, :, None]
    dt, gamma = dt_fs * units.fs, friction_per_fs / units.fs
    c1 = np.exp(-gamma * dt)
    c2 = np.sqrt(1 - c1 * c1)
    beta = 1.0 / (units.kB * T_K)
    sig = np.sqrt(units.kB * T_K / mass)
    x = x0 - x0.mean(1, keepdims=True)
    oracles = [Oracle(numbers, x[i]) for i in range(kw)]
    v = rng.normal(size=x.shape) * sig
    f = np.zeros_like(x)
    pl = np.zeros(kw)
    rep = np.arange(kw)

    def forces() -> None:
        for i in range(kw):
            _, fo = oracles[i](x[i])
            pl[i], g = planarity_grad(x[i])
            f[i] = fo - k_bias * (pl[i] - centres[i]) * g

    forces()
    frames, plan, reps = [], [], []
    tried, accepted = np.zeros(kw - 1), np.zeros(kw - 1)
    for s in range(steps):
        baoab(x, v, f, mass, dt, c1, c2 * sig, rng, forces)
        if (s + 1) % exchange_every == 0:
            for i in range((s // exchange_every) % 2, kw - 1, 2):
                a, b = centres[i], centres[i + 1]
                du = 0.5 * k_bias * ((pl[i] - b) ** 2 + (pl[i + 1] - a) ** 2
                                     - (pl[i] - a) ** 2 - (pl[i + 1] - b) ** 2)
                ok = np.log(rng.random()) < -beta * du
                tried[i] += 1
                accepted[i] += ok
                if ok:
                    for arr in (x, v, pl, rep):
                        arr[[i, i + 1]] = arr[[i + 1, i]]
                    oracles[i], oracles[i + 1] = oracles[i + 1], oracles[i]
                    for j in (i, i + 1):
                        g = planarity_grad(x[j])[1]
                        f[j] = oracles[j].last_forces - k_bias * (pl[j] - centres[j]) * g
        if (s + 1) % record_every == 0:
            frames.append(x.copy())
            plan.append(pl.copy())
            reps.append(rep.copy())
        if (s + 1) % max(steps // 10, 1) == 0:
            print(f"  umbrella MD step {s + 1}/{steps}, {Oracle.calls} calls", flush=True)
        if time.perf_counter() > deadline:
            print(f"  umbrella MD stopped at step {s + 1} (time budget)", flush=True)
            break
    return {"frames": np.array(frames), "plan": np.array(plan), "replica": np.array(reps),
            "acceptance": accepted / np.maximum(tried, 1)}


def round_trips(replica: np.ndarray) -> list[int]:
    """Per replica, the completed round trips 0 → K−1 → 0 between the end windows, from
    ``replica`` (F, K): which replica sits in window k at each recorded time."""
    kw = replica.shape[1]
    out = []
    for r in range(kw):
        ends = [w for w in (replica == r).argmax(1) if w in (0, kw - 1)]
        ends = [w for i, w in enumerate(ends) if i == 0 or w != ends[i - 1]]
        out.append(sum(1 for i in range(2, len(ends)) if ends[i] == 0 and ends[i - 2] == 0))
    return out


def band_classes(frames: np.ndarray, plan: np.ndarray, numbers: np.ndarray,
                 band: tuple[float, float], quench_every: int, verify: float,
                 rng: np.random.Generator, deadline: float = np.inf
                 ) -> tuple[np.ndarray, np.ndarray, list[dict], dict]:
    """Classes of umbrella frames (F, K, N, 3) Å with planarity ``plan`` (F, K) Å: 0 planar
    for p below ``band`` (Å), 1 3d above it (-1 beyond the wall), the frames inside the band
    (every ``quench_every``-th time, in random order until ``deadline``) by their GFN1-xTB
    quench. A random fraction ``verify`` of the frames classed by p (at least 20) is
    quenched too; a disagreement widens the band to 0.05 Å past its p and the check is
    repeated on a fresh sample (at most 4 rounds). Returns the labels (F, K) (-2 in the band
    but not quenched), the final band mask (F, K), the minima reached and the check's
    record."""
    lo, hi = band
    out = frames - frames.mean(-2, keepdims=True)
    beyond = np.linalg.norm(out, axis=-1).max(-1) > WALL
    label = np.full(plan.shape, -2)
    minima: list[dict] = []
    checks: list[dict] = []
    checked = np.zeros(plan.shape, bool)
    for _ in range(4):
        inband = (plan >= lo) & (plan <= hi)
        sure = np.flatnonzero(~inband & ~beyond & ~checked)
        n = min(len(sure), max(20, int(np.ceil(verify * len(sure)))))
        pick = rng.choice(sure, n, replace=False) if n else sure
        byp = (plan.reshape(-1)[pick] > hi).astype(int)
        classify(frames, numbers, pick, deadline, label, minima)
        checked.reshape(-1)[pick] = True
        got = label.reshape(-1)[pick]
        bad = [(int(i), float(plan.reshape(-1)[i]), int(c), int(g))
               for i, c, g in zip(pick, byp, got, strict=True) if g >= 0 and g != c]
        checks.append({"band_a": [round(lo, 3), round(hi, 3)], "checked": int(n),
                       "quenched": int((got > -2).sum()),
                       "disagreements": [{"frame": divmod(i, plan.shape[1]), "p_a": round(p, 3),
                                          "by_p": c, "by_quench": g} for i, p, c, g in bad]})
        if not bad:
            break
        for _, p, _, _ in bad:
            lo, hi = (min(lo, p - 0.05), hi) if p < lo else (lo, max(hi, p + 0.05))
    inband = (plan >= lo) & (plan <= hi)
    fill = ~inband & (label == -2)
    label[fill] = (plan[fill] > hi).astype(int)
    label[beyond & fill] = -1
    rows = rng.permutation(np.arange(0, len(plan), quench_every))  # all windows of a row
    cand = np.concatenate([np.flatnonzero(inband[t] & (label[t] == -2)) + t * plan.shape[1]
                           for t in rows] + [np.zeros(0, int)])
    classify(frames, numbers, cand, deadline, label, minima)
    return label, inband, minima, {"band_a": [round(lo, 3), round(hi, 3)], "rounds": checks}


def _mbar_logw(plan: np.ndarray, centres: np.ndarray, k_bias: float
               ) -> tuple[np.ndarray, np.ndarray]:
    """``mbar_weights`` of the frames ``plan`` (F, K) Å (column k drawn in window k): the
    windows' free energies (K,) and each frame's unbiased log-weight (F, K), up to a
    constant."""
    nf, kw = plan.shape
    f_k, logw = mbar_weights(plan.reshape(-1), np.tile(np.arange(kw), nf), centres, k_bias)
    return f_k, (logw - logw.max()).reshape(nf, kw)


def _delta(logw: np.ndarray, label: np.ndarray, inband: np.ndarray) -> float:
    """ΔF (kT) from unbiased log-weights and labels (F, K); the quenched frames of the band
    stand for all of its frames (weighted by the band's total over its quenched weight)."""
    w = np.exp(logw)
    q = inband & (label != -2)
    wq = w[q].sum()
    scale = w[inband].sum() / wq if wq > 0 else 0.0
    n = [w[~inband & (label == c)].sum() + scale * w[q & (label == c)].sum() for c in (0, 1)]
    return float(-np.log(n[1] / n[0])) if n[0] > 0 and n[1] > 0 else float("nan")


def mbar_weights(p: np.ndarray, window: np.ndarray, centres: np.ndarray, k_bias: float,
                 width: float = 0.002) -> tuple[np.ndarray, np.ndarray]:
    """MBAR over umbrella windows along planarity: samples of planarity ``p`` (n,) Å drawn in
    windows ``window`` (n,) (bias ½ k_bias (p − centres[k])², eV/Å², Å) at 300 K. The
    windows' free energies minimise MBAR's convex objective (Newton) on a histogram of
    p (bins ``width`` Å: the bias varies by under 0.1 kT across a bin near a window); each
    sample's unbiased log-weight is then exact given them. Returns every window's free
    energy (K,) kT (also of windows without samples; window of the first sample 0) and
    the log-weights (n,), whose log-sum-exp is the unbiased log partition function in the
    same normalisation."""
    beta = 1.0 / (units.kB * T_K)
    n_k = np.bincount(window, minlength=len(centres)).astype(float)
    s = np.flatnonzero(n_k > 0)
    ln_n = np.log(n_k[s])[:, None]
    h, edges = np.histogram(p, bins=np.arange(0.0, p.max() + 2 * width, width))
    keep = h > 0
    h, pb = h[keep], (0.5 * (edges[:-1] + edges[1:]))[keep]
    u_b = beta * 0.5 * k_bias * (pb[None, :] - centres[s][:, None]) ** 2

    def objective(g: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        f = np.concatenate([[0.0], g])
        a = ln_n + f[:, None] - u_b
        lse = np.logaddexp.reduce(a, axis=0)
        pk = np.exp(a - lse)  # (S, B)
        grad = (pk * h).sum(1) - n_k[s]
        hess = np.diag((pk * h).sum(1)) - (pk * h) @ pk.T
        return float((h * lse).sum() - (n_k[s] * f).sum()), grad[1:], hess[1:, 1:]

    g = np.zeros(len(s) - 1)
    value, grad, hess = objective(g)
    for _ in range(200):  # damped Newton on the convex objective
        if np.abs(grad).max() < 1e-8 * n_k.sum():
            break
        step = np.linalg.solve(hess + 1e-10 * np.eye(len(g)), grad)
        t = 1.0
        while t > 1e-8:
            trial = objective(g - t * step)
            if trial[0] <= value:
                break
            t *= 0.5
        g = g - t * step
        value, grad, hess = trial
    f_s = np.concatenate([[0.0], g])
    u = beta * 0.5 * k_bias * (p[None, :] - centres[:, None]) ** 2  # (K, n)
    logw = -np.logaddexp.reduce(ln_n + f_s[:, None] - u[s], axis=0)
    return -np.logaddexp.reduce(logw[None, :] - u, axis=1), logw


def mbar_delta_f(plan: np.ndarray, label: np.ndarray, inband: np.ndarray,
                 centres: np.ndarray, k_bias: float, segments: list[tuple[int, int]],
                 blocks: int, n_bootstrap: int, seed: int = 0) -> dict:
    """ΔF = F(3d) − F(planar) in kT from umbrella frames: MBAR on every frame's planarity
    ``plan`` (F, K) Å gives each frame its unbiased weight; the classes ``label`` (F, K)
    (0 planar, 1 3d, -1 none, -2 in the band ``inband`` but not quenched) sum them. Error:
    bootstrap over ``blocks`` contiguous time blocks of each run (``segments``: its rows;
    the same blocks of every window: exchanges couple them). Also the unbiased weight of
    every frame (F, K) and the free-energy profile along p."""
    nf = plan.shape[0]
    if nf < 2:
        raise SystemExit(f"umbrella: {nf} frame(s) after the burn-in: nothing to analyse "
                         "(more steps or a longer --budget-minutes)")
    f_k, logw = _mbar_logw(plan, centres, k_bias)
    value = _delta(logw, label, inband)
    rng = np.random.default_rng(seed)
    cuts = [np.arange(a, b) for a, b in segments]
    parts = [c for seg in cuts for c in np.array_split(seg, min(blocks, len(seg)))]
    boot = []
    for _ in range(n_bootstrap):
        r = np.concatenate([parts[b] for b in rng.integers(0, len(parts), len(parts))])
        boot.append(_delta(_mbar_logw(plan[r], centres, k_bias)[1], label[r], inband[r]))
    boot = np.array(boot)
    hist, e = np.histogram(plan.reshape(-1), bins=40, weights=np.exp(logw).reshape(-1))
    with np.errstate(divide="ignore"):
        prof = -np.log(hist / hist.max())
    return {"value": value, "error": float(np.nanstd(boot)), "weights": np.exp(logw),
            "bootstrap_failed": int(np.isnan(boot).sum()),
            "profile": [[round(0.5 * (e[i] + e[i + 1]), 3), round(float(prof[i]), 2)]
                        for i in range(len(hist)) if np.isfinite(prof[i])]}


def _class_profile(plan: np.ndarray, mask: np.ndarray, centres: np.ndarray, k_bias: float
                   ) -> tuple[np.ndarray, float, np.ndarray]:
    """MBAR on the frames of one class only (``mask`` (F, K) of ``plan`` (F, K) Å): every
    window's class-restricted free energy (K,) kT, also where the class has no frame, the
    class's unbiased log partition function in the same normalisation, and the class's
    frames per window (K,)."""
    kidx = np.nonzero(mask)[1]
    n_k = np.bincount(kidx, minlength=len(centres))
    if not len(kidx):
        return np.full(len(centres), np.nan), np.nan, n_k
    f, logw = mbar_weights(plan[mask], kidx, centres, k_bias)
    return f, float(np.logaddexp.reduce(logw)), n_k


def window_delta_f(plan: np.ndarray, label: np.ndarray, centres: np.ndarray, k_bias: float,
                   counts: list[np.ndarray] | None = None) -> list[np.ndarray]:
    """ΔF (kT) implied by each window's class ratio (K,): with f_{k,c} the window's
    class-restricted free energy and Z_c the class's partition function (both from MBAR
    on that class's frames, ``_class_profile``), a window whose classes are in equilibrium
    has n_{k,planar} / n_{k,3d} = (A_planar e^{−f_{k,planar}}) / (A_3d e^{−f_{k,3d}}), which
    fixes the unknown ratio A_planar / A_3d, so ΔF_k = ln(n_{k,planar} / n_{k,3d}) +
    f_{k,planar} − f_{k,3d} − ln(Z_3d / Z_planar). Equal in every window at equilibrium; a
    window whose classes do not interconvert in the run keeps its start's ratio, and its
    ΔF_k shows it. One array per entry of ``counts`` ((2, K) class counts each; default:
    those of ``label``); nan where a window lacks a class."""
    f0, z0, n0 = _class_profile(plan, label == 0, centres, k_bias)
    f1, z1, n1 = _class_profile(plan, label == 1, centres, k_bias)
    out = []
    for c0, c1 in [(n0, n1)] if counts is None else counts:
        with np.errstate(divide="ignore", invalid="ignore"):
            d = np.log(c0 / c1) + f0 - f1 - (z1 - z0)
        out.append(np.where(np.isfinite(d), d, np.nan))
    return out


def linked_delta_f(runs: list[tuple[np.ndarray, np.ndarray]], centres: np.ndarray,
                   k_bias: float, blocks: int, n_bootstrap: int, seed: int = 0,
                   min_count: int = 10) -> dict:
    """ΔF from the windows whose classes interconvert: the class-restricted profiles from
    every run's frames together (``runs``: (plan, label), each (F_r, K)), each window's
    implied ΔF_k (``window_delta_f``) from each run's class counts and from all runs' counts.
    A window links the classes if it holds ``min_count`` frames of each class in every run
    (a log-ratio of a few counts is biased and its bootstrap error too small) and (with more
    than one run) the runs' ΔF_k agree within twice their combined bootstrap error; ΔF is the
    inverse-variance mean of the pooled ΔF_k over the linking windows. Error: bootstrap over
    ``blocks`` contiguous time blocks of each run, the link set fixed."""
    plan = np.concatenate([p for p, _ in runs])
    label = np.concatenate([lab for _, lab in runs])
    edges = np.cumsum([0] + [len(p) for p, _ in runs])
    parts = [[c for c in np.array_split(np.arange(a, b), min(blocks, b - a))]
             for a, b in zip(edges[:-1], edges[1:], strict=True)]

    def one(rows_per_run: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        rows = np.concatenate(rows_per_run)
        pl, lab = plan[rows], label[rows]
        cnt = [np.stack([(label[r] == c).sum(0) for c in (0, 1)]) for r in rows_per_run]
        cnt.append(np.stack([(lab == c).sum(0) for c in (0, 1)]))
        *per, pooled = window_delta_f(pl, lab, centres, k_bias, cnt)
        return pooled, np.array(per)

    pooled, per_run = one([np.arange(a, b) for a, b in zip(edges[:-1], edges[1:],
                                                            strict=True)])
    rng = np.random.default_rng(seed)
    boot_pooled, boot_run = [], []
    for _ in range(n_bootstrap):
        pick = [np.concatenate([ps[i] for i in rng.integers(0, len(ps), len(ps))])
                for ps in parts]
        a, b = one(pick)
        boot_pooled.append(a)
        boot_run.append(b)
    with warnings.catch_warnings():  # windows without both classes: nan, no error
        warnings.simplefilter("ignore", RuntimeWarning)
        err_pooled = np.nanstd(np.array(boot_pooled), 0)
        err_run = np.nanstd(np.array(boot_run), 0)
    counts = np.array([[(lab == c).sum(0) for c in (0, 1)] for _, lab in runs])  # (R, 2, K)
    both = (counts.min((0, 1)) >= min_count) & np.isfinite(pooled) & (err_pooled > 0)
    if len(runs) > 1:
        spread = np.abs(per_run[0] - per_run[1])
        link = both & (spread <= 2.0 * np.hypot(err_run[0], err_run[1]))
    else:
        link = both
    if not link.any():
        value = error = float("nan")
    else:
        w = 1.0 / err_pooled[link] ** 2
        value = float((w * pooled[link]).sum() / w.sum())
        bp = np.array(boot_pooled)[:, link]
        ok = np.all(np.isfinite(bp), 1)
        error = float(np.std((bp[ok] * w).sum(1) / w.sum())) if ok.sum() > 1 else float("nan")

    def r(a: np.ndarray) -> list[float | None]:
        return [None if not np.isfinite(x) else round(float(x), 3) for x in a]

    return {"value": value, "error": error, "link_windows": np.flatnonzero(link).tolist(),
            "window_delta_f_kt": r(pooled), "window_error_kt": r(err_pooled),
            "window_delta_f_kt_by_run": [r(a) for a in per_run],
            "window_error_kt_by_run": [r(a) for a in err_run]}


def _agree(a: dict, b: dict) -> bool | None:
    """Whether two estimates {"delta_f_kt", "error_kt"} agree within twice their combined
    error (None without values)."""
    va, vb, ea, eb = a["delta_f_kt"], b["delta_f_kt"], a["error_kt"], b["error_kt"]
    if None in (va, vb, ea, eb):
        return None
    return bool(abs(va - vb) <= 2.0 * np.hypot(ea, eb))


def _fig(est: dict) -> dict:
    return {"delta_f_kt": _num(est["value"]), "error_kt": _num(est["error"])}


def _window_series(label: np.ndarray, parts: int = 4) -> list[list[float | None]]:
    """Per window, the 3d fraction of its quenched/classed frames in ``parts`` consecutive
    time slices (unweighted: how the window's content moves in time)."""
    out = []
    for k in range(label.shape[1]):
        row = []
        for seg in np.array_split(label[:, k], parts):
            ok = seg[seg >= 0]
            row.append(round(float(ok.mean()), 2) if len(ok) else None)
        out.append(row)
    return out


def _planar_count(label: np.ndarray, parts: int = 4) -> list[float | None]:
    """How many windows hold a planar frame, averaged over ``parts`` consecutive time slices
    of the rows whose every window is classed: replicas keep their class while they travel
    between windows (exchanges move configurations, not classes), so this count changes only
    when a replica's class converts."""
    full = label[(label >= 0).all(1)]
    return [round(float((seg == 0).sum(1).mean()), 2) if len(seg) else None
            for seg in np.array_split(full, parts)]


STARTS = ("nearest", "planar", "3d")


def umbrella_reference(windows: int, p_max: float, k_bias: float, steps: int,
                       record_every: int, quench_every: int, burn_fraction: float = 0.2,
                       blocks: int = 10, seed: int = 0, n_bootstrap: int = 100,
                       budget_minutes: float | None = None,
                       starts: tuple[str, ...] = ("planar", "3d"),
                       band: tuple[float, float] = (0.1, 0.8), verify: float = 0.01,
                       save: str | None = None) -> dict:
    """ΔF = F(3d) − F(planar) (kT and eV) at 300 K by umbrella sampling along planarity
    (replica exchange between windows), MBAR and the frames' classes (by p outside
    ``band`` Å, checked on a random sample; by quench inside it). One run per entry of
    ``starts``: ``planar`` every window from the D3h triangle, ``3d`` every window from the
    C2v bicapped tetrahedron (both by a biased sweep, ``window_starts``), ``nearest`` each
    window from the minimum whose planarity is nearest its centre. Printed: each run's ΔF,
    the first-half and second-half ΔF, and that of all runs together (the result). With
    ``budget_minutes``, each run gets an equal share: its MD stops at 60 % of its share and
    its quenches at 95 %. ``save``: each run's planarities, classes and replica indices go
    to ``{save}.{start}.npz``."""
    from alflow.examples import DATA

    t0 = time.perf_counter()
    mins = {a.info["point_group"]: a.positions for a in read(DATA / "ag6_xtb.extxyz", ":")}
    numbers = read(DATA / "ag6_xtb.extxyz", "0").numbers
    nearest = {planarity(x): x for x in mins.values()}
    keys = np.array(sorted(nearest))
    centres = np.linspace(0.0, p_max, windows)
    share = (np.inf if budget_minutes is None else 60.0 * budget_minutes) / len(starts)
    rng = np.random.default_rng(seed)
    runs = []
    for n_run, start in enumerate(starts):
        r0, c0 = time.perf_counter(), Oracle.calls
        if start == "nearest":
            x0 = np.stack([nearest[keys[np.abs(keys - c).argmin()]] for c in centres])
        else:
            origin = mins["D3h" if start == "planar" else "C2v"]
            x0 = window_starts(origin, numbers, centres, k_bias, seed + n_run)
        start_calls = Oracle.calls - c0
        print(f"  run {start}: window starts ({start_calls} calls), planarity "
              f"{[round(planarity(x), 2) for x in x0]}", flush=True)
        md = umbrella(x0, numbers, centres, k_bias, steps, record_every, seed=seed + n_run,
                      deadline=r0 + 0.6 * share)
        md_calls, md_s = Oracle.calls - c0 - start_calls, time.perf_counter() - r0
        burn = int(burn_fraction * len(md["frames"]))
        frames, plan = md["frames"][burn:], md["plan"][burn:]
        label, inband, minima, check = band_classes(frames, plan, numbers, band, quench_every,
                                                    verify, rng, deadline=r0 + 0.95 * share)
        frames, plan = frames[::quench_every], plan[::quench_every]  # the quench rows
        label, inband = label[::quench_every], inband[::quench_every]
        for mm in minima:  # frames of the quench rows only (the checks elsewhere are dropped)
            mm["_idx"] = [(i // quench_every, k) for i, k in mm["_idx"] if i % quench_every == 0]
        if save:
            np.savez_compressed(f"{save}.{start}.npz", plan=plan, label=label, inband=inband,
                                replica=md["replica"][burn:], centres=centres,
                                k_bias=k_bias, quench_every=quench_every)
        runs.append({"start": start, "plan": plan, "label": label, "inband": inband,
                     "minima": minima, "check": check, "replica": md["replica"],
                     "acceptance": md["acceptance"], "start_calls": start_calls,
                     "md_calls": md_calls, "md_seconds": round(md_s, 1),
                     "calls": Oracle.calls - c0, "seconds": time.perf_counter() - r0,
                     "ps_per_window": len(md["frames"]) * record_every * 5.0 / 1000,
                     "burn": burn})
    a0 = time.perf_counter()
    out = analyse_runs(runs, centres, k_bias, blocks, n_bootstrap, seed)
    analysis_s = time.perf_counter() - a0
    minima: list[dict] = []
    edges = np.cumsum([0] + [len(r["plan"]) for r in runs])
    for r, a in zip(runs, edges[:-1], strict=True):  # merge the runs' minima, rows pooled
        for mm in r["minima"]:
            mm["_idx"] = [(a + i, k) for i, k in mm["_idx"]]
            for m2 in minima:
                if (abs(m2["energy_ev"] - mm["energy_ev"]) < 2e-3
                        and np.sqrt(((m2["_d"] - mm["_d"]) ** 2).mean()) < 0.05):
                    m2["_idx"] += mm["_idx"]
                    break
            else:
                minima.append(mm)
    label = np.concatenate([r["label"] for r in runs])
    inband = np.concatenate([r["inband"] for r in runs])
    _populations(minima, label, out.pop("_weights"))
    seconds = time.perf_counter() - t0
    out.update({
        "k_bias_ev_per_a2": k_bias, "steps": steps,
        "ps_per_window": [round(r["ps_per_window"], 2) for r in runs],
        "burn_fraction": burn_fraction, "quench_every": quench_every,
        "quenched_band": int((inband & (label > -2)).sum()), "in_band": int(inband.sum()),
        "band_check": [r["check"] for r in runs], "budget_minutes": budget_minutes,
        "exchange_acceptance": round(float(np.mean([r["acceptance"] for r in runs])), 3),
        "exchange_acceptance_pairs": [r["acceptance"].round(2).tolist() for r in runs],
        "round_trips": [round_trips(r["replica"]) for r in runs],
        "minima": sorted(minima, key=lambda m: m["energy_ev"]),
        "start_calls": [r["start_calls"] for r in runs],
        "md_oracle_calls": sum(r["md_calls"] for r in runs),
        "md_seconds": sum(r["md_seconds"] for r in runs),
        "analysis_seconds": round(analysis_s, 1), "oracle_calls": Oracle.calls,
        "ms_per_call": round(1e3 * seconds / max(Oracle.calls, 1), 2),
        "seconds": round(seconds, 1)})
    return out


def analyse_runs(runs: list[dict], centres: np.ndarray, k_bias: float, blocks: int = 10,
                 n_bootstrap: int = 100, seed: int = 0) -> dict:
    """The figures of umbrella runs (``runs``: each with ``start`` and its quench rows'
    ``plan``, ``label``, ``inband`` (F_r, K)): the result, ΔF from the windows that link the
    classes (``linked_delta_f``), with its halves; and for comparison plain MBAR over every
    window of all runs together (``mbar_delta_f``), per start and per half, which trusts every
    window's class ratio. ``_weights``: the frames' plain-MBAR weights."""
    plan = np.concatenate([r["plan"] for r in runs])
    label = np.concatenate([r["label"] for r in runs])
    inband = np.concatenate([r["inband"] for r in runs])
    edges = np.cumsum([0] + [len(r["plan"]) for r in runs])
    segments = list(zip(edges[:-1], edges[1:], strict=True))
    per_blocks = max(blocks // len(runs), 2)
    est = mbar_delta_f(plan, label, inband, centres, k_bias, segments, per_blocks,
                       n_bootstrap, seed)

    def sub(rows: np.ndarray, segs: list[tuple[int, int]]) -> dict:
        return _fig(mbar_delta_f(plan[rows], label[rows], inband[rows], centres, k_bias,
                                 segs, per_blocks, n_bootstrap, seed))

    halves, by_start = [], {}
    for h in (0, 1):
        rows = [np.array_split(np.arange(a, b), 2)[h] for a, b in segments]
        lens = np.cumsum([0] + [len(r) for r in rows])
        halves.append(sub(np.concatenate(rows), list(zip(lens[:-1], lens[1:], strict=True))))
    if len(runs) > 1:
        for r, (a, b) in zip(runs, segments, strict=True):
            by_start[r["start"]] = sub(np.arange(a, b), [(0, b - a)])
    link_runs = [(r["plan"], r["label"]) for r in runs]
    linked = linked_delta_f(link_runs, centres, k_bias, per_blocks, n_bootstrap, seed)
    linked_halves = []
    for h in (0, 1):
        half = [(np.array_split(p, 2)[h], np.array_split(lab, 2)[h]) for p, lab in link_runs]
        linked_halves.append(_fig(linked_delta_f(half, centres, k_bias,
                                                 max(per_blocks // 2, 2), n_bootstrap, seed)))
    kt = units.kB * T_K
    value, error = linked["value"], linked["error"]
    return {"method": "umbrella", "delta_f_kt": _num(value), "error_kt": _num(error),
            "delta_f_ev": _num(value * kt), "error_ev": _num(error * kt),
            "temperature_k": T_K, "starts": [r["start"] for r in runs],
            "halves": linked_halves, "halves_agree": _agree(*linked_halves),
            **{k: v for k, v in linked.items() if k not in ("value", "error")},
            "mbar_pooled": {**_fig(est), "by_start": by_start,
                            "starts_agree": _agree(*by_start.values()) if by_start else None,
                            "halves": halves, "halves_agree": _agree(*halves),
                            "bootstrap_failed": est["bootstrap_failed"]},
            "windows": len(centres), "centres_a": centres.round(3).tolist(),
            "frames": int(plan.size), "planar": int((label == 0).sum()),
            "3d": int((label == 1).sum()), "neither": int((label == -1).sum()),
            "window_3d_fraction_quarters": [_window_series(r["label"]) for r in runs],
            "planar_windows_quarters": [_planar_count(r["label"]) for r in runs],
            "bootstrap_blocks": per_blocks * len(runs), "profile_kt": est["profile"],
            "_weights": est["weights"]}


def _num(v: float) -> float | None:
    """None for a figure without a value: ΔF when a state was never seen, its error when a
    bootstrap resample sees only one state (too few chains)."""
    return float(v) if np.isfinite(v) else None


QUICK = {"chains": 2, "steps": 200, "record_every": 20}
FULL = {"chains": 8, "steps": 20000, "record_every": 40}
UMBRELLA_QUICK = {"windows": 12, "steps": 120, "record_every": 10, "quench_every": 2}
UMBRELLA_FULL = {"windows": 25, "steps": 8000, "record_every": 10, "quench_every": 6}


def _print_checks(out: dict) -> None:
    """The umbrella run's convergence evidence, readable."""
    for n, start in enumerate(out["starts"]):
        print(f"  run {start}: round trips 0 -> K-1 -> 0 per replica "
              f"{out['round_trips'][n]}; exchange acceptance per pair "
              f"{out['exchange_acceptance_pairs'][n]}")
        for c, q in zip(out["centres_a"], out["window_3d_fraction_quarters"][n], strict=True):
            print(f"    window {c:.3f} Å: 3d fraction per time quarter {q}")
        print(f"    windows holding a planar frame, per time quarter: "
              f"{out['planar_windows_quarters'][n]}")
        for rnd in out["band_check"][n]["rounds"]:
            print(f"    band {rnd['band_a']} Å: {rnd['quenched']} frames classed by p "
                  f"checked by quench, disagreements {rnd['disagreements']}")
    pooled = out["mbar_pooled"]
    print(f"  plain MBAR over every window: ΔF = {pooled['delta_f_kt']} ± "
          f"{pooled['error_kt']} kT")
    for name, fig in [*pooled["by_start"].items(),
                      *zip(("first half", "second half"), pooled["halves"], strict=True)]:
        print(f"    {name}: ΔF = {fig['delta_f_kt']} ± {fig['error_kt']} kT")
    print("  ΔF_k implied by each window's class ratio (all runs; per run), kT:")
    for i, c in enumerate(out["centres_a"]):
        per = ", ".join(f"{r[i]} ± {e[i]}" for r, e in zip(
            out["window_delta_f_kt_by_run"], out["window_error_kt_by_run"], strict=True))
        mark = "  link" if i in out["link_windows"] else ""
        print(f"    {c:.3f} Å: {out['window_delta_f_kt'][i]} ± {out['window_error_kt'][i]}; "
              f"{per}{mark}")
    print(f"  linking windows: halves {[(h['delta_f_kt'], h['error_kt']) for h in out['halves']]}"
          f", agree {out['halves_agree']}")


def reanalyse(prefix: str, starts: tuple[str, ...], blocks: int, n_bootstrap: int,
              seed: int) -> dict:
    """The figures of a saved umbrella run (``--save PREFIX``): ``PREFIX.<start>.npz`` per
    start, and the run's own figures (calls, times, minima, checks) from ``PREFIX.json``
    (its output's last line); the estimates are recomputed."""
    runs = []
    for start in starts:
        path = f"{prefix}.{start}.npz"
        try:
            d = np.load(path)
        except OSError as err:
            print(f"--analyse: cannot read {path} ({err}); expected the file that --save "
                  f"{prefix} writes for start {start!r}", file=sys.stderr)
            raise SystemExit(2) from None
        centres, k_bias = d["centres"], float(d["k_bias"])
        runs.append({"start": start, "plan": d["plan"], "label": d["label"],
                     "inband": d["inband"], "replica": d["replica"]})
    try:
        with open(f"{prefix}.json") as fh:
            out = json.loads(fh.read().strip().splitlines()[-1])
        out["minima"]
    except (OSError, ValueError, IndexError, KeyError) as err:
        print(f"--analyse: {prefix}.json: expected the last output line (JSON) of the run "
              f"saved with --save {prefix} ({err!r})", file=sys.stderr)
        raise SystemExit(2) from None
        for key in ("by_start", "starts_agree", "linked"):  # the former run's estimates
            out.pop(key, None)
    t0 = time.perf_counter()
    new = analyse_runs(runs, centres, k_bias, blocks, n_bootstrap, seed)
    new.pop("_weights")
    out.update(new)
    out["round_trips"] = [round_trips(r["replica"]) for r in runs]
    out["analysis_seconds"] = round(time.perf_counter() - t0, 1)
    out["reanalysed"] = prefix.rsplit("/", 1)[-1]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a few ps in all (figures only)")
    ap.add_argument("--method", choices=("umbrella", "tempering"), default="umbrella")
    ap.add_argument("--chains", type=int, help="tempering: independent chains")
    ap.add_argument("--steps", type=int, help="MD steps (5 fs) per replica / window")
    ap.add_argument("--t-max", type=float, default=900.0, help="tempering: K")
    ap.add_argument("--temps", type=int, default=6, help="tempering: replicas per chain")
    ap.add_argument("--windows", type=int, help="umbrella: windows from 0 to --p-max")
    ap.add_argument("--p-max", type=float, default=1.2, help="umbrella: last centre, Å")
    ap.add_argument("--k-bias", type=float, default=15.0, help="umbrella: eV/Å²")
    ap.add_argument("--quench-every", type=int, help="umbrella: quench every n-th frame")
    ap.add_argument("--budget-minutes", type=float, help="umbrella: stop the MD at 60 %% "
                    "and the quenches at 90 %% of this wall time, and analyse what is done")
    ap.add_argument("--starts", default="planar,3d", help="umbrella: one run per entry, "
                    "comma-separated: planar (every window from the triangle), 3d (from the "
                    "bicapped tetrahedron), nearest (from the minimum nearest its centre)")
    ap.add_argument("--save", help="umbrella: write each run's planarities, classes and "
                    "replica indices to SAVE.<start>.npz")
    ap.add_argument("--analyse", metavar="PREFIX", help="umbrella: no run; recompute the "
                    "figures of the runs saved with --save PREFIX (their starts: --starts)")
    ap.add_argument("--band", default="0.1,0.8", help="umbrella: planarity band lo,hi Å "
                    "whose frames are classed by quench; outside by p, checked on a sample")
    ap.add_argument("--verify", type=float, default=0.01, help="umbrella: fraction of the "
                    "frames classed by p that are quenched to check them (at least 20)")
    ap.add_argument("--bootstrap", type=int, default=100, help="umbrella: resamples")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    load0 = os.getloadavg()[0]
    given = {k: getattr(args, k) for k in ("chains", "steps", "windows", "quench_every")}
    if args.method == "umbrella" and args.analyse:
        out = reanalyse(args.analyse, tuple(args.starts.split(",")), 10, args.bootstrap,
                        args.seed)
    elif args.method == "umbrella":
        cfg = dict(UMBRELLA_QUICK if args.quick else UMBRELLA_FULL)
        cfg.update({k: v for k, v in given.items() if v and k in cfg})
        starts = tuple(args.starts.split(","))
        bad = [x for x in starts if x not in STARTS]
        try:
            band = tuple(float(b) for b in args.band.split(","))
        except ValueError:
            band = ()
        if bad or not starts:
            ap.error(f"--starts: expected entries of {', '.join(STARTS)}, got {args.starts!r}")
        if len(band) != 2 or not 0 <= band[0] <= band[1]:
            ap.error(f"--band: expected two planarities lo,hi in Å, 0 <= lo <= hi, got "
                     f"{args.band!r}")
        out = umbrella_reference(**cfg, p_max=args.p_max, k_bias=args.k_bias, seed=args.seed,
                                 budget_minutes=args.budget_minutes, starts=starts,
                                 band=band, verify=args.verify, save=args.save,
                                 n_bootstrap=args.bootstrap)
    else:
        cfg = dict(QUICK if args.quick else FULL)
        cfg.update({k: v for k, v in given.items() if v and k in cfg})
        out = reference(**cfg, t_max=args.t_max, n_temps=args.temps, seed=args.seed)
    out["quick"] = args.quick
    out.setdefault("load_average", [round(load0, 2), round(os.getloadavg()[0], 2)])
    for m in out["minima"]:
        print(f"  minimum {m['energy_ev']:.4f} eV  planarity {m['planarity_a']:.3f} Å  "
              f"{m['state']:6s}  300 K population {m['population']:.3f}")
    if args.method == "umbrella":
        _print_checks(out)
    print(f"Ag6/GFN1-xTB {T_K:.0f} K ({args.method}): ΔF = F(3d) − F(planar) = "
          f"{out['delta_f_kt']} ± {out['error_kt']} kT ({out['planar']} planar, {out['3d']} 3d, "
          f"{out['neither']} neither; exchange acceptance {out['exchange_acceptance']:.2f}; "
          f"{out['oracle_calls']} GFN1-xTB calls, {out['ms_per_call']} ms each, "
          f"{out['seconds']} s)", flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
