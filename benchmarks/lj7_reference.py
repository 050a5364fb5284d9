"""Reference ΔF = F(coh) − F(pbp) of the lj7 example on its oracle (plain Lennard-Jones), at
18 K, by direct counting: parallel-tempering Langevin MD and the quench basin of every frame.

Independent of alflow's flows, MLIPs and estimators (numpy only): chains of replicas at
geometrically spaced temperatures (18 K ... ``t_max``) exchange neighbouring configurations
(Metropolis on the energy difference, velocities rescaled); frames of the 18 K replica are
quenched (FIRE) and assigned to pbp or coh by the energy of the minimum they reach (the four
lj7 minima have distinct energies); frames outside the hard wall (8.5125 Å from the centre of
mass; a soft wall beyond it keeps the dynamics finite) count for neither.
ΔF = −kT ln(n_coh / n_pbp), error by bootstrap over chains (independent).

    python benchmarks/lj7_reference.py [--quick]     # last line: one JSON object
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from ase import units

SIGMA, EPSILON = 3.405, 0.0103  # Å, eV (argon)
WALL = 8.5125  # Å
MINIMA_EPS = {"pbp": -16.5054, "coh": -15.9350}  # energies of the two states' minima, epsilon
MASS = 39.948  # amu
_I, _J = np.triu_indices(7, 1)
_PAIR_TO_ATOM = np.zeros((len(_I), 7))
_PAIR_TO_ATOM[np.arange(len(_I)), _I] = 1.0
_PAIR_TO_ATOM[np.arange(len(_I)), _J] = -1.0


def lj(x: np.ndarray, k_wall: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Energy (...,) eV and forces (..., 7, 3) eV/Å of LJ clusters x (..., 7, 3) Å, plus a
    harmonic wall ``k_wall`` eV/Å² beyond ``WALL`` from the centroid (equal masses)."""
    d = x[..., _I, :] - x[..., _J, :]
    r2 = (d * d).sum(-1)
    s6 = (SIGMA * SIGMA / r2) ** 3
    e = (4 * EPSILON * (s6 * s6 - s6)).sum(-1)
    f = np.einsum("...pk,pn->...nk", (24 * EPSILON * (2 * s6 * s6 - s6) / r2)[..., None] * d,
                  _PAIR_TO_ATOM)
    rel = x - x.mean(-2, keepdims=True)
    r = np.sqrt((rel * rel).sum(-1, keepdims=True))
    over = np.maximum(r - WALL, 0.0)
    e = e + 0.5 * k_wall * (over[..., 0] ** 2).sum(-1)
    fw = -k_wall * over * rel / np.maximum(r, 1e-12)
    return e, f + fw - fw.mean(-2, keepdims=True)


def fire(x: np.ndarray, fmax: float = 1e-3, steps: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    """Batched FIRE quench of x (B, 7, 3) Å: minimum energies (B,) eV, largest force (B,)."""
    x = x.copy()
    v = np.zeros_like(x)
    b = len(x)
    dt, alpha, n_up = np.full((b, 1, 1), 0.5), np.full((b, 1, 1), 0.1), np.zeros((b, 1, 1))
    for _ in range(steps):
        _, f = lj(x)
        if np.sqrt((f * f).sum(-1)).max() < fmax:
            break
        p = (f * v).sum((1, 2), keepdims=True)
        fn = np.sqrt((f * f).sum((1, 2), keepdims=True)) + 1e-300
        v = (1 - alpha) * v + alpha * f / fn * np.sqrt((v * v).sum((1, 2), keepdims=True))
        up = p > 0
        n_up = np.where(up, n_up + 1, 0)
        grow = up & (n_up > 5)
        dt = np.where(grow, np.minimum(dt * 1.1, 5.0), np.where(up, dt, dt * 0.5))
        alpha = np.where(grow, alpha * 0.99, np.where(up, alpha, 0.1))
        v = np.where(up, v, 0.0) + dt * f
        dx = dt * v
        norm = np.sqrt((dx * dx).sum(-1, keepdims=True)).max(1, keepdims=True)
        x = x + dx * np.minimum(0.1 / np.maximum(norm, 1e-300), 1.0)
    e, f = lj(x)
    return e, np.sqrt((f * f).sum(-1)).max(-1)


def parallel_tempering(starts: np.ndarray, chains: int, steps: int, temps: np.ndarray,
                       record_every: int = 100, exchange_every: int = 20, dt_fs: float = 10.0,
                       friction_per_fs: float = 0.01, seed: int = 0) -> tuple[np.ndarray, float]:
    """BAOAB Langevin of ``chains`` x len(temps) replicas with neighbour exchanges, chain c
    starting from ``starts[c % len(starts)]`` (S, 7, 3) Å; returns frames of the temps[0]
    replica (F, chains, 7, 3) Å and the exchange acceptance."""
    rng = np.random.default_rng(seed)
    k = len(temps)
    dt, gamma = dt_fs * units.fs, friction_per_fs / units.fs
    c1 = np.exp(-gamma * dt)
    c2 = np.sqrt(1 - c1 * c1)
    sig = np.sqrt(units.kB * np.asarray(temps) / MASS)[None, :, None, None]
    beta = 1.0 / (units.kB * np.asarray(temps))
    starts = starts - starts.mean(-2, keepdims=True)
    x = np.repeat(starts[np.arange(chains) % len(starts)][:, None], k, 1)
    v = rng.normal(size=x.shape) * sig
    e, f = lj(x)
    frames, acc = [], []
    for s in range(steps):
        v += 0.5 * dt * f / MASS
        x += 0.5 * dt * v
        v = c1 * v + c2 * sig * rng.normal(size=x.shape)
        x += 0.5 * dt * v
        e, f = lj(x)
        v += 0.5 * dt * f / MASS
        if (s + 1) % exchange_every == 0:
            for i in range((s // exchange_every) % 2, k - 1, 2):
                ok = np.log(rng.random(chains)) < (beta[i] - beta[i + 1]) * (e[:, i] - e[:, i + 1])
                acc.append(ok.mean())
                r = np.sqrt(temps[i] / temps[i + 1])
                for arr, scale in ((x, 1.0), (f, 1.0), (e, 1.0), (v, r)):
                    a, b = arr[ok, i].copy(), arr[ok, i + 1].copy()
                    arr[ok, i], arr[ok, i + 1] = b * scale, a / scale
        if (s + 1) % record_every == 0:
            frames.append(x[:, 0].copy())
    return np.array(frames), float(np.mean(acc)) if acc else float("nan")


def reference(chains: int = 128, steps: int = 60000, t_max: float = 40.0, n_temps: int = 6,
              temperature_k: float = 18.0, burn_fraction: float = 0.3, seed: int = 0,
              n_bootstrap: int = 1000) -> dict:
    """ΔF = F(coh) − F(pbp) (kT and eV) at ``temperature_k`` by parallel-tempering counts."""
    from ase.io import read

    from alflow.examples import DATA

    t0 = time.perf_counter()
    minima = {a.info.get("state"): a.positions for a in read(DATA / "lj7.extxyz", index=":")}
    starts = np.stack([minima["bipyramid"], minima["capped_octahedron"]])  # half in each
    temps = np.geomspace(temperature_k, t_max, n_temps)
    frames, acc = parallel_tempering(starts, chains, steps, temps, seed=seed)
    frames = frames[int(burn_fraction * len(frames)):]
    e_min, fmax = fire(frames.reshape(-1, 7, 3))
    rel = frames - frames.mean(-2, keepdims=True)
    inside = (np.sqrt((rel * rel).sum(-1)).max(-1) <= WALL).reshape(-1)
    label = np.full(len(e_min), -1)
    for code, name in enumerate(("pbp", "coh")):
        label[(np.abs(e_min / EPSILON - MINIMA_EPS[name]) < 0.01) & (fmax < 1e-2) & inside] = code
    label = label.reshape(frames.shape[:2])  # (F, chains)
    counts = np.stack([(label == 0).sum(0), (label == 1).sum(0)])  # (2, chains)
    rng = np.random.default_rng(seed)
    boot = counts[:, rng.integers(0, chains, (n_bootstrap, chains))].sum(-1)  # (2, n_boot)
    kt = units.kB * temperature_k
    value = -np.log(counts[1].sum() / counts[0].sum())
    error = float(np.std(-np.log(boot[1] / boot[0])))
    return {"delta_f_kt": float(value), "error_kt": error, "delta_f_ev": float(value * kt),
            "error_ev": error * kt, "temperature_k": temperature_k,
            "frames": int(label.size), "pbp": int(counts[0].sum()), "coh": int(counts[1].sum()),
            "neither": int((label == -1).sum()), "exchange_acceptance": acc,
            "chains": chains, "steps": steps, "temperatures_k": temps.round(2).tolist(),
            "seconds": time.perf_counter() - t0}


QUICK = {"chains": 32, "steps": 20000}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    print(json.dumps(reference(**(QUICK if args.quick else {}))))


if __name__ == "__main__":
    main()
