"""Campaign benchmark on lj7: oracle calls to reach ΔF within 0.1 kT of the converged value,
uncertainty selection vs a baseline taking random plain-MD frames; orchestration overhead per
generation (wall time minus time inside steps, over wall time).

    python benchmarks/campaign.py [--quick] [--out DIR]

``--quick`` shrinks the models, MD and budgets (same figures, minutes). The last line of
output is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from alflow.campaign.config import KB_EV
from alflow.campaign.rundir import read_lines
from alflow.campaign.runner import start
from alflow.examples import write_example

QUICK = {
    "mlip": {"cutoff": 9.0, "committee_size": 2, "epochs": 40, "dtype": "float64",
             "builtin": {"features": 8, "layers": 1, "radial_hidden": 16, "readout_hidden": 16}},
    "exploration": {"bootstrap": {"displaced": 4, "displacement": 0.08},
                    "md": {"replicas": 4, "steps": 300, "dt_fs": 10.0, "record_every": 20},
                    "sampler": {"md_replicas": 4, "md_steps": 600, "md_record_every": 10,
                                "samples": 1000, "flow": {"layers": 4, "hidden": 32},
                                "train": {"steps": 300}}},
    "selection": {"budget": 8},
    "estimate": {"reweight_samples": 4, "bootstrap": 50},
    "convergence": {"max_generations": 4},
}


def campaign(tmp: Path, quick: bool, strategy: str) -> Path:
    path = write_example("lj7", tmp / strategy)
    data = yaml.safe_load(path.read_text())
    if quick:
        for k, v in QUICK.items():
            data[k] = {**data.get(k, {}), **v}
    # run a fixed number of generations so both strategies get the same chances
    data["convergence"].update(tolerance_kt=1e-9, generations=1)
    data["selection"]["strategy"] = strategy
    path.write_text(yaml.safe_dump(data))
    return path


def figures(run: Path, kt: float) -> dict:
    hist = json.loads((run / "status.json").read_text())["history"]
    journal = read_lines(run / "oracle_calls.jsonl")
    calls = [sum(1 for j in journal if int(j["tags"].get("generation", 0)) <= h["generation"])
             for h in hist]
    values = [h.get("corrected_ev") if h.get("corrected_ev") is not None else h.get("value_ev")
              for h in hist]
    decisions = [e for e in read_lines(run / "events.jsonl") if e["event"] == "decision"]
    overhead = [(d["wall_s"] - d["task_s"]) / d["wall_s"] for d in decisions if d["wall_s"] > 0]
    return {"calls": calls, "delta_f_ev": values,
            "errors_ev": [h.get("error_ev") for h in hist],
            "overhead_fraction_mean": float(np.mean(overhead)) if overhead else None,
            "overhead_fraction_max": float(np.max(overhead)) if overhead else None}


def calls_to_reach(fig: dict, target: float, tol: float) -> int | None:
    """Oracle calls at the first generation from which ΔF stays within tol of target."""
    vals = fig["delta_f_ev"]
    for i in range(len(vals)):
        if all(v is not None and abs(v - target) <= tol for v in vals[i:]):
            return fig["calls"][i]
    return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="alflow-bench-campaign-"))
    t0 = time.perf_counter()
    res = {}
    for strategy in ("uncertainty", "random"):
        path = campaign(out, args.quick, strategy)
        t = time.perf_counter()
        start(path, out / strategy / "run", progress=False)
        res[strategy] = figures(out / strategy / "run", 18.0 * KB_EV)
        res[strategy]["seconds"] = time.perf_counter() - t
        print(strategy, json.dumps(res[strategy]), flush=True)
    kt = 18.0 * KB_EV
    final = res["uncertainty"]["delta_f_ev"][-1]
    summary = {
        "system": "lj7", "temperature_k": 18.0, "quick": args.quick,
        "converged_delta_f_ev": final,
        "oracle_calls_to_0.1kT": {s: calls_to_reach(res[s], final, 0.1 * kt) if final is not None
                                  else None for s in res},
        "oracle_calls_total": {s: res[s]["calls"][-1] if res[s]["calls"] else 0 for s in res},
        "overhead_fraction_mean": res["uncertainty"]["overhead_fraction_mean"],
        "overhead_fraction_max": res["uncertainty"]["overhead_fraction_max"],
        "seconds": time.perf_counter() - t0, "runs": str(out)}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
