"""Reference ΔF = F(3d) − F(planar) of Ag6 on GFN1-xTB at 300 K, by direct counting on the
oracle itself: parallel-tempering Langevin MD and the class of the minimum every 300 K frame
quenches to.

Independent of alflow's MLIPs, flows and estimators (tblite and numpy only): ``chains``
independent chains of replicas at geometrically spaced temperatures (300 K ... ``t_max``)
exchange neighbouring configurations (Metropolis on the energy difference, velocities
rescaled); BAOAB Langevin, 5 fs, friction 0.01/fs, every force a GFN1-xTB calculation (one
tblite calculator per replica, restarted from its previous density). Frames of the 300 K
replica are quenched on GFN1-xTB (FIRE to 5e-3 eV/Å) and assigned as the ag6-xtb example
defines its states: ``planar`` if the minimum's planarity (RMS distance of the atoms from
their best-fit plane) is below 0.1 Å, ``3d`` otherwise; frames beyond the hard wall (8 Å from
the centre of mass; a soft wall beyond it keeps the dynamics finite) or whose quench does not
converge count for neither. ΔF = −kT ln(n_3d / n_planar), error by bootstrap over chains.
Also printed: each distinct minimum reached (energy eV, planarity Å, 300 K population), the
exchange acceptance, GFN1-xTB calls and their mean cost.

    python benchmarks/ag6_xtb_reference.py [--quick] [--chains N --steps N]  # last line: JSON
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
        return e + 0.5 * self.k_wall * float((over**2).sum()), f + fw - fw.mean(0)


def planarity(x: np.ndarray) -> float:
    """RMS distance of the atoms from their best-fit plane, Å."""
    d = x - x.mean(0)
    return float(np.sqrt(max(np.linalg.eigvalsh(d.T @ d / len(x))[0], 0.0)))


def quench(oracle: Oracle, x: np.ndarray, fmax: float = 5e-3, steps: int = 600
           ) -> tuple[np.ndarray, float, bool]:
    """FIRE (unit masses) of x (N, 3) Å on GFN1-xTB: minimum, its energy eV, converged."""
    x = x.copy()
    v = np.zeros_like(x)
    dt, alpha, n_up = 0.5, 0.1, 0
    for _ in range(steps):
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
    beta = 1.0 / (units.kB * np.asarray(temps))
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
        v += 0.5 * dt * f / mass
        x += 0.5 * dt * v
        v = c1 * v + c2 * sig * rng.normal(size=x.shape)
        x += 0.5 * dt * v
        forces()
        v += 0.5 * dt * f / mass
        if (s + 1) % exchange_every == 0:
            for i in range((s // exchange_every) % 2, k - 1, 2):
                ok = np.log(rng.random(chains)) < (beta[i] - beta[i + 1]) * (e[:, i]
                                                                              - e[:, i + 1])
                acc.append(ok.mean())
                r = np.sqrt(temps[i] / temps[i + 1])
                for arr, scale in ((x, 1.0), (f, 1.0), (e, 1.0), (v, r)):
                    a, b = arr[ok, i].copy(), arr[ok, i + 1].copy()
                    arr[ok, i], arr[ok, i + 1] = b * scale, a / scale
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
    q = Oracle(numbers, frames[0, 0])
    label = np.full(frames.shape[:2], -1)
    minima: list[dict] = []
    for idx in np.ndindex(*frames.shape[:2]):
        x = frames[idx]
        if np.linalg.norm(x - x.mean(0), axis=-1).max() > WALL:
            continue
        m, em, ok = quench(q, x)
        if not ok:
            continue
        p = planarity(m)
        label[idx] = 0 if p < PLANAR else 1
        d = np.sort(np.linalg.norm(m[:, None] - m[None], axis=-1)[np.triu_indices(len(m), 1)])
        for mm in minima:
            if abs(mm["energy_ev"] - em) < 2e-3 and np.sqrt(((mm["_d"] - d) ** 2).mean()) < 0.05:
                mm["frames"] += 1
                break
        else:
            minima.append({"energy_ev": round(em, 4), "planarity_a": round(p, 3),
                           "frames": 1, "_d": d})
    counts = np.stack([(label == 0).sum(0), (label == 1).sum(0)])  # (2, chains)
    rng = np.random.default_rng(seed)
    boot = counts[:, rng.integers(0, chains, (n_bootstrap, chains))].sum(-1)
    kt = units.kB * T_K
    with np.errstate(divide="ignore", invalid="ignore"):
        value = float(-np.log(counts[1].sum() / counts[0].sum()))
        error = float(np.std(-np.log(boot[1] / boot[0])))
    total = int((label >= 0).sum())
    for mm in minima:
        mm.pop("_d")
        mm["population"] = round(mm["frames"] / max(total, 1), 4)
        mm["state"] = "planar" if mm["planarity_a"] < PLANAR else "3d"
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


def _num(v: float) -> float | None:
    """None for a figure without a value: ΔF when a state was never seen, its error when a
    bootstrap resample sees only one state (too few chains)."""
    return float(v) if np.isfinite(v) else None


QUICK = {"chains": 2, "steps": 200, "record_every": 20}
FULL = {"chains": 8, "steps": 20000, "record_every": 40}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 chains x 1 ps (figures only)")
    ap.add_argument("--chains", type=int)
    ap.add_argument("--steps", type=int)
    ap.add_argument("--t-max", type=float, default=900.0)
    ap.add_argument("--temps", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    cfg = dict(QUICK if args.quick else FULL)
    cfg.update({k: v for k, v in (("chains", args.chains), ("steps", args.steps)) if v})
    load0 = os.getloadavg()[0]
    out = reference(**cfg, t_max=args.t_max, n_temps=args.temps, seed=args.seed)
    out["quick"] = args.quick
    out["load_average"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
    for m in out["minima"]:
        print(f"  minimum {m['energy_ev']:.4f} eV  planarity {m['planarity_a']:.3f} Å  "
              f"{m['state']:6s}  300 K population {m['population']:.3f}")
    print(f"Ag6/GFN1-xTB {T_K:.0f} K: ΔF = F(3d) − F(planar) = {out['delta_f_kt']} ± "
          f"{out['error_kt']} kT ({out['planar']} planar, {out['3d']} 3d, "
          f"{out['neither']} neither; exchange acceptance {out['exchange_acceptance']:.2f}; "
          f"{out['oracle_calls']} GFN1-xTB calls, {out['ms_per_call']} ms each, "
          f"{out['seconds']} s)", flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
