"""Benchmark of Einstein-crystal integration: ΔG = G(hcp) − G(fcc) per atom of Lennard-Jones
crystals (reduced units: ε, σ, m = 1, T* = k_BT/ε, P* = Pσ³/ε; pair potential truncated and
shifted at r_c = 2.5 σ) by Frenkel–Ladd integration (alflow.solids.einstein.delta_g).

    python benchmarks/solids_ti.py [--quick] [--n-atoms N] [--kt T] [--pressure P]

--quick: 32 atoms, T* = 0.3, P* = 0, 600 steps × 2 copies per λ node (error ~4e-3 ε).
Without it: the same state point at 32 and 108 atoms, 2000 steps × 4 copies. Then EMT copper
(32 atoms, 300 K, P = 0) the same way unless --no-cu. Other scripts import :func:`ti_figures`
(``ti_delta_g_per_atom``, ``ti_err`` in ε) rather than parse the output. Figures depend on
the machine load (shared machine): the load average is printed with them.

Ends with one JSON line: {"lj_fcc_hcp": {"n_atoms", "kt", "pressure", "cutoff",
"ti_delta_g_per_atom", "ti_err", "harmonic_delta_g_per_atom" (the harmonic crystals at the
same volumes: the anharmonic part is the difference), "g_fcc", "g_hcp", "volume_per_atom_fcc",
...}, "cu_emt_fcc_hcp": {... "units": "eV"}, "load_average", ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from alflow.solids.einstein import delta_g, harmonic_gibbs  # noqa: E402
from alflow.solids.models import emt_model, lj_model  # noqa: E402


def ti_figures(n_atoms: int = 32, kt: float = 0.3, pressure: float = 0.0, cutoff: float = 2.5,
               quick: bool = True, seed: int = 0) -> dict:
    """ΔG(hcp − fcc) per atom (ε) ± ti_err of LJ crystals and the per-phase parts."""
    t0 = time.time()
    r = delta_g(n_atoms, kt, pressure, cutoff, quick=quick, seed=seed)
    harm = {p.structure: harmonic_gibbs(lj_model(cutoff), p.structure, n_atoms,
                                        p.volume_per_atom, kt, pressure) for p in (r.fcc, r.hcp)}
    return {"n_atoms": n_atoms, "kt": kt, "pressure": pressure, "cutoff": cutoff,
            "units": "epsilon", "ti_delta_g_per_atom": round(r.delta_g_per_atom, 6),
            "ti_err": round(r.err, 6),
            "harmonic_delta_g_per_atom": round(harm["hcp"] - harm["fcc"], 6),
            "g_fcc": round(r.fcc.g_per_atom, 6),
            "g_fcc_err": round(r.fcc.err, 6), "g_hcp": round(r.hcp.g_per_atom, 6),
            "g_hcp_err": round(r.hcp.err, 6),
            "volume_per_atom_fcc": round(r.fcc.volume_per_atom, 5),
            "volume_per_atom_hcp": round(r.hcp.volume_per_atom, 5),
            "lattice_energy_per_atom_fcc": round(r.fcc.ti.lattice_energy_per_atom, 6),
            "lattice_energy_per_atom_hcp": round(r.hcp.ti.lattice_energy_per_atom, 6),
            "seconds": round(time.time() - t0, 1)}


def cu_figures(n_atoms: int = 32, temperature_k: float = 300.0, quick: bool = True,
               seed: int = 0) -> dict:
    """ΔG(hcp − fcc) per atom (eV) ± ti_err of EMT copper at P = 0."""
    from ase import units

    t0 = time.time()
    r = delta_g(n_atoms, units.kB * temperature_k, 0.0, quick=quick, seed=seed,
                model=emt_model("Cu"))
    return {"n_atoms": n_atoms, "temperature_k": temperature_k, "pressure": 0.0,
            "units": "eV", "ti_delta_g_per_atom": round(r.delta_g_per_atom, 7),
            "ti_err": round(r.err, 7), "g_fcc": round(r.fcc.g_per_atom, 7),
            "g_hcp": round(r.hcp.g_per_atom, 7),
            "volume_per_atom_fcc": round(r.fcc.volume_per_atom, 5),
            "volume_per_atom_hcp": round(r.hcp.volume_per_atom, 5),
            "lattice_energy_per_atom_fcc": round(r.fcc.ti.lattice_energy_per_atom, 7),
            "lattice_energy_per_atom_hcp": round(r.hcp.ti.lattice_energy_per_atom, 7),
            "seconds": round(time.time() - t0, 1)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--n-atoms", type=int, nargs="*", default=None)
    ap.add_argument("--kt", type=float, default=0.3)
    ap.add_argument("--pressure", type=float, default=0.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-cu", action="store_true", help="skip EMT copper")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    sizes = args.n_atoms or ([32] if args.quick else [32, 108])
    load0 = os.getloadavg()[0]
    out = {}
    for n in sizes:
        fig = ti_figures(n, args.kt, args.pressure, quick=args.quick)
        print(f"N={n}: ΔG(hcp−fcc) = {fig['ti_delta_g_per_atom']:+.4f} ± {fig['ti_err']:.4f} ε"
              f"/atom  ({fig['seconds']} s)", file=sys.stderr)
        out[f"n{n}"] = fig
    result = {"lj_fcc_hcp": out[f"n{sizes[-1]}"], "by_size": out, "quick": args.quick}
    if not args.no_cu:
        cu = cu_figures(32, quick=args.quick)
        print(f"Cu EMT N=32, 300 K: ΔG(hcp−fcc) = {cu['ti_delta_g_per_atom'] * 1e3:+.2f} ± "
              f"{cu['ti_err'] * 1e3:.2f} meV/atom ({cu['seconds']} s)", file=sys.stderr)
        result["cu_emt_fcc_hcp"] = cu
    result |= {"load_average": [round(load0, 2), round(os.getloadavg()[0], 2)],
               "cpu_count": os.cpu_count()}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
