"""Reference ΔF = F(coh) − F(pbp) of the lj7 example on its oracle (plain Lennard-Jones), at
18 K, by direct counting: parallel-tempering Langevin MD and the quench basin of every frame.

Independent of alflow's flows, MLIPs and estimators (numpy only): chains of replicas at
geometrically spaced temperatures (18 K ... ``t_max``) exchange neighbouring configurations
(Metropolis on the energy difference, velocities rescaled); frames of the 18 K replica are
quenched (FIRE) and assigned to pbp or coh by the energy of the minimum they reach (the four
lj7 minima have distinct energies); frames outside the hard wall (8.5125 Å from the centre of
mass; a soft wall beyond it keeps the dynamics finite) count for neither.
ΔF = −kT ln(n_coh / n_pbp), error by bootstrap over chains (independent).

``--long FILE`` runs without end (256 chains per process; start several with different
``--seed``, e.g. under ``nice -n 19``), appending after every segment each chain's counts to
FILE, by the campaign's state definition (alflow.states.BasinStates: FIRE to 5e-4 eV/Å,
then the reference minimum whose sorted pair distances lie within an RMS of 0.05 Å; inside
the hard wall) and by the full quench (FIRE continued to 1e-6 eV/Å: the basin itself).
``--combine [FILE]`` pools them (the first 20,000 steps of every chain dropped) into ΔF with
its bootstrap error over chains; ``lj7_reference_18k.jsonl`` holds the shipped counts.

    python benchmarks/lj7_reference.py [--quick]     # last line: one JSON object
    python benchmarks/lj7_reference.py --long FILE --seed S
    python benchmarks/lj7_reference.py --combine [FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from ase import units

from alflow.sampling.tempering import exchange_neighbours

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
    fp = (24 * EPSILON * (2 * s6 * s6 - s6) / r2)[..., None] * d  # (..., pairs, 3)
    f = np.swapaxes(np.swapaxes(fp, -1, -2) @ _PAIR_TO_ATOM, -1, -2)  # 1.6x einsum's speed
    rel = x - x.mean(-2, keepdims=True)
    r = np.sqrt((rel * rel).sum(-1, keepdims=True))
    over = np.maximum(r - WALL, 0.0)
    e = e + 0.5 * k_wall * (over[..., 0] ** 2).sum(-1)
    fw = -k_wall * over * rel / np.maximum(r, 1e-12)
    return e, f + fw - fw.mean(-2, keepdims=True)


def fire(x: np.ndarray, fmax: float = 1e-3, steps: int = 3000
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batched FIRE quench (unit masses, the parameters of alflow's quench) of x (B, 7, 3) Å,
    each configuration until its largest atomic force is below ``fmax`` eV/Å: minimum
    energies (B,) eV, largest force (B,) eV/Å and minima (B, 7, 3) Å."""
    x = np.array(x, dtype=float)
    b = len(x)
    v = np.zeros_like(x)
    dt, alpha, n_up = np.full((b, 1, 1), 0.5), np.full((b, 1, 1), 0.1), np.zeros((b, 1, 1))
    idx = np.arange(b)
    for _ in range(steps):
        _, f = lj(x[idx])
        keep = np.sqrt((f * f).sum(-1)).max(-1) >= fmax
        idx, f = idx[keep], f[keep]
        if len(idx) == 0:
            break
        vi, dti, ai, ni = v[idx], dt[idx], alpha[idx], n_up[idx]
        p = (f * vi).sum((1, 2), keepdims=True)
        fn = np.sqrt((f * f).sum((1, 2), keepdims=True)) + 1e-300
        vi = (1 - ai) * vi + ai * f / fn * np.sqrt((vi * vi).sum((1, 2), keepdims=True))
        up = p > 0
        ni = np.where(up, ni + 1, 0)
        grow = up & (ni > 5)
        dti = np.where(grow, np.minimum(dti * 1.1, 5.0), np.where(up, dti, dti * 0.5))
        ai = np.where(grow, ai * 0.99, np.where(up, ai, 0.1))
        vi = np.where(up, vi, 0.0) + dti * f
        dx = dti * vi
        norm = np.sqrt((dx * dx).sum(-1, keepdims=True)).max(1, keepdims=True)
        x[idx] += dx * np.minimum(0.1 / np.maximum(norm, 1e-300), 1.0)
        v[idx], dt[idx], alpha[idx], n_up[idx] = vi, dti, ai, ni
    e, f = lj(x)
    return e, np.sqrt((f * f).sum(-1)).max(-1), x


def _pt_segments(starts: np.ndarray, chains: int, temps: np.ndarray, segment_steps: int,
                 record_every: int = 100, exchange_every: int = 20, dt_fs: float = 10.0,
                 friction_per_fs: float = 0.01, seed: int = 0):
    """BAOAB Langevin of ``chains`` x len(temps) replicas with neighbour exchanges, chain c
    starting from ``starts[c % len(starts)]`` (S, 7, 3) Å. Yields, every ``segment_steps``
    steps without end, the segment's frames of the temps[0] replica (F, chains, 7, 3) Å and
    the running exchange acceptance."""
    rng = np.random.default_rng(seed)
    k = len(temps)
    dt, gamma = dt_fs * units.fs, friction_per_fs / units.fs
    c1 = np.exp(-gamma * dt)
    c2 = np.sqrt(1 - c1 * c1)
    sig = np.sqrt(units.kB * np.asarray(temps) / MASS)[None, :, None, None]
    starts = starts - starts.mean(-2, keepdims=True)
    x = np.repeat(starts[np.arange(chains) % len(starts)][:, None], k, 1)
    v = rng.normal(size=x.shape) * sig
    e, f = lj(x)
    acc: list[float] = []
    s = 0
    while True:
        frames = []
        for _ in range(segment_steps):
            v += 0.5 * dt * f / MASS
            x += 0.5 * dt * v
            v = c1 * v + c2 * sig * rng.normal(size=x.shape)
            x += 0.5 * dt * v
            e, f = lj(x)
            v += 0.5 * dt * f / MASS
            if (s + 1) % exchange_every == 0:
                swaps = exchange_neighbours(e, temps, s // exchange_every, rng, (x, f), v)
                acc += [float(ok.mean()) for _, ok in swaps]
            if (s + 1) % record_every == 0:
                frames.append(x[:, 0].copy())
            s += 1
        yield np.array(frames), float(np.mean(acc)) if acc else float("nan")


def parallel_tempering(starts: np.ndarray, chains: int, steps: int, temps: np.ndarray,
                       record_every: int = 100, exchange_every: int = 20, dt_fs: float = 10.0,
                       friction_per_fs: float = 0.01, seed: int = 0) -> tuple[np.ndarray, float]:
    """:func:`_pt_segments` for ``steps`` steps: frames of the temps[0] replica
    (F, chains, 7, 3) Å and the exchange acceptance."""
    return next(_pt_segments(starts, chains, temps, steps, record_every, exchange_every, dt_fs,
                             friction_per_fs, seed))


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
    e_min, fmax, _ = fire(frames.reshape(-1, 7, 3))
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


def _fingerprints(x: np.ndarray) -> np.ndarray:
    """Sorted pair distances (..., 21) Å of lj7 clusters (..., 7, 3) Å."""
    d = x[..., _I, :] - x[..., _J, :]
    return np.sort(np.sqrt((d * d).sum(-1)), -1)


def basin_labels(frames: np.ndarray, reference_minima: np.ndarray, fmax: float = 5e-4,
                 tolerance: float = 0.05, fmax_full: float = 1e-6
                 ) -> tuple[np.ndarray, np.ndarray]:
    """State index (B,) of frames (B, 7, 3) Å, -1 for none, by the campaign's definition
    (alflow.states.BasinStates): FIRE until the largest force is below ``fmax`` eV/Å, then
    the reference minimum (S, 7, 3) whose sorted pair distances lie within an RMS of
    ``tolerance`` Å; frames outside the hard wall (``WALL`` Å from the centroid) and quenches
    that do not converge belong to none. Second output: the same with the quench continued
    to ``fmax_full`` (the basin itself, for checking the campaign's stopping criterion)."""
    rel = frames - frames.mean(-2, keepdims=True)
    inside = np.sqrt((rel * rel).sum(-1)).max(-1) <= WALL
    ref = _fingerprints(reference_minima)
    out = []
    x = frames
    for tol_f in (fmax, fmax_full):
        _, f, x = fire(x, fmax=tol_f, steps=5000)
        d = np.sqrt(((_fingerprints(x)[:, None] - ref[None]) ** 2).mean(-1))  # (B, S)
        best = d.argmin(1)
        ok = (d[np.arange(len(d)), best] < tolerance) & (f < tol_f) & inside
        out.append(np.where(ok, best, -1))
    return out[0], out[1]


def long_run(out: Path, seed: int, chains: int = 256, segment_steps: int = 10000,
             segments: int = 1000, t_max: float = 40.0, n_temps: int = 6,
             temperature_k: float = 18.0) -> None:
    """Parallel tempering without end (``segments`` of ``segment_steps``): after every
    segment, the campaign-definition basin counts of each chain's 18 K frames are appended
    to ``out`` as one JSON line (raw figures for :func:`combine`)."""
    from ase.io import read

    from alflow.examples import DATA

    minima = {a.info.get("state"): a.positions for a in read(DATA / "lj7.extxyz", index=":")}
    starts = np.stack([minima["bipyramid"], minima["capped_octahedron"]])
    _, _, ref = fire(starts, fmax=5e-5, steps=20000)
    temps = np.geomspace(temperature_k, t_max, n_temps)
    t0 = time.perf_counter()
    pt = _pt_segments(starts, chains, temps, segment_steps, seed=seed)
    for k in range(segments):
        frames, acc = next(pt)  # (F, chains, 7, 3)
        lab, lab_full = (a.reshape(frames.shape[:2])
                         for a in basin_labels(frames.reshape(-1, 7, 3), ref))
        row = {"seed": seed, "segment": k, "segment_steps": segment_steps, "chains": chains,
               "temperatures_k": temps.round(3).tolist(), "exchange_acceptance": acc,
               "frames_per_chain": len(frames),
               "pbp": (lab == 0).sum(0).tolist(), "coh": (lab == 1).sum(0).tolist(),
               "pbp_full": (lab_full == 0).sum(0).tolist(),
               "coh_full": (lab_full == 1).sum(0).tolist(),
               "neither": int((lab == -1).sum()), "seconds": time.perf_counter() - t0,
               "load_1min": os.getloadavg()[0]}
        with open(out, "a") as fh:
            fh.write(json.dumps(row) + "\n")


def combine(path: Path, burn_steps: int = 20000, n_bootstrap: int = 2000,
            temperature_k: float = 18.0) -> dict:
    """ΔF = F(coh) − F(pbp) (kT) from the raw lines of :func:`long_run` in ``path``: basin
    counts of the full quench (the basin itself) summed per chain over its segments after
    its first ``burn_steps`` steps, chains of every seed pooled (independent), error by
    bootstrap over chains; the same for the quench stopped at 5e-4 eV/Å, and ΔF of the
    first and second half of each chain's segments (a drift check)."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    by_seed: dict[int, list[dict]] = {}
    for r in rows:
        if r["segment"] * r["segment_steps"] >= burn_steps:
            by_seed.setdefault(r["seed"], []).append(r)
    if not by_seed:
        raise ValueError(f"{path}: no segment after the first {burn_steps} steps of a seed")

    def counts(keys: tuple[str, str], half: int | None = None) -> np.ndarray:
        per = []
        for rs in by_seed.values():
            rs = sorted(rs, key=lambda r: r["segment"])
            if half is not None:
                rs = rs[:len(rs) // 2] if half == 0 else rs[len(rs) // 2:]
            if rs:
                per.append(np.array([[r[k] for r in rs] for k in keys]).sum(1))  # (2, chains)
        if not per:
            return np.full((2, 1), np.nan)  # no segment in this half: no figure
        return np.concatenate(per, 1)

    rng = np.random.default_rng(0)

    def delta_f(c: np.ndarray) -> tuple[float, float]:
        boot = c[:, rng.integers(0, c.shape[1], (n_bootstrap, c.shape[1]))].sum(-1)
        with np.errstate(invalid="ignore"):
            return (float(-np.log(c[1].sum() / c[0].sum())),
                    float(np.std(-np.log(boot[1] / boot[0]))))

    c = counts(("pbp_full", "coh_full"))
    value, error = delta_f(c)
    stopped, stopped_err = delta_f(counts(("pbp", "coh")))
    first, _ = delta_f(counts(("pbp_full", "coh_full"), 0))
    second, _ = delta_f(counts(("pbp_full", "coh_full"), 1))
    kt = units.kB * temperature_k
    steps = {s: len(rs) * rs[0]["segment_steps"] for s, rs in by_seed.items()}
    return {"delta_f_kt": value, "error_kt": error, "delta_f_ev": value * kt,
            "error_ev": error * kt, "temperature_k": temperature_k,
            "delta_f_fmax_5e-4_kt": stopped, "error_fmax_5e-4_kt": stopped_err,
            "delta_f_first_half_kt": first, "delta_f_second_half_kt": second,
            "pbp": int(c[0].sum()), "coh": int(c[1].sum()), "chains": int(c.shape[1]),
            "seeds": sorted(by_seed), "steps_after_burn_per_seed": steps,
            "burn_steps": burn_steps,
            "temperatures_k": rows[0]["temperatures_k"],
            "wall_seconds_per_seed": {s: max(r["seconds"] for r in rows if r["seed"] == s)
                                      for s in by_seed}}


QUICK = {"chains": 32, "steps": 20000}
LONG = Path(__file__).resolve().parent / "lj7_reference_18k.jsonl"
SINGLE = Path(__file__).resolve().parent / "lj7_reference.json"


def best_reference(definition: str = "full") -> dict:
    """The most precise lj7 reference on file, its fields plus ``source`` and ``definition``.

    ``definition="full"``: the basin of the full quench — the single run's JSON line
    (``lj7_reference.json``) or the pooled long runs (``lj7_reference_18k.jsonl``), whichever
    has the smaller error. ``"campaign"``: the campaign's own state definition
    (alflow.states.BasinStates: FIRE stopped at 5e-4 eV/Å, matched within 0.05 Å RMS), which
    only the long runs count; on lj7 at 18 K it drops about 1.6 % of coh's frames (quenches
    that stop on coh's soft mode farther than 0.05 Å from its minimum), ΔF +0.016 kT."""
    if definition not in ("full", "campaign"):
        raise ValueError(f"definition: expected 'full' or 'campaign', got {definition!r}")
    if definition == "campaign":
        long = combine(LONG)
        kt = units.kB * long["temperature_k"]
        return dict(long, delta_f_kt=long["delta_f_fmax_5e-4_kt"],
                    error_kt=long["error_fmax_5e-4_kt"],
                    delta_f_ev=long["delta_f_fmax_5e-4_kt"] * kt,
                    error_ev=long["error_fmax_5e-4_kt"] * kt, definition="campaign",
                    source=f"{LONG.name} ({long['chains']} chains, quench stopped at "
                           "5e-4 eV/Å)")
    ref = dict(json.loads(SINGLE.read_text().strip().splitlines()[-1]), source=SINGLE.name)
    if LONG.exists():
        long = combine(LONG)
        if long["error_kt"] < ref["error_kt"]:
            ref = dict(long, source=f"{LONG.name} ({long['chains']} chains, "
                                    f"{long['pbp'] + long['coh']} frames)")
    return dict(ref, definition="full")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--long", type=Path, metavar="FILE",
                    help="run without end, appending each segment's raw counts to FILE")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--chains", type=int, default=256)
    ap.add_argument("--segment-steps", type=int, default=10000)
    ap.add_argument("--combine", type=Path, metavar="FILE", nargs="?", const=LONG,
                    help=f"ΔF from the raw counts of --long runs (default {LONG.name})")
    args = ap.parse_args()
    if args.long:
        long_run(args.long, args.seed, args.chains, args.segment_steps)
    elif args.combine:
        print(json.dumps(combine(args.combine)))
    else:
        print(json.dumps(reference(**(QUICK if args.quick else {}))))


if __name__ == "__main__":
    main()
