"""Calibration of the campaign's answer: do its error bars hold?

Per system (the ``lj7`` and ``ag6_emt`` examples), independent campaigns that differ only in
their ``seed`` run until their convergence rule stops them; the answer of each is the last
generation's ΔF corrected to the oracle, with its error. Against an independent reference
on the oracle itself (basin counts by MD, no flows, no MLIP), per system: the mean corrected
ΔF and its bias, every seed's z-score (ΔF − reference) / √(σ² + σ_ref²), the fraction with
|z| ≤ 2 and the RMS z. Goals (issue 22): |bias| ≤ 0.03 kT, ≥ 90 % of seeds with |z| ≤ 2,
RMS z in [0.7, 1.3].

References: lj7 at 18 K from the parallel-tempering basin counts of
``benchmarks/lj7_reference.py`` — the single run of ``lj7_reference.json``, or the raw
per-chain counts of its ``--long`` runs in ``lj7_reference_18k.jsonl`` where their error is
the smaller (the first 20,000 steps of every chain dropped);
Ag6/EMT at 300 K from ``ag6_emt_reference.json`` (``benchmarks/ag6_emt_reference.py``).

    python benchmarks/calibration.py [--quick] [--seeds 8] [--systems lj7,ag6_emt]
                                     [--generations N] [--out DIR]

Full: 8 seeds per system, the examples' own settings and rules. ``--quick``: 2 seeds, the
examples with small budgets and one generation (a smoke test of every figure: its answers
are far from converged and its z-scores mean little). Campaigns run one after the other,
each in a child process. The last line is one JSON object with the figures and the load.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from lj7_reference import best_reference  # noqa: E402

from alflow.examples import write_example  # noqa: E402

SYSTEMS = {"lj7": "lj7", "ag6_emt": "ag6-emt"}  # benchmark name -> example
AG6_EMT = HERE / "ag6_emt_reference.json"
QUICK = {
    "lj7": {"mlip": {"epochs": 40, "polish_steps": 150},
            "md": {"replicas": 4, "steps": 200},
            "sampler": {"md_replicas": 4, "md_steps": 200, "samples": 300,
                        "train": {"steps": 40, "batch_size": 128},
                        "mcmc": {"walkers": 16, "retrain_steps": 10, "iterations": 12,
                                 "adapt_iterations": 1, "local_steps": 5, "global_steps": 4,
                                 "step_size": 0.1, "train_every": 2, "train": {"steps": 5},
                                 "estimator": "bar"}}},
    "ag6_emt": {"mlip": {"epochs": 40, "committee_size": 2},
                "md": {"replicas": 4, "steps": 200},
                "sampler": {"md_replicas": 4, "md_steps": 300, "samples": 300,
                            "train": {"steps": 40, "batch_size": 128}}},
}


def references() -> dict[str, dict]:
    """name -> {"delta_f_kt", "error_kt", "source"}."""
    r = best_reference()
    out = {"lj7": {"delta_f_kt": r["delta_f_kt"], "error_kt": r["error_kt"],
                   "source": r["source"]}}
    r = json.loads(AG6_EMT.read_text().strip().splitlines()[-1])
    out["ag6_emt"] = {"delta_f_kt": r["delta_f_kt"], "error_kt": r["delta_f_err_kt"],
                      "source": AG6_EMT.name}
    return out


def campaign(out: Path, system: str, seed: int, quick: bool, generations: int | None) -> Path:
    """The example of ``system`` in ``out/<system>-seed<seed>`` with that seed; its YAML."""
    path = write_example(SYSTEMS[system], out / f"{system}-seed{seed}")
    data = yaml.safe_load(path.read_text())
    data["seed"] = seed
    if quick:
        q = QUICK[system]
        data["mlip"].update(q["mlip"])
        data["exploration"]["md"].update(q["md"])
        data["exploration"]["sampler"].update(q["sampler"])
        data["estimate"]["bootstrap"] = 100
    if generations is not None:
        data["convergence"]["max_generations"] = generations
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _run(path: str, run_dir: str) -> None:
    """Child process: run the campaign to its end."""
    from alflow.campaign.runner import start

    start(path, run_dir, progress=False)


def answer(run: Path) -> dict:
    """The run's answer: the last generation's corrected ΔF (kT) and error, its calls."""
    status = json.loads((run / "status.json").read_text())
    kt = status["kt_ev"]
    last = next((h for h in reversed(status["history"]) if h.get("value_ev") is not None),
                None)
    val = err = None
    corrected = False
    if last is not None:
        corrected = last.get("corrected_ev") is not None
        val = last["corrected_ev"] if corrected else last["value_ev"]
        err = last["corrected_error_ev"] if corrected else last["error_ev"]
    return {"delta_f_kt": None if val is None else round(val / kt, 4),
            "err_kt": None if err is None else round(err / kt, 4), "corrected": corrected,
            "oracle_calls": status.get("oracle_calls"), "converged": status["converged"],
            "generations": len(status["history"]), "stop_reason": status.get("stop_reason")}


def figures(runs: list[dict], ref: dict) -> dict:
    """Bias (kT), z-scores, coverage and RMS z of the runs against the reference."""
    ok = [r for r in runs if r["delta_f_kt"] is not None and r["err_kt"]]
    for r in ok:
        r["z"] = round((r["delta_f_kt"] - ref["delta_f_kt"])
                       / math.hypot(r["err_kt"], ref["error_kt"]), 3)
    z = np.array([r["z"] for r in ok])
    mean = float(np.mean([r["delta_f_kt"] for r in ok])) if ok else float("nan")
    return {"reference_kt": ref["delta_f_kt"], "reference_err_kt": ref["error_kt"],
            "reference_source": ref["source"], "runs": runs, "mean_kt": mean,
            "bias_kt": mean - ref["delta_f_kt"],
            "rms_z": float(np.sqrt(np.mean(z**2))) if len(z) else float("nan"),
            "covered_2sigma": float(np.mean(np.abs(z) <= 2)) if len(z) else float("nan"),
            "runs_without_answer": len(runs) - len(ok)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seeds", type=int, default=None, help="seeds per system (8; quick 2)")
    ap.add_argument("--systems", default="lj7,ag6_emt")
    ap.add_argument("--generations", type=int, default=None,
                    help="cap on generations (default: the example's; quick: 1)")
    ap.add_argument("--out", type=Path, default=None, help="run directories (default: tmp)")
    args = ap.parse_args()
    systems = [s for s in args.systems.split(",") if s]
    bad = [s for s in systems if s not in SYSTEMS]
    if bad:
        sys.exit(f"--systems: unknown {', '.join(bad)}; expected some of {', '.join(SYSTEMS)}")
    seeds = args.seeds or (2 if args.quick else 8)
    gens = args.generations or (1 if args.quick else None)
    out = args.out or Path(tempfile.mkdtemp(prefix="alflow-bench-calibration-"))
    refs = references()
    load0, t0 = os.getloadavg()[0], time.perf_counter()
    result: dict = {}
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        for system in systems:
            runs = []
            for seed in range(seeds):
                path = campaign(out, system, seed, args.quick, gens)
                t = time.perf_counter()
                pool.submit(_run, str(path), str(path.parent / "run")).result()
                r = {"seed": seed, **answer(path.parent / "run"),
                     "wall_s": round(time.perf_counter() - t, 1)}
                runs.append(r)
                print(f"{system} seed {seed}: ΔF {r['delta_f_kt']} ± {r['err_kt']} kT, "
                      f"{r['oracle_calls']} calls, {r['generations']} generation(s), "
                      f"converged {r['converged']}, {r['wall_s']} s", flush=True)
            f = figures(runs, refs[system])
            result[system] = f
            print(f"\n{system}: reference {f['reference_kt']:.3f} ± {f['reference_err_kt']:.3f} "
                  f"kT ({f['reference_source']})")
            for r in runs:
                z = "—" if r.get("z") is None else f"{r['z']:+.2f}"
                print(f"  seed {r['seed']}: {r['delta_f_kt']} ± {r['err_kt']} kT  z {z}")
            print(f"  mean {f['mean_kt']:.3f} kT, bias {f['bias_kt']:+.3f} kT, "
                  f"|z| ≤ 2: {100 * f['covered_2sigma']:.0f} %, RMS z {f['rms_z']:.2f}\n",
                  flush=True)
    load1 = os.getloadavg()[0]
    result.update(quick=args.quick, seeds=seeds, cores=len(os.sched_getaffinity(0)),
                  seconds=round(time.perf_counter() - t0, 1),
                  load_average=[round(load0, 2), round(load1, 2)], runs_dir=str(out))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
