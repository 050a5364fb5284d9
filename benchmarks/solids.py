"""Gibbs free energies of fcc and hcp crystals from NPT flows (alflow.solids.flows).

For each phase and cell size: the flow over lattice-site displacements and the full
lower-triangular cell is whitened by the Laplace approximation of the NPT target (the harmonic
crystal with its quasi-harmonic cell), trained by reverse KL on the enthalpy U + PV in chunks
of 100 steps (the ESS of 2000 flow samples after each: ESS against steps and CPU seconds), and
G is estimated by importance sampling (bootstrap error). ΔG = G(hcp) − G(fcc) per atom.
``--layers`` sets the coupling layers on the whitened coordinates, ``--local-layers`` adds
neighbour-aware coupling layers on the lattice displacements (alflow.solids.local_flow; the
JSON's ``flow`` records the architecture). Torch
runs one thread (two threads on a shared 2-core machine spin and run several times slower);
times are CPU seconds of this process, so they hold under load.

Systems and state points (classical, configurational; see alflow.solids.flows):
- Lennard-Jones in reduced units (ε = 1 eV, σ = 1 Å numerically; T* = kT/ε, P* = Pσ³/ε),
  truncated at 2.5σ and shifted to zero there, T* = 0.3, P* = 0 (the state point and
  potential of the Einstein-crystal TI, benchmarks/solids_ti.py);
- copper on ASE's EMT, T = 300 K, P = 0.

The Einstein-crystal thermodynamic integration of the same crystals (``ti_delta_g_per_atom``,
``ti_err``) is :func:`alflow.solids.einstein.delta_g` at the same state point and N (its
quick runs under ``--quick``); with ``--no-ti`` the fields are null and the reason printed.
Prints one line per phase and size, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import time

import numpy as np
import torch
from ase.build import bulk
from ase.units import kB

from alflow.flows import FlowConfig, train_flow
from alflow.solids.crystal_energy import CrystalEMT, CrystalLennardJones
from alflow.solids.flows import CrystalFlow, Enthalpy, crystal_free_energy
from alflow.solids.local_flow import LocalFlowConfig

LJ = {"kt": 0.3, "p": 0.0, "rho": 1.09, "cutoff": 2.5, "units": "epsilon"}
CU = {"t": 300.0, "p": 0.0, "a": 3.59, "units": "eV"}
REPEATS = {32: ((2, 2, 2), (2, 2, 2)), 108: ((3, 3, 3), (3, 3, 3)),
           256: ((4, 4, 4), (4, 4, 4))}  # fcc cubic cell; hcp orthorhombic cell (4 atoms)


def crystal(symbol: str, phase: str, a_fcc: float, n: int):
    """fcc (cubic cell) or ideal hcp (orthorhombic cell) of about n atoms, nearest-neighbour
    distance a_fcc/√2."""
    rep_fcc, rep_hcp = REPEATS[n]
    if phase == "fcc":
        return bulk(symbol, "fcc", a=a_fcc, cubic=True).repeat(rep_fcc)
    a = a_fcc / math.sqrt(2)
    at = bulk(symbol, "hcp", a=a, c=a * math.sqrt(8 / 3), orthorhombic=True)
    return at.repeat(rep_hcp)


def run_phase(system: str, phase: str, n: int, steps: int, n_samples: int, batch: int,
              seed: int, arch: dict, chunk: int = 100) -> dict:
    if system == "lj":
        at = crystal("Ar", phase, (4 / LJ["rho"]) ** (1 / 3), n)
        pot = CrystalLennardJones(at.numbers, at.positions, at.cell[:], 1.0, 1.0,
                                  LJ["cutoff"], shift=True)
        t, p = LJ["kt"] / kB, LJ["p"]
    else:
        at = crystal("Cu", phase, CU["a"], n)
        pot = CrystalEMT(at.numbers, at.positions, at.cell[:])
        t, p = CU["t"], CU["p"]
    target = Enthalpy(pot, p)
    t0 = time.process_time()
    cf = CrystalFlow.build(at.positions, at.cell[:], target, t, box="triangular",
                           cfg=FlowConfig(layers=arch["layers"], hidden=64, seed=seed),
                           local=LocalFlowConfig(layers=arch["local"], hidden=arch["hidden"],
                                                 seed=seed))
    build_s = time.process_time() - t0
    harmonic = crystal_free_energy(cf, target, t, n=min(n_samples, 2000), seed=seed + 1)
    trace = [(0, 0.0, harmonic.total.ess_fraction)]
    train_s, done = 0.0, 0
    while done < steps:
        k = min(chunk, steps - done)
        t1 = time.process_time()
        train_flow(cf, potential=target, temperature_k=t,
                   config=dict(forward_weight=0.0, steps=k, reverse_batch=batch, lr=arch["lr"],
                               lr_final=arch["lr"] * 0.3, seed=seed + done))
        train_s += time.process_time() - t1
        done += k
        if done < steps:
            e = crystal_free_energy(cf, target, t, n=2000, seed=seed + 3 + done)
            trace.append((done, round(train_s, 1), e.total.ess_fraction))
    fe = crystal_free_energy(cf, target, t, n=n_samples, seed=seed + 2)
    trace.append((done, round(train_s, 1), fe.total.ess_fraction))
    kt = kB * t
    out = {"n_atoms": len(at), "g_per_atom": fe.per_atom, "err": fe.err_per_atom,
           "ess_fraction": fe.total.ess_fraction, "pareto_k": fe.total.extra["pareto_k"],
           "harmonic_g_per_atom": harmonic.per_atom,
           "harmonic_ess_fraction": harmonic.total.ess_fraction,
           "volume_per_atom": fe.total.extra["mean_volume"] / len(at),
           "train_cpu_seconds": train_s, "build_cpu_seconds": build_s, "steps": steps,
           "ess_trace": trace, "kt": kt}
    print(f"{system} {phase} N={len(at)}: G/N = {fe.per_atom:.5f} ± {fe.err_per_atom:.5f}, "
          f"ESS {fe.total.ess_fraction:.3f} (harmonic start {harmonic.total.ess_fraction:.3f}),"
          f" k̂ {fe.total.extra['pareto_k']:.2f}, V/N {out['volume_per_atom']:.4f}, build "
          f"{build_s:.0f} s, training {train_s:.0f} s ({steps} steps) CPU; ESS by (steps, "
          f"CPU s): {trace}", flush=True)
    return out


def einstein_ti(system: str, n: int, quick: bool) -> tuple[float | None, float | None, str]:
    """ΔG(hcp − fcc) per atom and its error from the Einstein-crystal TI of alflow.solids
    (Frenkel–Ladd at the same potential, state point and N), where it exists."""
    try:
        from alflow.solids.einstein import delta_g
        from alflow.solids.models import emt_model
    except ImportError as err:
        return None, None, f"alflow.solids.einstein (Einstein-crystal TI) not available: {err}"
    if system == "lj":
        r = delta_g(n, LJ["kt"], LJ["p"], LJ["cutoff"], quick=quick)
    else:
        r = delta_g(n, kB * CU["t"], CU["p"], quick=quick, model=emt_model("Cu"))
    return float(r.delta_g_per_atom), float(r.err), ""


def delta(system: str, n: int, steps: int, n_samples: int, batch: int, seed: int,
          quick: bool, no_ti: bool, arch: dict) -> dict:
    res = {ph: run_phase(system, ph, n, steps, n_samples, batch, seed, arch)
           for ph in ("fcc", "hcp")}
    dg = res["hcp"]["g_per_atom"] - res["fcc"]["g_per_atom"]
    err = math.hypot(res["hcp"]["err"], res["fcc"]["err"])
    ti, ti_err, why = (None, None, "--no-ti") if no_ti else einstein_ti(system, n, quick)
    if ti is None:
        print(f"{system}: ti_delta_g_per_atom null: {why}")
    else:
        print(f"{system} N={n}: Einstein-crystal TI ΔG/N = {ti:.5f} ± {ti_err:.5f}; flows − TI "
              f"= {(dg - ti) / math.hypot(err, ti_err):.2f} σ")
    units = LJ["units"] if system == "lj" else CU["units"]
    print(f"{system} N={n}: ΔG(hcp − fcc)/N = {dg:.5f} ± {err:.5f} {units}")
    return {"n_atoms": n, "delta_g_per_atom": dg, "err": err, "ti_delta_g_per_atom": ti,
            "ti_err": ti_err, "units": units,
            "ess_fraction": {ph: res[ph]["ess_fraction"] for ph in res},
            "harmonic_ess_fraction": {ph: res[ph]["harmonic_ess_fraction"] for ph in res},
            "g_per_atom": {ph: [res[ph]["g_per_atom"], res[ph]["err"]] for ph in res},
            "volume_per_atom": {ph: res[ph]["volume_per_atom"] for ph in res},
            "pareto_k": {ph: res[ph]["pareto_k"] for ph in res},
            "train_cpu_seconds": {ph: res[ph]["train_cpu_seconds"] for ph in res},
            "build_cpu_seconds": {ph: res[ph]["build_cpu_seconds"] for ph in res},
            "ess_trace": {ph: res[ph]["ess_trace"] for ph in res}, "steps": steps}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="32 atoms, short training (< 2 min)")
    ap.add_argument("--sizes", default="32", help="comma-separated cell sizes (32, 108, 256)")
    ap.add_argument("--steps", type=int, default=600, help="reverse-KL steps per flow")
    ap.add_argument("--samples", type=int, default=6000, help="flow samples per estimate")
    ap.add_argument("--batch", type=int, default=128, help="reverse-KL batch")
    ap.add_argument("--systems", default="lj,cu", help="lj, cu or both")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--layers", type=int, default=6, help="coupling layers on the whitened "
                    "coordinates (alflow.solids.cell_flow)")
    ap.add_argument("--local-layers", type=int, default=0, help="neighbour-aware coupling "
                    "layers on the lattice displacements (alflow.solids.local_flow; 0: none)")
    ap.add_argument("--local-hidden", type=int, default=32, help="their MLP width")
    ap.add_argument("--lr", type=float, default=1e-3, help="reverse-KL learning rate "
                    "(cosine cycles of --chunk steps down to 0.3 times it)")
    ap.add_argument("--no-ti", action="store_true", help="skip the Einstein-crystal TI "
                    "(benchmarks/solids_ti.py gives it); its fields are then null")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if any(s not in REPEATS for s in sizes):
        raise SystemExit(f"--sizes: expected some of {sorted(REPEATS)}, got {args.sizes}")
    steps, n_samples = (20, 2000) if args.quick else (args.steps, args.samples)
    torch.set_num_threads(1)
    c0 = time.process_time()
    if args.quick:
        sizes = [32]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=os.path.dirname(__file__)).stdout.strip()
    load = os.getloadavg()[0]
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch threads "
          f"{torch.get_num_threads()}, load {load:.1f}, commit {commit}")
    arch = {"layers": args.layers, "local": args.local_layers, "hidden": args.local_hidden,
            "lr": args.lr}
    out: dict = {"flow": arch}
    names = {"lj": "lj_fcc_hcp", "cu": "cu_emt_fcc_hcp"}
    for system in args.systems.split(","):
        if system not in names:
            raise SystemExit(f"--systems: expected lj and/or cu, got {system!r}")
        by_size = [delta(system, n, steps, n_samples, args.batch, args.seed, args.quick,
                         args.no_ti, arch)
                   for n in sizes]
        out[names[system]] = by_size[0] if len(by_size) == 1 else {
            **by_size[-1], "sizes": {str(d["n_atoms"]): d for d in by_size}}
    out["state_points"] = {"lj": {"T*": LJ["kt"], "P*": LJ["p"], "cutoff_sigma": LJ["cutoff"],
                                  "shifted": True},
                           "cu_emt": {"T_K": CU["t"], "P_eV_per_A3": CU["p"]}}
    out["load"] = [load, os.getloadavg()[0]]
    out["cpu_seconds"] = round(time.process_time() - c0, 1)
    out["commit"] = commit
    print(json.dumps(out, default=lambda v: float(v) if isinstance(v, np.floating) else v))


if __name__ == "__main__":
    main()
