"""Benchmark of GFN-xTB labels: milliseconds per Ag6 energy + forces through alflow and bare.

    python benchmarks/xtb_labels.py [--quick]      # last line: one JSON object

For GFN1-xTB and GFN2-xTB, on ``--n`` distinct rattled Ag6 structures (0.1 Å; the GFN1-xTB
triangle and pyramid of the ag6-xtb example), one thread: ``ms_per_label`` (an alflow label:
geometry checks, a fresh tblite calculator, the retry ladder's first rung, provenance), ``ms_bare``
(a fresh ``tblite.ase.TBLite`` on the same structures) and their difference
``overhead_ms``; every label's status. ``--quick``: 10 structures instead of 100.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
from ase.io import read

from alflow.examples import DATA


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10 structures")
    ap.add_argument("--n", type=int, default=None)
    args = ap.parse_args()
    from tblite.ase import TBLite
    from threadpoolctl import threadpool_limits

    from alflow.labelling import make_labeller

    threadpool_limits(1)
    n = args.n or (10 if args.quick else 100)
    minima = read(DATA / "ag6_xtb.extxyz", ":")
    rng = np.random.default_rng(0)
    frames = []
    for i in range(n):
        a = minima[i % len(minima)].copy()
        a.info = {}
        a.positions += rng.normal(0, 0.1, a.positions.shape)
        frames.append(a)
    fig: dict = {"benchmark": "xtb_labels", "quick": args.quick, "structures": n,
                 "system": "Ag6", "load_avg_1min": os.getloadavg()[0]}
    for short, name in (("gfn1", "GFN1-xTB"), ("gfn2", "GFN2-xTB")):
        lab = make_labeller(f"xtb:{short}", threads=1)
        lab.label(frames[0])  # warm-up: imports, parameters
        t0 = time.perf_counter()
        res = [lab.label(a) for a in frames]
        t_lab = (time.perf_counter() - t0) / n
        t0 = time.perf_counter()
        for a in frames:
            b = a.copy()
            b.calc = TBLite(method=name, verbosity=0)
            b.get_forces()
        t_bare = (time.perf_counter() - t0) / n
        fig[short] = {"ms_per_label": round(1e3 * t_lab, 2), "ms_bare": round(1e3 * t_bare, 2),
                      "overhead_ms": round(1e3 * (t_lab - t_bare), 2),
                      "ok": sum(r.status == "ok" for r in res),
                      "first_rung": sum(r.provenance.get("scf_strategy") == "scf" for r in res)}
        print(f"Ag6 {name}: alflow label {1e3 * t_lab:.1f} ms, bare tblite {1e3 * t_bare:.1f} ms"
              f" ({fig[short]['ok']}/{n} ok)", flush=True)
    fig["load_avg_1min_end"] = os.getloadavg()[0]
    print(json.dumps(fig))


if __name__ == "__main__":
    main()
