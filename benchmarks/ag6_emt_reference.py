"""Reference ΔF = F(bicapped_tetrahedron) − F(octahedron) of Ag6 on EMT at 300 K, by direct
counting: long Langevin MD of many replicas and the quench basin of every frame.

Independent of alflow's flows and estimators: EMT in torch (:mod:`alflow.emt`, equal to ASE's
calculator), BAOAB Langevin (:func:`alflow.sampling.langevin.run_langevin`), FIRE quench and
basin assignment (:class:`alflow.states.BasinStates`, as the flows benchmark defines the
states). Half the replicas start in each minimum; the first ``--burn`` of every trajectory is
dropped; frames reaching another minimum count for neither state.
ΔF = −kT ln(n_bicapped / n_octahedron), error by bootstrap over replicas (independent).
At 300 K the two basins interconvert within picoseconds, so plain MD equilibrates them.

    python benchmarks/ag6_emt_reference.py [--quick]     # last line: one JSON object
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from ase.io import read
from ase.units import kB

from alflow.emt import EMT
from alflow.sampling.langevin import run_langevin
from alflow.states import BasinStates

DATA = Path(__file__).resolve().parents[1] / "alflow" / "examples" / "data" / "ag6_emt.extxyz"
T_K = 300.0


def reference(replicas: int, steps: int, record_every: int, burn: float, seed: int) -> dict:
    frames = {a.info["state"]: a for a in read(DATA, ":")}
    names = ["octahedron", "bicapped_tetrahedron"]
    pot = EMT(frames[names[0]].numbers)
    states = BasinStates(pot, {s: frames[s].positions for s in names})
    starts = np.stack([states.minima[r % 2] for r in range(replicas)])
    t0 = time.perf_counter()
    tr = run_langevin(pot, starts, frames[names[0]].get_masses(), T_K, 5.0, steps,
                      friction_per_fs=0.01, record_every=record_every, seed=seed)
    pos = np.asarray(tr.positions)  # (frames, replicas, 6, 3)
    pos = pos[int(burn * len(pos)):]
    md_s = time.perf_counter() - t0
    lab = states.assign(pos.reshape(-1, 6, 3)).reshape(pos.shape[:2])  # (frames, replicas)
    counts = np.stack([(lab == k).sum(0) for k in range(2)], 1)  # (replicas, 2)

    def df(c: np.ndarray) -> float:
        n = c.sum(0)
        return float(-np.log(n[1] / n[0]))

    rng = np.random.default_rng(seed)
    boot = [df(counts[rng.integers(0, replicas, replicas)]) for _ in range(1000)]
    kt = kB * T_K
    value = df(counts)
    return {"delta_f_kt": value, "delta_f_err_kt": float(np.std(boot)),
            "delta_f_ev": value * kt, "delta_f_err_ev": float(np.std(boot)) * kt,
            "temperature_k": T_K, "frames": int(lab.size),
            "fraction": {s: float((lab == k).mean()) for k, s in enumerate(names)},
            "fraction_neither": float((lab == -1).mean()),
            "md_ps_per_replica": steps * 5.0 / 1000.0, "replicas": replicas,
            "md_seconds": round(md_s, 1), "seconds": round(time.perf_counter() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer, shorter trajectories")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--replicas", type=int, help="independent replicas (128; quick 32)")
    ap.add_argument("--steps", type=int, help="5 fs steps per replica (100000; quick 20000)")
    args = ap.parse_args()
    for name in ("replicas", "steps"):
        if getattr(args, name) is not None and getattr(args, name) < 2:
            ap.error(f"--{name} must be at least 2")
    torch.set_num_threads(1)
    out = reference(replicas=args.replicas or (32 if args.quick else 128),
                    steps=args.steps or (20000 if args.quick else 100000),
                    record_every=200, burn=0.1, seed=args.seed)
    out["quick"] = args.quick
    out["load_average"] = [round(x, 2) for x in os.getloadavg()]
    print(f"Ag6/EMT {T_K:.0f} K: ΔF = F(bicapped_tetrahedron) − F(octahedron) = "
          f"{out['delta_f_kt']:.3f} ± {out['delta_f_err_kt']:.3f} kT from {out['frames']} "
          f"frames ({out['fraction_neither']:.3f} in neither basin)", flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
