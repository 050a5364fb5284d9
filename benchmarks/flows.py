"""Benchmark: Boltzmann generators + adaptive MCMC + ΔF for lj7 (18 K) and Ag6 (EMT, 300 K).

lj7: the torch Lennard-Jones potential (= ASE's LennardJones(sigma=3.405, epsilon=0.0103,
rc=34.05, smooth=False)), hard wall 8.5125 Å about the centre of mass, states by quench basin,
ΔF = F(coh) − F(pbp). Seeds: Langevin MD (alflow.sampling.langevin) from each minimum.
ag6: ASE's EMT in torch (alflow.emt, equal to ASE's calculator), EMT's two lowest minima
(alflow/examples/data/ag6_emt.extxyz) by quench basin, ΔF = F(bicapped_tetrahedron) −
F(octahedron). EMT has no planar Ag6 minimum (the D3h triangle relaxes to the bicapped
tetrahedron); ``--systems ag6_planar`` runs planar vs 3D as CV regions (planarity: smallest
principal extent below / above 0.35 Å), where the "planar" region is not metastable and the 3D
region holds several isomers: the hard case for one flow per state.

Prints per state: ESS fraction of the importance weights, IMH (global-move) acceptance,
seconds spent training; ΔF ± error (eV) per system. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import ase.io  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from ase.units import kB  # noqa: E402

from alflow.emt import EMT  # noqa: E402
from alflow.estimate import delta_f  # noqa: E402
from alflow.flows.pipeline import StateSamplerConfig, state_free_energy  # noqa: E402
from alflow.potential import LennardJones  # noqa: E402
from alflow.sampling.langevin import run_langevin  # noqa: E402
from alflow.states import BasinStates, CVStates  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
_LJ7 = {a.info["state"]: a for a in ase.io.read(ROOT / "alflow/examples/data/lj7.extxyz", ":")}
PBP = _LJ7["bipyramid"].positions.copy()
COH = _LJ7["capped_octahedron"].positions.copy()


def _config(quick: bool, samples: int, levels: int, polish: int,
            mala_steps: int = 2) -> StateSamplerConfig:
    """Forward KL on the MD seeds, adaptive MCMC (retraining on the walkers), a mixed
    forward/reverse-KL polish, then annealed importance sampling of the estimate."""
    return StateSamplerConfig(
        flow={"layers": 6, "hidden": 64, "coordinates": "frame"},
        train={"steps": 100 if quick else 800, "batch_size": 256},
        mcmc_config={"iterations": 3 if quick else 16, "adapt_iterations": 2 if quick else 8,
                     "local_steps": 5 if quick else 10, "global_steps": 2,
                     "train_every": 2 if quick else 4, "train": {"steps": 20 if quick else 60}},
        walkers=32 if quick else 64, retrain_steps=30 if quick else 300,
        polish_steps=polish, samples=samples, anneal={"levels": levels, "mala_steps": mala_steps})


def _md_seeds(pot, x0: np.ndarray, masses: np.ndarray, t_k: float, replicas: int, steps: int,
              dt: float, seed: int) -> np.ndarray:
    tr = run_langevin(pot, np.repeat(x0[None], replicas, 0), masses, t_k, dt, steps,
                      friction_per_fs=0.01, record_every=10, seed=seed)
    pos = np.asarray(tr.positions)
    return pos[len(pos) // 5:].reshape(-1, *x0.shape)


def _system(name, pot, states, refs, numbers, masses, t_k, order, cfg, seeds, wall_radius):
    res = {}
    for k, s in enumerate(order):
        t0 = time.perf_counter()
        r = state_free_energy(pot, s, states, refs[s], numbers, t_k, seeds[s], cfg,
                              wall_radius, masses, seed=10 * k)
        res[s] = r
        sm = r.summary()
        print(f"{name}/{s}: F = {sm['f_ev']:.5f} ± {sm['err_ev']:.5f} eV, ESS fraction "
              f"{sm['ess_fraction']:.3f} (flow alone {sm['flow_ess_fraction']:.3f}), "
              f"Pareto k̂ {sm.get('pareto_k', float('nan')):.2f}, "
              f"IMH acceptance {sm['imh_acceptance']:.3f}, "
              f"train {sm['train_seconds']:.1f} s, total {time.perf_counter() - t0:.1f} s",
              flush=True)
    d = delta_f(res[order[0]].free_energy, res[order[1]].free_energy)
    print(f"{name}: ΔF = F({order[1]}) − F({order[0]}) = {d.value_ev:.5f} ± {d.error_ev:.5f} eV"
          f" = {d.value_kt:.3f} ± {d.error_kt:.3f} kT", flush=True)
    return {"states": {s: {"ess_fraction": round(r.free_energy.ess_fraction, 4),
                           "flow_ess_fraction": round(r.summary()["flow_ess_fraction"], 4),
                           "pareto_k": _finite(r.summary().get("pareto_k")),
                           "estimate_seconds": round(r.summary()["estimate_seconds"], 2),
                           "imh_acceptance": round(r.mcmc.global_acceptance, 4) if r.mcmc
                           else None,
                           "train_seconds": round(r.train_seconds, 2),
                           "f_ev": r.free_energy.f_ev, "err_ev": r.free_energy.err_ev}
                       for s, r in res.items()},
            "delta_f_ev": d.value_ev, "delta_f_err_ev": d.error_ev,
            "delta_f_kt": d.value_kt, "delta_f_err_kt": d.error_kt, "temperature_k": t_k}


def _finite(v) -> float | None:
    return None if v is None or not np.isfinite(v) else round(float(v), 3)


def bench_lj7(quick: bool) -> dict:
    t_k = 18.0
    numbers = np.full(7, 18)
    masses = np.full(7, 39.948)
    pot = LennardJones(numbers)
    refs = {"pbp": PBP, "coh": COH}
    states = BasinStates(pot, refs)
    mins = dict(zip(states.names, states.minima, strict=True))
    # 64 MD replicas: with 16 (~800 quick / 2,600 full frames) the flows overfit the seeds and
    # the coh flow alone reached ESS 0.002-0.05 (docs/flows.md); MD costs seconds
    seeds = {s: _md_seeds(pot, mins[s], masses, t_k, 64, 600 if quick else 2000, 10.0, k)
             for k, s in enumerate(refs)}
    # full: 100 levels x 4 MALA steps (40 x 2 left heavy AIS weights: ESS 0.2-0.56 by draw)
    cfg = _config(quick, 1000 if quick else 6000, 10 if quick else 100, 40 if quick else 400,
                  2 if quick else 4)
    return _system("lj7", pot, states, mins, numbers, masses, t_k, ["pbp", "coh"], cfg, seeds,
                   8.5125)


def _planarity(x: torch.Tensor) -> torch.Tensor:
    """Smallest principal extent (Å): sqrt of the smallest gyration-tensor eigenvalue."""
    y = x - x.mean(-2, keepdim=True)
    g = torch.einsum("bni,bnj->bij", y, y) / x.shape[-2]
    return torch.linalg.eigvalsh(g)[:, 0].clamp_min(0).sqrt()


def _ag6(quick: bool, data: str, states_of, order: list[str], name: str) -> dict:
    t_k = 300.0
    refs_atoms = {a.info["state"]: a for a in ase.io.read(ROOT / "alflow/examples/data" / data,
                                                          ":")}
    template = refs_atoms[order[0]]
    pot = EMT(template.numbers)
    numbers, masses = template.numbers, template.get_masses()
    refs = {s: refs_atoms[s].positions - refs_atoms[s].positions.mean(0) for s in order}
    states = states_of(pot, refs)
    if isinstance(states, BasinStates):
        refs = dict(zip(states.names, states.minima, strict=True))
    seeds = {s: _md_seeds(pot, refs[s], masses, t_k, 16, 400 if quick else 1500, 5.0, k)
             for k, s in enumerate(order)}
    for s, x in seeds.items():
        keep = states.member(s)(torch.as_tensor(x))
        print(f"{name}/{s}: {keep.mean():.2f} of MD seeds inside the state", flush=True)
    cfg = _config(quick, 1000 if quick else 6000, 10 if quick else 40, 40 if quick else 400)
    out = _system(name, pot, states, refs, numbers, masses, t_k, order, cfg, seeds, None)
    out["potential"] = "torch:emt (alflow.emt.EMT = ASE's EMT, batched)"
    return out


def bench_ag6(quick: bool) -> dict:
    """EMT's two lowest Ag6 minima, states by quench basin (EMT has no planar minimum)."""
    return _ag6(quick, "ag6_emt.extxyz", BasinStates, ["octahedron", "bicapped_tetrahedron"],
                "ag6")


def bench_ag6_planar(quick: bool) -> dict:
    """Planar vs 3D Ag6 on EMT as CV regions (planarity 0.35 Å): not metastable on EMT."""
    return _ag6(quick, "ag6.extxyz", lambda pot, refs: CVStates(
        {"planar": (_planarity, 0.0, 0.35), "pyramid": (_planarity, 0.35, 10.0)}),
        ["planar", "pyramid"], "ag6_planar")


def _bench(name: str, quick: bool) -> dict:
    torch.set_num_threads(1)
    warnings.simplefilter("ignore", UserWarning)
    return {"lj7": bench_lj7, "ag6": bench_ag6, "ag6_planar": bench_ag6_planar}[name](quick)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps and samples (< 2 min "
                    "on an idle 2-core machine)")
    ap.add_argument("--systems", default="lj7,ag6")
    args = ap.parse_args()
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)
    warnings.simplefilter("ignore", UserWarning)
    t0 = time.perf_counter()
    names = args.systems.split(",")
    # one process per system (each single-threaded): the two systems share nothing
    with ProcessPoolExecutor(max(1, min(len(names), os.cpu_count() or 1))) as pool:
        jobs = {n: pool.submit(_bench, n, args.quick) for n in names}
        out: dict = {n: j.result() for n, j in jobs.items()}
    out["device"] = "cpu"
    out["quick"] = args.quick
    out["seconds"] = round(time.perf_counter() - t0, 1)
    out["kB_ev_per_k"] = kB
    sys.stdout.flush()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
