"""Campaign benchmark on lj7 (7-atom LJ argon cluster, 18 K, ΔF = F(coh) − F(pbp)).

Figures:

- the reference ΔF on the oracle surface (plain LJ), by direct counting of quench basins in
  parallel-tempering MD (benchmarks/lj7_reference.py; independent of alflow's MLIPs, flows
  and estimators);
- the lj7 example campaign run for a fixed number of generations twice: ``uncertainty``
  selection (trust window on the committee's force deviation, flow samples among the
  candidates) and the ``random`` baseline (plain-MD frames, no stop at the trust level, no
  flow candidates, picked uniformly at random); per generation the oracle calls so far
  (every calculation, repeats included) and ΔF corrected to the oracle with its error;
- oracle calls to reach ΔF within 0.1 kT of the reference: the calls made by the end of the
  first generation from which every later ΔF stays within 0.1 kT (None: not reached);
- orchestration overhead per generation: (wall − time inside tasks) / wall, the time inside
  tasks being the union of the intervals during which at least one step or label ran.

    python benchmarks/campaign.py [--quick] [--generations N] [--out DIR]
                                  [--reference FILE | --compute-reference]

The reference is read from ``benchmarks/lj7_reference.json`` (the JSON line of a full
``python benchmarks/lj7_reference.py`` run, 554 s) unless ``--reference FILE`` names another
or ``--compute-reference`` recomputes it (with ``--quick``: the short, biased run). The two
campaigns run at the same time in two processes (each runs its states' flows one after the
other on the local-threads site: together they use two cores).

``--quick``: the example with a smaller committee training, MD, flows and MCMC, two
generations; same figures (134-143 s measured on 2 cores shared at load 2-4.7, about 140 s
of CPU: near 75 s on 2 idle cores). The last line of output is one JSON object with the
figures.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lj7_reference import QUICK as REFERENCE_QUICK  # noqa: E402
from lj7_reference import reference  # noqa: E402

from alflow.campaign.config import KB_EV  # noqa: E402
from alflow.campaign.rundir import read_lines  # noqa: E402
from alflow.campaign.runner import start  # noqa: E402
from alflow.examples import write_example  # noqa: E402

TEMPERATURE_K = 18.0
REFERENCE = Path(__file__).resolve().parent / "lj7_reference.json"
# --quick: the example's campaign with a shorter committee training and smaller MD, flows
# and MCMC (fewer bootstrap labels or epochs leave a committee so rough that the flows'
# MD seeds leave their basins: no estimate at all)
QUICK_MLIP = {"epochs": 40, "polish_steps": 150}
QUICK_MD = {"replicas": 4, "steps": 200}
QUICK_SAMPLER = {"md_replicas": 4, "md_steps": 200, "samples": 300, "explore_samples": 100,
                 "train": {"steps": 40, "batch_size": 128},
                 "mcmc": {"walkers": 16, "retrain_steps": 10, "iterations": 3,
                          "adapt_iterations": 1, "local_steps": 5, "global_steps": 2,
                          "step_size": 0.1, "train_every": 2, "train": {"steps": 5}},
                 "anneal": {}}  # plain IS in quick mode: annealing costs ~30 % of a flows step


def campaign(out: Path, strategy: str, generations: int, quick: bool) -> Path:
    """Write the lj7 example into ``out/strategy`` set up for the benchmark; its YAML path."""
    path = write_example("lj7", out / strategy)
    data = yaml.safe_load(path.read_text())
    # a fixed number of generations (no early stop) so both strategies get the same chances
    data["convergence"].update(tolerance_kt=1e-9, generations=1, max_generations=generations,
                               max_labels=100000)
    data["selection"]["strategy"] = strategy
    if quick:
        data["mlip"].update(QUICK_MLIP)
        data["exploration"]["md"].update(QUICK_MD)
        data["exploration"]["sampler"].update(QUICK_SAMPLER)
        data["estimate"]["bootstrap"] = 100
    if strategy == "random":  # plain MD frames only
        data["exploration"]["sampler"]["explore_samples"] = 0
        data["exploration"]["md"]["stop_at_trust_upper"] = False
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def figures(run: Path, kt: float) -> dict:
    """Per generation: oracle calls so far, ΔF (corrected to the oracle when available) and
    its error in kT, overhead fraction."""
    hist = json.loads((run / "status.json").read_text())["history"]
    journal = read_lines(run / "oracle_calls.jsonl")
    calls = [sum(1 for j in journal if int(j["tags"].get("generation", 0)) <= h["generation"])
             for h in hist]

    def kt_or_none(x: float | None) -> float | None:
        return None if x is None else round(x / kt, 4)

    corrected = [h.get("corrected_ev") is not None for h in hist]
    values = [h["corrected_ev"] if c else h.get("value_ev") for h, c in zip(hist, corrected,
                                                                           strict=True)]
    errors = [h["corrected_error_ev"] if c else h.get("error_ev") for h, c in zip(
        hist, corrected, strict=True)]
    decisions = [e for e in read_lines(run / "events.jsonl") if e["event"] == "decision"]
    overhead = [(d["wall_s"] - d["task_s"]) / d["wall_s"] for d in decisions if d["wall_s"] > 0]
    return {"calls": calls, "delta_f_kt": [kt_or_none(v) for v in values],
            "error_kt": [kt_or_none(e) for e in errors], "corrected": corrected,
            "model_delta_f_kt": [kt_or_none(h.get("value_ev")) for h in hist],
            "rhat": [h.get("rhat") for h in hist],
            "wall_s": [d["wall_s"] for d in decisions],
            "overhead_fraction": [round(o, 4) for o in overhead]}


def calls_to_reach(fig: dict, target_kt: float, tol_kt: float = 0.1) -> int | None:
    """Oracle calls by the end of the first generation from which ΔF stays within ``tol_kt``
    of ``target_kt`` (None if the last generation is not within it)."""
    vals = fig["delta_f_kt"]
    for i in range(len(vals)):
        if all(v is not None and abs(v - target_kt) <= tol_kt for v in vals[i:]):
            return fig["calls"][i]
    return None


def run_strategy(out: Path, strategy: str, generations: int, quick: bool, kt: float,
                 reference_kt: float) -> dict:
    """Run one strategy's campaign (in its own process: one Parsl DataFlowKernel each) and
    return its figures."""
    path = campaign(out, strategy, generations, quick)
    t = time.perf_counter()
    start(path, out / strategy / "run", progress=False)
    fig = figures(out / strategy / "run", kt)
    fig["seconds"] = round(time.perf_counter() - t, 1)
    fig["calls_to_0.1kT"] = calls_to_reach(fig, reference_kt)
    final = fig["delta_f_kt"][-1]
    fig["final_off_kt"] = None if final is None else round(final - reference_kt, 4)
    return fig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--generations", type=int, default=None,
                    help="generations per campaign (default 2 with --quick, else 5)")
    ap.add_argument("--out", type=Path, default=None, help="run directories (default: a tmp dir)")
    ap.add_argument("--reference", type=Path, default=REFERENCE,
                    help="JSON line of an earlier `python benchmarks/lj7_reference.py` run "
                         f"(default: {REFERENCE.name}, the full run)")
    ap.add_argument("--compute-reference", action="store_true",
                    help="compute the reference now (with --quick: the short run)")
    args = ap.parse_args()
    gens = args.generations or (2 if args.quick else 5)
    out = args.out or Path(tempfile.mkdtemp(prefix="alflow-bench-campaign-"))
    kt = KB_EV * TEMPERATURE_K
    t0 = time.perf_counter()
    if args.compute_reference:
        ref = reference(**(REFERENCE_QUICK if args.quick else {}))
    else:
        try:
            ref = json.loads(args.reference.read_text().strip().splitlines()[-1])
        except (OSError, ValueError, IndexError) as err:
            sys.exit(f"--reference {args.reference}: not the JSON line of lj7_reference.py "
                     f"({err})")
    print("reference", json.dumps(ref), flush=True)
    # the uncertainty campaign in a child process, the baseline in this one, at the same time
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        job = pool.submit(run_strategy, out, "uncertainty", gens, args.quick, kt,
                          ref["delta_f_kt"])
        baseline = run_strategy(out, "random", gens, args.quick, kt, ref["delta_f_kt"])
        res = {"uncertainty": job.result(), "random": baseline}
    for strategy, fig in res.items():
        print(strategy, json.dumps(fig), flush=True)
    overhead = [o for s in res.values() for o in s["overhead_fraction"]]
    summary = {
        "system": "lj7", "temperature_k": TEMPERATURE_K, "quick": args.quick,
        "generations": gens,
        "reference_delta_f_kt": round(ref["delta_f_kt"], 4),
        "reference_error_kt": round(ref["error_kt"], 4),
        "reference": f"parallel-tempering MD basin counts on the LJ oracle ({ref['chains']} "
                     f"chains x {ref['steps']} steps, {ref['frames']} frames)",
        "oracle_calls_to_0.1kT": {s: r["calls_to_0.1kT"] for s, r in res.items()},
        "oracle_calls_total": {s: r["calls"][-1] if r["calls"] else 0 for s, r in res.items()},
        "final_delta_f_kt": {s: r["delta_f_kt"][-1] for s, r in res.items()},
        "final_error_kt": {s: r["error_kt"][-1] for s, r in res.items()},
        "overhead_fraction_mean": round(float(np.mean(overhead)), 4) if overhead else None,
        "overhead_fraction_max": round(float(np.max(overhead)), 4) if overhead else None,
        "seconds": round(time.perf_counter() - t0, 1), "load_average": list(os.getloadavg()),
        "runs": str(out)}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
