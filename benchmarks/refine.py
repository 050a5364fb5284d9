"""Benchmark of refinement by differentiable MD on liquid argon (Lennard-Jones).

    python benchmarks/refine.py [--quick] [--work DIR]

1. Recovery: targets (g(r), the NVE self-diffusion coefficient D and the mean potential
   energy per atom U) are simulated at argon's ε = 0.0103 eV, σ = 3.405 Å; refinements
   start at ε × 1.12, σ × 0.88 and fit g(r) alone, D alone, g(r) and D, g(r) and U.
   Reported: the relative error of each fitted parameter, and the Fisher analysis at the
   truth (alflow.refine.sensitivity): which combination of log ε, log σ each target fixes,
   the relative standard error it allows, and their correlation.
2. Memory and time per gradient against trajectory length, adjoint against direct
   back-propagation: each gradient runs in its own process; memory is the rise of the peak
   resident set over the process's state before the gradient (ru_maxrss).
3. Truncation: the gradient of D over segments of S steps, back-propagated through the last K
   steps, for several K: bias (mean relative to the largest K) and spread (relative standard
   deviation over independent batches of replicas); and the reference they should match,
   dD/d log σ by central finite differences of D simulated at σ·e^(±h) (equilibrated anew,
   so it includes the change of the starting states the truncated gradient holds fixed).

Figures depend on the machine's load (printed). Ends with one JSON line holding every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from alflow.refine import observables as obs  # noqa: E402
from alflow.refine.config import RefineConfig, load_config  # noqa: E402
from alflow.refine.dynamics import Box, lattice_start, nvt  # noqa: E402
from alflow.refine.fit import ENERGY, Refinement, Targets, refine  # noqa: E402
from alflow.refine.gradients import segment_gradient  # noqa: E402
from alflow.refine.potential import TrainableLJ  # noqa: E402
from alflow.refine.targets import write_table  # noqa: E402

EPS, SIG = 0.0103, 3.405


def settings(quick: bool) -> dict:
    """System and run lengths (quick: the same figures on a smaller budget)."""
    n = 64 if quick else 108
    return {
        "n_atoms": n, "density": 0.015, "temperature_k": 150.0, "cutoff_a": 6.0,
        "replicas": 8 if quick else 16, "width_a": 0.1,
        "target_sample_steps": 1000 if quick else 4000,
        "sample_steps": 300 if quick else 1000,
        "iterations": 8 if quick else 15,
        "segment_steps": 100 if quick else 200, "gradient_steps": 50 if quick else 100,
        "lengths": [25, 50, 100] if quick else [25, 50, 100, 200, 400],
        "truncations": [5, 20, 50] if quick else [5, 10, 25, 50, 100, 200],
        "truncation_segment": 50 if quick else 200, "batches": 3 if quick else 6,
    }


def base_config(s: dict, seed: int = 7) -> dict:
    return {
        "system": {"element": "Ar", "mass_amu": 39.948, "n_atoms": s["n_atoms"],
                   "number_density_per_A3": s["density"], "temperature_k": s["temperature_k"]},
        "potential": {"kind": "lj", "epsilon_ev": EPS, "sigma_a": SIG,
                      "cutoff_a": s["cutoff_a"], "trainable": ["epsilon_ev", "sigma_a"]},
        "md": {"dt_fs": 10.0, "replicas": s["replicas"], "equilibration_steps": 300,
               "reequilibration_steps": 100, "sample_steps": s["target_sample_steps"],
               "sample_every": 10, "segment_steps": s["segment_steps"], "record_every": 5,
               "gradient_steps": s["gradient_steps"], "seed": seed},
        "targets": {"diffusion_coefficient_A2_per_ps": 1.0},
    }


def at_truth(s: dict, base: dict) -> tuple[np.ndarray, object, object, object, dict]:
    """g(r) grid, g(r), D and U estimates, and the sensitivity report at argon's
    parameters."""
    edge = (s["n_atoms"] / base["system"]["number_density_per_A3"]) ** (1 / 3)
    r = np.arange(2.8, edge / 2 - 4 * s["width_a"] - 0.01, 0.05)
    ref = Refinement(RefineConfig.model_validate(base),
                     Targets(rdf_r=torch.as_tensor(r), rdf_g=torch.zeros(len(r),
                                                                        dtype=torch.float64),
                             rdf_width=s["width_a"], diffusion=1.0, energy=-1.0))
    ev = ref.evaluate(with_gradient=False)
    return (r, ev.estimates["rdf"], ev.estimates["diffusion_coefficient_A2_per_ps"],
            ev.estimates[ENERGY], ref.sensitivity(ev))


def recovery(s: dict, work: Path) -> dict:
    """Fit g(r) alone, D alone, g(r) and D, g(r) and U, from 12 % off; Fisher analysis at
    the truth, also for the triple-point liquid (ρ = 0.0213 Å⁻³, 100 K)."""
    import yaml

    base = base_config(s)
    r, g, d, u, truth_sensitivity = at_truth(s, base)
    dense = json.loads(json.dumps(base))
    dense["system"].update(number_density_per_A3=0.0213, temperature_k=100.0)
    dense_sensitivity = at_truth(s, dense)[4]
    for name, sens in (("this state", truth_sensitivity), ("dense liquid", dense_sensitivity)):
        for k, rep in sens.items():
            print(f"{name}: {k} relative standard errors {rep['relative_standard_error']}, "
                  f"correlation {rep.get('correlation')}", flush=True)
    write_table(work / "rdf.csv", ("r_angstrom", "g"), r, g.value)
    out = {"target_D_A2_per_ps": float(d.value), "target_D_error": float(d.error),
           "target_U_ev_per_atom": float(u.value), "target_U_error": float(u.error),
           "sensitivity_at_truth": truth_sensitivity,
           "sensitivity_dense_liquid_100K": dense_sensitivity, "fits": {}}
    choices = {"rdf": {"rdf": {"file": "rdf.csv", "width_a": s["width_a"]}},
               "diffusion": {"diffusion_coefficient_A2_per_ps": float(d.value)},
               "both": {"rdf": {"file": "rdf.csv", "width_a": s["width_a"]},
                        "diffusion_coefficient_A2_per_ps": float(d.value)},
               "rdf_energy": {"rdf": {"file": "rdf.csv", "width_a": s["width_a"]},
                              ENERGY: float(u.value)}}
    for name, targets in choices.items():
        cfg = json.loads(json.dumps(base))
        cfg["potential"].update(epsilon_ev=EPS * 1.12, sigma_a=SIG * 0.88)
        cfg["md"].update(seed=11, sample_steps=s["sample_steps"])
        cfg["targets"] = targets
        cfg["optimiser"] = {"method": "gauss-newton", "iterations": s["iterations"],
                            "max_step": 0.1}
        path = work / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        t0, c0 = time.perf_counter(), time.process_time()
        doc = refine(load_config(path))
        p = doc["parameters"]
        out["fits"][name] = {
            "epsilon_rel_error": p["epsilon_ev"] / EPS - 1,
            "sigma_rel_error": p["sigma_a"] / SIG - 1,
            "final_loss": doc["final_loss"], "simulations": doc["simulations"],
            "wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}
        fit = out["fits"][name]
        print(f"recovery from {name}: ε {p['epsilon_ev']:.5f} eV "
              f"({fit['epsilon_rel_error']:+.2%}), σ {p['sigma_a']:.4f} Å "
              f"({fit['sigma_rel_error']:+.2%}), {doc['simulations']} simulations, "
              f"{fit['wall_s']:.0f} s ({fit['cpu_s']:.0f} s CPU)", flush=True)
    return out


def _equilibrated(n: int, replicas: int, seed: int = 3):
    box = Box("Ar", 39.948, n, (n / 0.0213) ** (1 / 3), 100.0)
    model = TrainableLJ(EPS, SIG, 6.0)
    run = nvt(model, box, lattice_start(box, replicas, seed), None, 10.0, 300, 0.01, 100,
              seed + 1)
    return box, model, run.end


def _d_loss(dt_ps: float):
    def loss(x, v):
        t = torch.arange(x.shape[0], dtype=x.dtype) * dt_ps
        return obs.diffusion_from_msd(x, t).mean()
    return loss


def one_gradient(method: str, steps: int, n: int) -> dict:
    """In this process: one gradient of D through ``steps`` steps; time and peak RSS rise."""
    torch.set_num_threads(1)
    box, model, start = _equilibrated(n, 4)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0, c0 = time.perf_counter(), time.process_time()
    seg = segment_gradient(model, box, start, 10.0, steps, 5, _d_loss(0.05), steps, method)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"method": method, "steps": steps, "seconds": wall, "cpu_seconds": cpu,
            "memory_mb": (peak - before) / 1024, "grad": [float(g) for g in seg.grads]}


def memory_and_time(s: dict) -> list[dict]:
    rows = []
    for steps in s["lengths"]:
        for method in ("direct", "adjoint"):
            res = subprocess.run([sys.executable, __file__, "--one-gradient", method,
                                  str(steps), str(s["n_atoms"])], capture_output=True,
                                 text=True, check=True, env={**os.environ,
                                                             "PYTHONPATH": str(ROOT)})
            row = json.loads(res.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"{method:7s} {steps:4d} steps: {row['seconds']:.2f} s "
                  f"({row['cpu_seconds']:.2f} s CPU), "
                  f"+{row['memory_mb']:.1f} MB", flush=True)
    return rows


def truncation(s: dict) -> list[dict]:
    """dD/d(log θ) over segments of S steps through the last K, per batch of 4 replicas."""
    seg_steps = s["truncation_segment"]
    grads = {k: [] for k in s["truncations"]}
    for b in range(s["batches"]):
        box, model, start = _equilibrated(s["n_atoms"], 4, seed=20 + b)
        for k in s["truncations"]:
            seg = segment_gradient(model, box, start, 10.0, seg_steps, 5, _d_loss(0.05), k,
                                   "direct")
            grads[k].append([float(g) for g in seg.grads])
    ref = np.mean(grads[max(grads)], axis=0)
    rows = []
    for k, gs in grads.items():
        gs = np.asarray(gs)
        mean, sd = gs.mean(0), gs.std(0, ddof=1)
        rows.append({"K": k, "segment_steps": seg_steps,
                     "mean": mean.tolist(), "std": sd.tolist(),
                     "bias_vs_largest_K": ((mean - ref) / np.abs(ref)).tolist(),
                     "relative_std": (sd / np.abs(mean)).tolist()})
        print(f"K {k:4d}/{seg_steps}: dD/dlogε {mean[0]:+.4f} ± {sd[0]:.4f}, "
              f"dD/dlogσ {mean[1]:+.4f} ± {sd[1]:.4f} Å²/ps", flush=True)
    return rows


def finite_difference(s: dict, h: float = 0.03, replicas: int = 32) -> dict:
    """dD/d log σ and dD/d log ε (Å²/ps) at the truncation benchmark's state point (ρ =
    0.0213 Å⁻³, 100 K) by central differences of D from independent simulations."""
    from alflow.refine.fit import measure

    n = s["n_atoms"]
    base = {"system": {"element": "Ar", "mass_amu": 39.948, "n_atoms": n,
                       "number_density_per_A3": 0.0213, "temperature_k": 100.0},
            "potential": {"kind": "lj", "epsilon_ev": EPS, "sigma_a": SIG, "cutoff_a": 6.0,
                          "trainable": ["epsilon_ev", "sigma_a"]},
            "md": {"dt_fs": 10.0, "replicas": replicas, "equilibration_steps": 300,
                   "sample_steps": 10, "sample_every": 10,
                   "segment_steps": s["truncation_segment"], "record_every": 5,
                   "gradient_steps": 1, "seed": 41},
            "targets": {"diffusion_coefficient_A2_per_ps": 1.0}}
    out = {"h": h, "replicas": replicas}
    for name, value in (("sigma_a", SIG), ("epsilon_ev", EPS)):
        d = []
        for sign in (1, -1):
            cfg = json.loads(json.dumps(base))
            cfg["potential"][name] = value * float(np.exp(sign * h))
            d.append(measure(RefineConfig.model_validate(cfg))[
                "diffusion_coefficient_A2_per_ps"])
        grad = (float(d[0].value) - float(d[1].value)) / (2 * h)
        err = float(np.hypot(d[0].error, d[1].error)) / (2 * h)
        out[f"dD_dlog_{name}"], out[f"dD_dlog_{name}_error"] = grad, err
        print(f"finite differences: dD/dlog {name} {grad:+.3f} ± {err:.3f} Å²/ps", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--work", type=Path, default=Path("bench_refine"))
    ap.add_argument("--one-gradient", nargs=3, metavar=("METHOD", "STEPS", "N"))
    args = ap.parse_args()
    if args.one_gradient:
        m, steps, n = args.one_gradient
        print(json.dumps(one_gradient(m, int(steps), int(n))))
        return
    torch.set_num_threads(1)
    s = settings(args.quick)
    args.work.mkdir(parents=True, exist_ok=True)
    load_start = os.getloadavg()
    t0, c0 = time.perf_counter(), time.process_time()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; load {load_start}",
          flush=True)
    mem = memory_and_time(s)
    trunc = truncation(s)
    fd = finite_difference(s)
    rec = recovery(s, args.work)
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    figures = {"benchmark": "refine", "quick": args.quick, "commit": commit,
               "settings": s, "load_start": load_start, "load_end": os.getloadavg(),
               "wall_s": time.perf_counter() - t0,
               "cpu_s": time.process_time() - c0 + sum(r["cpu_seconds"] for r in mem),
               "recovery": rec,
               "gradient_cost": mem, "truncation": trunc,
               "truncation_reference_finite_difference": fd}
    for k in ("rdf", "diffusion", "both", "rdf_energy"):
        f = rec["fits"][k]
        figures[f"{k}_epsilon_rel_error"] = f["epsilon_rel_error"]
        figures[f"{k}_sigma_rel_error"] = f["sigma_rel_error"]
    print(json.dumps(figures, default=float))


if __name__ == "__main__":
    main()
