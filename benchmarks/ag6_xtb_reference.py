"""Reference ΔF = F(3d) − F(planar) of Ag6 on GFN1-xTB at 300 K on the oracle itself, with
tblite, numpy and pymbar only (none of alflow's MLIPs, flows or estimators).

States as the ag6-xtb example defines them: a frame is quenched on GFN1-xTB (FIRE to 5e-3
eV/Å) and is ``planar`` if the minimum's planarity (RMS distance of the atoms from their
best-fit plane) is below 0.1 Å, ``3d`` otherwise; frames beyond the hard wall (8 Å from the
centre of mass; a soft wall beyond it keeps the dynamics finite) or whose quench does not
converge count for neither. Every force is a GFN1-xTB calculation (one tblite calculator per
replica, restarted from its previous density); BAOAB Langevin, 5 fs, friction 0.01/fs.

``--method umbrella`` (default): umbrella sampling along the planarity p of the
configuration. ``windows`` harmonic biases ½ k (p − c)² (centres c from 0 to ``--p-max``
Å, k ``--k-bias`` eV/Å²), one replica per window at 300 K, neighbouring windows exchanging
configurations every 10 steps (Metropolis on the bias energies: no oracle calls; it carries
configurations past barriers orthogonal to p). MBAR (pymbar) on every recorded frame's p
gives each frame its unbiased 300 K weight; every ``quench_every``-th frame is quenched and
ΔF = −ln(Σ_3d w / Σ_planar w) kT. Unbiased (given enough sampling) although p separates the
states only in part: the class comes from the quench, the CV only makes the rare planar
state frequent. Error:
bootstrap over 10 contiguous time blocks (the same blocks in every window). Also printed: the
free-energy profile along p.

``--method tempering``: ``chains`` independent chains of replicas at geometrically spaced
temperatures (300 K ... ``t_max``) exchanging neighbouring configurations; frames of the
300 K replica quenched and counted, ΔF = −kT ln(n_3d / n_planar), error by bootstrap over
chains. Planar ↔ 3D crossings are rare: it does not converge in affordable time
(docs/campaign.md).

Both print each distinct minimum reached (energy eV, planarity Å, 300 K population), the
exchange acceptance, GFN1-xTB calls and their mean cost.

    python benchmarks/ag6_xtb_reference.py [--quick] [--method umbrella|tempering]
        [--windows N --steps N --quench-every N --p-max Å --k-bias eV/Å²] [--chains N]
    # last line: JSON
"""

from __future__ import annotations

import argparse
import json
import os
import time

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
             deadline: float = np.inf) -> tuple[np.ndarray, list[dict]]:
    """Quench every frame (..., N, 3) Å on GFN1-xTB: its class (0 planar, 1 3d, -1 beyond the
    wall or not converged; shape frames.shape[:-2]) and the distinct minima reached, each with
    the indices of the frames that reached it. ``order``: the frames' flat indices in the
    order to quench them; at ``deadline`` (time.perf_counter()) the rest stay unquenched
    (-2)."""
    lead = frames.shape[:-2]
    q = Oracle(numbers, frames.reshape(-1, *frames.shape[-2:])[0])
    label = np.full(lead, -2)
    minima: list[dict] = []
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


def umbrella(starts: dict[float, np.ndarray], numbers: np.ndarray, centres: np.ndarray,
             k_bias: float, steps: int, record_every: int, exchange_every: int = 10,
             dt_fs: float = 5.0, friction_per_fs: float = 0.01, seed: int = 0,
             deadline: float = np.inf) -> tuple[np.ndarray, np.ndarray, float]:
    """Hamiltonian replica exchange of umbrella windows along planarity: one BAOAB Langevin
    replica per window (bias ½ k_bias (p − centre)², k_bias eV/Å², centres (K,) Å) at 300 K,
    neighbours exchanging configurations (Metropolis on the bias energies; no oracle calls).
    A window starts from the start whose planarity lies nearest its centre (``starts``:
    planarity Å -> positions). Returns the recorded frames (F, K, N, 3) Å and their planarity
    (F, K) Å (index k: the window's bias) and the exchange acceptance; stops early at
    ``deadline`` (time.perf_counter())."""
    rng = np.random.default_rng(seed)
    kw = len(centres)
    mass = atomic_masses[numbers][None, :, None]
    dt, gamma = dt_fs * units.fs, friction_per_fs / units.fs
    c1 = np.exp(-gamma * dt)
    c2 = np.sqrt(1 - c1 * c1)
    beta = 1.0 / (units.kB * T_K)
    sig = np.sqrt(units.kB * T_K / mass)
    keys = np.array(sorted(starts))
    x = np.stack([starts[keys[np.abs(keys - c).argmin()]] for c in centres]).astype(float)
    x -= x.mean(1, keepdims=True)
    oracles = [Oracle(numbers, x[i]) for i in range(kw)]
    v = rng.normal(size=x.shape) * sig
    f = np.zeros_like(x)
    pl = np.zeros(kw)

    def forces() -> None:
        for i in range(kw):
            _, fo = oracles[i](x[i])
            pl[i], g = planarity_grad(x[i])
            f[i] = fo - k_bias * (pl[i] - centres[i]) * g

    forces()
    frames, plan, acc = [], [], []
    for s in range(steps):
        baoab(x, v, f, mass, dt, c1, c2 * sig, rng, forces)
        if (s + 1) % exchange_every == 0:
            for i in range((s // exchange_every) % 2, kw - 1, 2):
                a, b = centres[i], centres[i + 1]
                du = 0.5 * k_bias * ((pl[i] - b) ** 2 + (pl[i + 1] - a) ** 2
                                     - (pl[i] - a) ** 2 - (pl[i + 1] - b) ** 2)
                ok = np.log(rng.random()) < -beta * du
                acc.append(ok)
                if ok:
                    for arr in (x, v, pl):
                        arr[[i, i + 1]] = arr[[i + 1, i]]
                    oracles[i], oracles[i + 1] = oracles[i + 1], oracles[i]
                    for j in (i, i + 1):
                        g = planarity_grad(x[j])[1]
                        f[j] = oracles[j].last_forces - k_bias * (pl[j] - centres[j]) * g
        if (s + 1) % record_every == 0:
            frames.append(x.copy())
            plan.append(pl.copy())
        if (s + 1) % max(steps // 10, 1) == 0:
            print(f"  umbrella MD step {s + 1}/{steps}, {Oracle.calls} calls", flush=True)
        if time.perf_counter() > deadline:
            print(f"  umbrella MD stopped at step {s + 1} (time budget)", flush=True)
            break
    return np.array(frames), np.array(plan), float(np.mean(acc)) if acc else float("nan")


def mbar_delta_f(plan: np.ndarray, label: np.ndarray, centres: np.ndarray, k_bias: float,
                 blocks: int, n_bootstrap: int, seed: int = 0) -> dict:
    """ΔF = F(3d) − F(planar) in kT from umbrella frames: MBAR (pymbar) on every frame's
    planarity ``plan`` (F, K) Å gives each frame its unbiased weight; the quench classes
    ``label`` (F, K) (0 planar, 1 3d, -1 none or not quenched) sum them. Error: bootstrap over
    ``blocks`` contiguous time blocks (the same blocks of every window: exchanges couple
    them). Also the unbiased weight of every frame (F, K) and the free-energy profile."""
    from pymbar import MBAR

    beta = 1.0 / (units.kB * T_K)
    nf, kw = plan.shape

    def solve(rows: np.ndarray, f0: np.ndarray | None = None):
        p = plan[rows].T.reshape(-1)  # window-major: every frame of window 0, then 1...
        u = beta * 0.5 * k_bias * (p[None, :] - centres[:, None]) ** 2
        mb = MBAR(u, np.full(kw, len(rows)), initial_f_k=f0)
        logw = -np.logaddexp.reduce(np.log(len(rows)) + mb.f_k[:, None] - u, axis=0)
        return mb.f_k, (logw - logw.max()).reshape(kw, len(rows)).T

    def dfk(logw: np.ndarray, lab: np.ndarray) -> float:
        w = np.exp(logw)
        n3, n0 = w[lab == 1].sum(), w[lab == 0].sum()
        return float(-np.log(n3 / n0)) if n3 > 0 and n0 > 0 else float("nan")

    rows = np.arange(nf)
    if nf < 2:
        raise SystemExit(f"umbrella: {nf} frame(s) after the burn-in: nothing to analyse "
                         "(more steps or a longer --budget-minutes)")
    blocks = min(blocks, nf)
    f_k, logw = solve(rows)
    value = dfk(logw, label)
    rng = np.random.default_rng(seed)
    edges = np.linspace(0, nf, blocks + 1).astype(int)
    boot = []
    for _ in range(n_bootstrap):
        pick = rng.integers(0, blocks, blocks)
        r = np.concatenate([np.arange(edges[b], edges[b + 1]) for b in pick])
        boot.append(dfk(solve(r, f_k)[1], label[r]))
    boot = np.array(boot)
    hist, e = np.histogram(plan.reshape(-1), bins=40, weights=np.exp(logw).reshape(-1))
    with np.errstate(divide="ignore"):
        prof = -np.log(hist / hist.max())
    return {"value": value, "error": float(np.nanstd(boot)), "weights": np.exp(logw),
            "bootstrap_failed": int(np.isnan(boot).sum()),
            "profile": [[round(0.5 * (e[i] + e[i + 1]), 3), round(float(prof[i]), 2)]
                        for i in range(len(hist)) if np.isfinite(prof[i])]}


def umbrella_reference(windows: int, p_max: float, k_bias: float, steps: int,
                       record_every: int, quench_every: int, burn_fraction: float = 0.2,
                       blocks: int = 10, seed: int = 0, n_bootstrap: int = 200,
                       budget_minutes: float | None = None) -> dict:
    """ΔF = F(3d) − F(planar) (kT and eV) at 300 K by umbrella sampling along planarity
    (replica exchange between windows), MBAR and the quench class of every
    ``quench_every``-th recorded frame. With ``budget_minutes``, the MD stops at 60 % of it
    and the quenches (all windows of a recorded time at once, the times in random order) at
    90 %: what is done is analysed."""
    from alflow.examples import DATA

    t0 = time.perf_counter()
    mins = {a.info["point_group"]: a.positions for a in read(DATA / "ag6_xtb.extxyz", ":")}
    numbers = read(DATA / "ag6_xtb.extxyz", "0").numbers
    starts = {planarity(x): x for x in mins.values()}
    centres = np.linspace(0.0, p_max, windows)
    budget = np.inf if budget_minutes is None else 60.0 * budget_minutes
    frames, plan, acc = umbrella(starts, numbers, centres, k_bias, steps, record_every,
                                 seed=seed, deadline=t0 + 0.6 * budget)
    md_s, md_calls = time.perf_counter() - t0, Oracle.calls
    burn = int(burn_fraction * len(frames))
    frames, plan = frames[burn:], plan[burn:]
    label = np.full(plan.shape, -2)
    sub = np.arange(0, len(frames), quench_every)
    order = (np.random.default_rng(seed).permutation(len(sub))[:, None] * windows
             + np.arange(windows)[None]).reshape(-1)
    label[sub], minima = classify(frames[sub], numbers, order, deadline=t0 + 0.9 * budget)
    for mm in minima:  # frame indices into the full arrays
        mm["_idx"] = [(sub[i], k) for i, k in mm["_idx"]]
    quenched = int((label > -2).sum())
    q_s = time.perf_counter() - t0 - md_s
    est = mbar_delta_f(plan, label, centres, k_bias, blocks, n_bootstrap, seed)
    _populations(minima, label, est["weights"])
    kt = units.kB * T_K
    seconds = time.perf_counter() - t0
    value, error = est["value"], est["error"]
    return {"method": "umbrella", "delta_f_kt": _num(value), "error_kt": _num(error),
            "delta_f_ev": _num(value * kt), "error_ev": _num(error * kt),
            "temperature_k": T_K, "windows": windows, "centres_a": centres.round(3).tolist(),
            "k_bias_ev_per_a2": k_bias, "steps": steps,
            "ps_per_window": (burn + len(frames)) * record_every * 5.0 / 1000,
            "frames": int(plan.size), "quenched": quenched,
            "planar": int((label == 0).sum()), "3d": int((label == 1).sum()),
            "neither": int((label == -1).sum()), "budget_minutes": budget_minutes,
            "exchange_acceptance": round(acc, 3), "bootstrap_blocks": blocks,
            "bootstrap_failed": est["bootstrap_failed"], "profile_kt": est["profile"],
            "minima": sorted(minima, key=lambda m: m["energy_ev"]),
            "md_seconds": round(md_s, 1), "quench_seconds": round(q_s, 1),
            "oracle_calls": Oracle.calls, "md_oracle_calls": md_calls,
            "ms_per_call": round(1e3 * seconds / max(Oracle.calls, 1), 2),
            "seconds": round(seconds, 1)}


def _num(v: float) -> float | None:
    """None for a figure without a value: ΔF when a state was never seen, its error when a
    bootstrap resample sees only one state (too few chains)."""
    return float(v) if np.isfinite(v) else None


QUICK = {"chains": 2, "steps": 200, "record_every": 20}
FULL = {"chains": 8, "steps": 20000, "record_every": 40}
UMBRELLA_QUICK = {"windows": 16, "steps": 200, "record_every": 10, "quench_every": 4}
UMBRELLA_FULL = {"windows": 31, "steps": 4000, "record_every": 10, "quench_every": 4}


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
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    load0 = os.getloadavg()[0]
    given = {k: getattr(args, k) for k in ("chains", "steps", "windows", "quench_every")}
    if args.method == "umbrella":
        cfg = dict(UMBRELLA_QUICK if args.quick else UMBRELLA_FULL)
        cfg.update({k: v for k, v in given.items() if v and k in cfg})
        out = umbrella_reference(**cfg, p_max=args.p_max, k_bias=args.k_bias, seed=args.seed,
                                 budget_minutes=args.budget_minutes)
    else:
        cfg = dict(QUICK if args.quick else FULL)
        cfg.update({k: v for k, v in given.items() if v and k in cfg})
        out = reference(**cfg, t_max=args.t_max, n_temps=args.temps, seed=args.seed)
    out["quick"] = args.quick
    out["load_average"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
    for m in out["minima"]:
        print(f"  minimum {m['energy_ev']:.4f} eV  planarity {m['planarity_a']:.3f} Å  "
              f"{m['state']:6s}  300 K population {m['population']:.3f}")
    print(f"Ag6/GFN1-xTB {T_K:.0f} K ({args.method}): ΔF = F(3d) − F(planar) = "
          f"{out['delta_f_kt']} ± {out['error_kt']} kT ({out['planar']} planar, {out['3d']} 3d, "
          f"{out['neither']} neither; exchange acceptance {out['exchange_acceptance']:.2f}; "
          f"{out['oracle_calls']} GFN1-xTB calls, {out['ms_per_call']} ms each, "
          f"{out['seconds']} s)", flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
