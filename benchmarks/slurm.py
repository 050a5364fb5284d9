"""Benchmark alflow's Slurm path on the local one-node Slurm (scripts/start-local-slurm).

Figures (last line of output is one JSON object):
- ``cold_start_s``: ``parsl.load`` of the ``slurm`` site -> first result (sbatch, block start,
  worker pool connecting back to the interchange).
- ``task_latency_ms``: median round trip of a no-op task through a running block (submit ->
  result, one at a time), and ``throughput_tasks_per_s`` for a burst of no-op tasks.
- ``labelling_pyscf``: the same 16 PySCF labels (water; PBE/def2-SVP; --quick: 8, STO-3G) one
  label per worker vs one MPI batch over the block's cores (see :func:`pyscf_modes`).
- ``labelling``: 16 labels (ASE EMT on a 13-atom Cu cluster plus ``--cost`` s of sleep standing
  in for a DFT calculation), one label per worker, one worker per core of the block:
  ``utilisation_steady`` = busy core-seconds / (workers x span from the first task start to the
  last task end) and ``utilisation_block`` = busy core-seconds / allocated core-seconds of the
  whole block job (from Slurm's StartTime/EndTime, including startup and scale-in).

    eval "$(scripts/start-local-slurm)"; python benchmarks/slurm.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import parsl  # noqa: E402
from parsl import python_app  # noqa: E402

from alflow.campaign.sites import build_config, load_site, parsl_session  # noqa: E402


@python_app(executors=["cpu"])
def noop(i):
    return i


@python_app(executors=["dft"])
def label_emt(seed, cost_s):
    """One 'label': EMT energy and forces of a rattled Cu13 cluster + cost_s of emulated DFT."""
    import time

    import numpy as np
    from ase.calculators.emt import EMT
    from ase.cluster import Icosahedron

    t0 = time.time()
    atoms = Icosahedron("Cu", 2)
    atoms.rattle(0.05, seed=seed)
    atoms.calc = EMT()
    e = float(atoms.get_potential_energy())
    f = np.asarray(atoms.get_forces())
    time.sleep(cost_s)
    return {"energy": e, "fmax": float(np.abs(f).max()), "start": t0, "end": time.time(),
            "job": __import__("os").environ.get("SLURM_JOB_ID")}


def _slurm_times(job: str) -> tuple[float, float] | None:
    out = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
    fields = dict(kv.split("=", 1) for kv in out.split() if "=" in kv)
    try:
        start = datetime.fromisoformat(fields["StartTime"]).timestamp()
        end = datetime.fromisoformat(fields["EndTime"]).timestamp()
    except (KeyError, ValueError):
        return None
    return start, end


def pyscf_modes(method: str, n: int, cores: int, common: dict, run_dir: Path) -> dict:
    """The same n PySCF labels (rattled water) one label per worker vs one MPI batch task.

    Utilisation = sum of the labels' own wall times / (cores x wall time of the batch), the
    block already running (a one-label warm-up first); the MPI figure includes the srun start
    and every rank's Python imports, which a batch pays each time.
    """
    from ase.build import molecule

    from alflow.campaign.sites import load_site_model, mpi_resource_spec
    from alflow.dataset import LabelStore
    from alflow.labelling import make_labeller
    from apps.labelling import label_configs, label_configs_mpi

    def water(seed: int):
        a = molecule("H2O")
        a.rattle(0.05, seed=seed)
        return a

    images = [water(i) for i in range(n)]
    lab = make_labeller(method, threads=1)
    init = common["worker_init"] + "\nexport OMP_NUM_THREADS=1"
    out = {"method": method, "labels": n, "cores": cores}
    cfg = load_site("slurm", run_dir / "htex", {
        **common, "worker_init": init, "slurm.cores_per_node": cores,
        "classes.dft": {"cores_per_worker": 1, "max_workers_per_node": cores}})
    with parsl_session(cfg):
        store = LabelStore(run_dir / "htex.h5")
        label_configs([water(1000)], lab, store)
        t = time.perf_counter()
        recs = label_configs(images, lab, store)
        wall = time.perf_counter() - t
    busy = sum(r.provenance.get("wall_time_s", 0.0) for r in recs)
    out["per_worker"] = {"wall_s": round(wall, 2), "utilisation": round(busy / (cores * wall), 4),
                         "ok": sum(r.status == "ok" for r in recs)}
    site = load_site_model("slurm", {
        **common, "worker_init": init, "slurm.cores_per_node": cores,
        "classes.dft": {"executor": "mpi", "ranks_per_node": cores, "nodes_per_task": 1}})
    spec = mpi_resource_spec(site, "dft")
    with parsl_session(build_config(site, run_dir / "mpi")):
        store = LabelStore(run_dir / "mpi.h5")
        label_configs_mpi([water(1000)], lab, store, run_dir / "mpi-work", resource_spec=spec,
                          threads=1)
        t = time.perf_counter()
        recs = label_configs_mpi(images, lab, store, run_dir / "mpi-work", resource_spec=spec,
                                 threads=1)
        wall = time.perf_counter() - t
    busy = sum(r.provenance.get("wall_time_s", 0.0) for r in recs)
    out["mpi_batch"] = {"wall_s": round(wall, 2), "utilisation": round(busy / (cores * wall), 4),
                        "ok": sum(r.status == "ok" for r in recs), "ranks": cores}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (< 2 min)")
    ap.add_argument("--cost", type=float, default=None, help="s of emulated DFT per label")
    args = ap.parse_args()
    n_lat = 20 if args.quick else 100
    cost = args.cost if args.cost is not None else (1.0 if args.quick else 3.0)
    n_labels = 16
    cores = int(subprocess.run(["sinfo", "-h", "-o", "%c"], capture_output=True,
                               text=True, check=True).stdout.split()[0].rstrip("+"))
    run_dir = Path(tempfile.mkdtemp(prefix="alflow-bench-slurm-"))
    os.environ["PYTHONPATH"] = f"{Path(__file__).parent}:{os.environ.get('PYTHONPATH', '')}"
    common = {"address": "127.0.0.1", "strategy_period": 0.5, "max_idletime": 1,
              "slurm.partition": "debug", "slurm.walltime": "00:20:00", "slurm.exclusive": False,
              "worker_init": f"export PYTHONPATH={Path(__file__).parent}:$PYTHONPATH"}

    # 1. latency through the SlurmProvider (cpu class, one core)
    cfg = load_site("slurm", run_dir / "latency", {**common, "slurm.cores_per_node": 1})
    t0 = time.perf_counter()
    with parsl_session(cfg):
        noop(0).result(timeout=300)
        cold = time.perf_counter() - t0
        lat = []
        for i in range(n_lat):
            t = time.perf_counter()
            noop(i).result(timeout=60)
            lat.append(time.perf_counter() - t)
        t = time.perf_counter()
        futs = [noop(i) for i in range(10 * n_lat)]
        [f.result(timeout=120) for f in futs]
        burst = 10 * n_lat / (time.perf_counter() - t)

    # 2. labelling utilisation (dft class, one worker per core of one block)
    cfg = load_site("slurm", run_dir / "labelling", {
        **common, "slurm.cores_per_node": cores,
        "classes.dft": {"cores_per_worker": 1, "max_workers_per_node": cores}})
    with parsl_session(cfg):
        res = [f.result(timeout=600) for f in [label_emt(i, cost) for i in range(n_labels)]]
        job = res[0]["job"]
    time.sleep(1.0)
    busy = sum(r["end"] - r["start"] for r in res)
    span = max(r["end"] for r in res) - min(r["start"] for r in res)
    times = _slurm_times(job)
    block_s = (times[1] - times[0]) if times else None
    out = {
        "benchmark": "slurm", "quick": args.quick, "cores": cores, "parsl": parsl.__version__,
        "cold_start_s": round(cold, 2),
        "task_latency_ms": round(1e3 * statistics.median(lat), 1),
        "task_latency_p90_ms": round(1e3 * sorted(lat)[int(0.9 * len(lat)) - 1], 1),
        "throughput_tasks_per_s": round(burst, 1),
        "labelling": {
            "labels": n_labels, "cost_s": cost, "workers": cores,
            "utilisation_steady": round(busy / (cores * span), 4),
            "utilisation_block": round(busy / (cores * block_s), 4) if block_s else None,
            "block_s": block_s, "span_s": round(span, 2),
            "distinct_jobs": len({r["job"] for r in res}),
        },
    }
    method = "pyscf:pbe/sto-3g" if args.quick else "pyscf:pbe/def2-svp"
    out["labelling_pyscf"] = pyscf_modes(method, 8 if args.quick else n_labels, cores, common,
                                         run_dir / "pyscf")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
