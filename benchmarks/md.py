"""Benchmark of exploration MD: speed of 64 Ag6 replicas on the built-in committee MLIP,
first planar <-> 3D transition under metadynamics on the coordination number vs plain MD, and
the metadynamics FES error on an analytic double well.

    python benchmarks/md.py [--quick] [--device cpu|cuda] [--model DIR] [--work DIR]

The committee (alflow.mlip, built-in model, 4 members, 30 epochs) is trained once on EMT
labels of ~300 Ag6 frames from EMT Langevin MD of both isomers at 300-900 K and cached in
--work (or loaded from --model); --quick reuses that cache, or without one trains a tiny
2-member committee for 5 epochs (enough to time the MD, not to trust its crossings).
EMT prefers 3D Ag6: on it the planar triangle turns 3D within picoseconds at 300 K, so the
transition timed here is the rare direction on this potential, pentagonal pyramid -> planar
(planarity < 0.15 Å; 3D is planarity > 0.4 Å). All 64 replicas start in the pyramid; a
replica has crossed when it is planar. Figures depend on the machine load (shared machine).

Ends with one JSON line: replica_steps_per_second, device, metad_first_crossing_ps,
plain_md_first_crossing_ps (null if none), fes_rms_error_kt, and more.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from ase import units
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import read

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from alflow.potential import AseCalculatorPotential  # noqa: E402
from alflow.sampling.cvs import CoordinationNumber, Planarity, Position  # noqa: E402
from alflow.sampling.langevin import run_langevin, spherical_wall  # noqa: E402
from alflow.sampling.metad import WellTemperedMetad  # noqa: E402

PLANAR, THREE_D = 0.15, 0.4  # planarity thresholds, Å


def emt_dataset(steps: int) -> list:
    """EMT-labelled Ag6 frames from EMT Langevin MD of both isomers at several temperatures."""
    ag6 = read(ROOT / "alflow" / "examples" / "data" / "ag6.extxyz", ":")
    frames = []
    for k, t in enumerate((300.0, 600.0, 900.0)):
        for iso in ag6:
            pot = AseCalculatorPotential(EMT, iso)
            tr = run_langevin(pot, iso.positions, iso.get_masses(), t, 4.0, steps, 0.02,
                              bias=spherical_wall(4.5, 1.0), record_every=30, seed=k)
            frames += tr.to_atoms()
    calc = EMT()
    out = []
    for a in frames:
        a.calc = calc
        e, f = a.get_potential_energy(), a.get_forces()
        b = a.copy()
        b.info = {}
        b.calc = SinglePointCalculator(b, energy=e, forces=f)
        out.append(b)
    return out


def get_model(args) -> tuple[Path, str]:
    from alflow.mlip import MLIPConfig, train_committee

    if args.model:
        return Path(args.model), "given"
    work = Path(args.work) / "model"
    if (work / "done").exists():
        return work, "cached, trained on EMT frames"
    if args.quick:  # no cached model: a tiny committee, enough to time the MD
        work = Path(args.work) / "model-tiny"
        data = emt_dataset(300)
        cfg = MLIPConfig(committee_size=2, epochs=5)
    else:
        data = emt_dataset(1500)
        cfg = MLIPConfig(committee_size=4, epochs=30, patience=30)
    t0 = time.perf_counter()
    train_committee(data, work, cfg)
    (work / "done").write_text("ok")
    print(f"# trained committee on {len(data)} EMT frames in "
          f"{time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return work, f"trained on {len(data)} EMT frames"


def first_crossing_ps(traj, planar_start: bool) -> float | None:
    p = traj.cv("planarity")
    crossed = (p > THREE_D) if planar_start else (p < PLANAR)
    hit = np.flatnonzero(crossed.any(1))
    return None if len(hit) == 0 else float(traj.time_ps[hit[0]])


def ag6_runs(pot, args) -> dict:
    ag6 = read(ROOT / "alflow" / "examples" / "data" / "ag6.extxyz", ":")
    pyramid = ag6[1]
    r = 64
    x0 = np.stack([pyramid.positions] * r)
    m = pyramid.get_masses()
    dev, dtype = args.device, torch.float64
    # speed: plain Langevin, 64 replicas
    run_langevin(pot, x0, m, 300.0, 5.0, 5, device=dev, dtype=dtype)  # warm-up
    n = 50 if args.quick else 300
    t0 = time.perf_counter()
    run_langevin(pot, x0, m, 300.0, 5.0, n, record_every=10, device=dev, dtype=dtype)
    speed = r * n / (time.perf_counter() - t0)
    # crossing: metad on the coordination number vs plain MD, same length
    steps = 600 if args.quick else 6000
    cvs = [Planarity()]
    wall = spherical_wall(4.5, 1.0)
    cn = CoordinationNumber(r0=2.8, name="coordination")
    md = WellTemperedMetad([cn], sigma=[0.04], height_ev=0.02, pace=20, bias_factor=15.0,
                           temperature_k=300.0, grid_min=[0.5], grid_max=[3.5],
                           grid_bins=[300], device=dev)
    t0 = time.perf_counter()
    tm = run_langevin(pot, x0, m, 300.0, 5.0, steps, 0.01, bias=[wall, md], record_every=10,
                      cvs=cvs, seed=1, device=dev, dtype=dtype)
    t_metad = time.perf_counter() - t0
    tp = run_langevin(pot, x0, m, 300.0, 5.0, steps, 0.01, bias=[wall], record_every=10,
                      cvs=cvs + [cn], seed=1, device=dev, dtype=dtype)
    n_dev = None
    if tm.force_dev is not None:
        n_dev = float(np.nanmax(tm.force_dev))
    return {"replica_steps_per_second": speed,
            "metad_first_crossing_ps": first_crossing_ps(tm, planar_start=False),
            "plain_md_first_crossing_ps": first_crossing_ps(tp, planar_start=False),
            "simulated_ps_per_replica": float(tm.time_ps[-1]),
            "metad_replicas_crossed": int((tm.cv("planarity") < PLANAR).any(0).sum()),
            "plain_md_replicas_crossed": int((tp.cv("planarity") < PLANAR).any(0).sum()),
            "metad_wall_s": t_metad, "metad_max_force_dev": n_dev,
            "plain_md_coordination_range": [float(tp.cv("coordination").min()),
                                            float(tp.cv("coordination").max())]}


def fes_error(args) -> float:
    """RMS error (kT) of the well-tempered FES of a 1D double well (barrier 8 kT) where the
    exact free energy is below 6 kT."""
    t = 300.0
    kt = units.kB * t
    eb = 8 * kt

    class DoubleWell:
        numbers = np.array([18])

        def energy(self, x):
            p = x[..., 0, :]
            return eb * (p[..., 0] ** 2 - 1) ** 2 + (p[..., 1] ** 2 + p[..., 2] ** 2)

    md = WellTemperedMetad([Position(0, 0, name="x")], [0.1], 0.5 * kt, 25, 8.0, t,
                           [-2.0], [2.0], [200])
    x0 = np.zeros((32, 1, 3))
    x0[:, 0, 0] = -1.0
    run_langevin(DoubleWell(), x0, [10.0], t, 4.0, 4000 if args.quick else 20000, 0.02,
                 bias=md, record_every=50, seed=0)
    fes = md.fes()
    exact = eb * (fes.grid[0] ** 2 - 1) ** 2
    sel = exact < 6 * kt
    d = fes.free_energy[sel] - exact[sel]
    return float(np.sqrt(((d - d.mean()) ** 2).mean()) / kt)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", help="committee model directory (default: train on EMT)")
    ap.add_argument("--work", default="/tmp/alflow-bench-md")
    args = ap.parse_args()
    t0 = time.perf_counter()
    from alflow.mlip import load_potential

    model, origin = get_model(args)
    numbers = read(ROOT / "alflow" / "examples" / "data" / "ag6.extxyz").numbers
    pot = load_potential(model, numbers, device=args.device)
    res = {"device": args.device, "potential": f"alflow.mlip committee ({origin})"}
    res.update(ag6_runs(pot, args))
    res["fes_rms_error_kt"] = fes_error(args)
    res["quick"] = args.quick
    res["wall_s"] = time.perf_counter() - t0
    print(json.dumps(res))


if __name__ == "__main__":
    main()
