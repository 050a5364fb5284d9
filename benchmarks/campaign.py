"""Campaign benchmark on lj7 (7-atom LJ argon cluster, 18 K, ΔF = F(coh) − F(pbp)).

Figures:

- **the lj7 example campaign** on the ``local-threads`` site, as the quickstart runs it (until
  its convergence rule stops it): per generation the wall time, the time inside oracle
  calls (union of the label tasks' intervals) and outside them (wall − oracle), the CPU
  seconds of the campaign's process tree, the time inside any task, the orchestration
  overhead (wall − time inside tasks) / wall, the CPU utilisation (CPU seconds of the
  campaign's process tree — the driver, its worker processes and their children, sampled
  every 0.5 s with psutil — divided by wall × cores), each step's time (seed MD, flow
  training, MCMC, estimate per state; committee training; labels), oracle calls and ΔF
  corrected to the oracle against the reference; then the total wall time, calls, ΔF;
- **sites side by side** (``--sites``): generation 0 of the same campaign (with ``--quick``
  its quick settings) on ``local-threads``, ``local-htex`` and ``slurm`` (the local one-node
  Slurm: one non-exclusive block with a worker per core, every step on it), one site after
  the other: each step's time and the generation's wall time. On ``slurm`` the workers are
  not the driver's children; their CPU is counted from the processes whose command line
  names the run directory (Parsl's worker pools) and their children;
- **strategies** (``--strategies``): uncertainty selection against the ``random`` baseline,
  a fixed number of generations each, oracle calls to reach ΔF within 0.1 kT of the
  reference.

The reference ΔF (parallel-tempering MD basin counts on the LJ oracle, independent of
alflow's MLIPs, flows and estimators: ``lj7_reference.best_reference``, the more precise of
``lj7_reference.json`` and the pooled long runs ``lj7_reference_18k.jsonl``) is read unless
``--reference FILE`` names another or ``--compute-reference`` recomputes it.

    python benchmarks/campaign.py [--quick] [--sites local-threads,local-htex,slurm]
                                  [--strategies] [--generations N] [--out DIR]
                                  [--reference FILE | --compute-reference]

``--quick``: the example with a smaller committee training, MD, flows and MCMC, two
generations (a fixed number), the same figures. The machine's load (1-minute average) at the
start and end and its mean over the example's run are printed: figures taken on a shared
machine are upper bounds of the times.
The last line of output is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lj7_reference import QUICK as REFERENCE_QUICK  # noqa: E402
from lj7_reference import best_reference, reference  # noqa: E402

from alflow.campaign.config import KB_EV  # noqa: E402
from alflow.campaign.rundir import read_lines  # noqa: E402
from alflow.examples import write_example  # noqa: E402

TEMPERATURE_K = 18.0
KT_EV = KB_EV * TEMPERATURE_K
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
                 "anneal": {}}
# the local one-node Slurm: one block beside the driver (not exclusive) with a worker per core
SLURM_SITE = {"kind": "slurm", "address": "127.0.0.1", "max_idletime": 600,
              "slurm": {"exclusive": False, "walltime": "01:00:00"},
              "classes": {"gpu": {"cores_per_worker": 1, "slurm": {"cores_per_node": None}}}}


# ----------------------------------------------------------------------------- campaigns
def campaign(out: Path, name: str, quick: bool, generations: int | None = None,
             strategy: str = "uncertainty", site: str = "local-threads") -> Path:
    """Write the lj7 example into ``out/name`` set up for the benchmark; its YAML path.
    ``generations``: a fixed number (no early stop); None: the example's own rule."""
    path = write_example("lj7", out / name)
    data = yaml.safe_load(path.read_text())
    if generations is not None:
        data["convergence"].update(tolerance_kt=1e-9, generations=1,
                                   max_generations=generations, max_labels=100000)
    data["selection"]["strategy"] = strategy
    if quick:
        data["mlip"].update(QUICK_MLIP)
        data["exploration"]["md"].update(QUICK_MD)
        data["exploration"]["sampler"].update(QUICK_SAMPLER)
        data["estimate"]["bootstrap"] = 100
    if strategy == "random":  # plain MD frames only
        data["exploration"]["sampler"]["explore_samples"] = 0
        data["exploration"]["md"]["stop_at_trust_upper"] = False
    data["site"] = site
    if site.endswith("slurm.yaml"):  # every step on the one block
        data["executors"] = {k: "gpu" for k in ("explore", "label", "train", "flows",
                                                 "estimate")}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def slurm_site(out: Path) -> str:
    """A site file for the local Slurm (see ``SLURM_SITE``) with a worker per core."""
    import subprocess

    cores = int(subprocess.run(["sinfo", "-h", "-o", "%c"], capture_output=True, text=True,
                               check=True).stdout.split()[0].rstrip("+"))
    site = json.loads(json.dumps(SLURM_SITE))
    site["classes"]["gpu"]["slurm"]["cores_per_node"] = cores
    site["classes"]["gpu"]["max_workers_per_node"] = cores
    path = out / "slurm.yaml"
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(site))
    return str(path)


def _run(path: str, run_dir: str) -> float:
    """Child process: run the campaign; returns the epoch second it started."""
    from alflow.campaign.runner import start

    t = time.time()
    start(path, run_dir, progress=False)
    return t


class TreeCPU:
    """Samples the CPU seconds (user + system) of a process tree every ``period`` s: the
    descendants of ``root`` plus processes whose command line names ``marker`` (and their
    descendants). ``series``: (epoch s, cumulative CPU s)."""

    def __init__(self, root: int, marker: str, period: float = 0.5):
        self.root, self.marker, self.period = root, marker, period
        self.last: dict[tuple[int, float], float] = {}  # (pid, create_time) -> CPU s
        self.series: list[tuple[float, float]] = []
        self.load: list[float] = []  # the machine's 1-minute load average at each sample
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _procs(self):
        import psutil

        found = {}
        try:
            top = [psutil.Process(self.root)]
        except psutil.Error:
            top = []
        for p in psutil.process_iter(["cmdline"]):
            try:
                if self.marker in " ".join(p.info["cmdline"] or []):
                    top.append(p)
            except psutil.Error:
                continue
        for p in top:
            try:
                for q in [p, *p.children(recursive=True)]:
                    found[q.pid] = q
            except psutil.Error:
                continue
        return found.values()

    def sample(self) -> None:
        import psutil

        for p in self._procs():
            try:
                t = p.cpu_times()
                self.last[(p.pid, p.create_time())] = t.user + t.system
            except psutil.Error:
                continue
        self.series.append((time.time(), sum(self.last.values())))
        self.load.append(os.getloadavg()[0])

    def _loop(self) -> None:
        while not self._stop.wait(self.period):
            self.sample()

    def __enter__(self) -> TreeCPU:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def between(self, a: float, b: float) -> float:
        """CPU seconds used between epoch ``a`` and ``b`` (interpolated)."""
        if not self.series:
            return float("nan")
        t, c = np.array(self.series).T
        return float(np.interp(b, t, c) - np.interp(a, t, c))


def run_measured(path: Path, run_dir: Path) -> tuple[dict, TreeCPU]:
    """Run a campaign in a child process while measuring its process tree's CPU."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        fut = pool.submit(_run, str(path), str(run_dir))
        pid = next(iter(pool._processes))  # the child (no public accessor)
        with TreeCPU(pid, str(run_dir)) as cpu:
            t_start = fut.result()
    return {"t_start": t_start}, cpu


# ----------------------------------------------------------------------------- figures
def union_seconds(spans: list[tuple[float, float]]) -> float:
    total, end = 0.0, -np.inf
    for a, b in sorted(spans):
        if b > end:
            total += b - max(a, end)
            end = b
    return total


def _epoch(event: dict) -> float:
    return datetime.fromisoformat(event["time"].replace("Z", "+00:00")).timestamp()


def generations(run: Path, cpu: TreeCPU | None, cores: int) -> list[dict]:
    """Per generation of the run in ``run``: wall, oracle, tasks, overhead, CPU utilisation,
    step times (s), oracle calls so far, ΔF (kT)."""
    from alflow.dataset import LabelStore

    events = read_lines(run / "events.jsonl")
    t0 = _epoch(events[0]) - events[0]["elapsed_s"]  # epoch of elapsed 0 (±1 s)
    hist = json.loads((run / "status.json").read_text())["history"]
    journal = read_lines(run / "oracle_calls.jsonl")
    labels: dict[int, list[tuple[float, float]]] = {}
    for r in LabelStore(run / "dataset.h5", create=False).records(status=None):
        p = r.provenance
        if p.get("task_t0") is not None:
            labels.setdefault(int(r.tags.get("generation", 0)), []).append(
                (p["task_t0"], p["task_t1"]))
    results = {f.stem.split("-", 1)[1][:16]: json.loads(f.read_text())
               for f in (run / "results").glob("*.json")}
    # a resumed run replays its finished generations (cached tasks, a new decision): each
    # generation's figures are those of its first decision, timed from its own start
    gen, steps, begun = -1, {}, 0.0
    decisions: dict[int, tuple[dict, float]] = {}
    for e in events:
        if e["event"] == "generation_start":
            gen = e["generation"]
            begun = t0 + e["elapsed_s"]
        elif e["event"] == "decision":
            decisions.setdefault(e["generation"], (e, begun))
        elif e["event"] in ("task_done", "task_cached") and e["key"] in results:
            res = results[e["key"]]["result"]
            name = e["task"] + (f" {res['state']}" if "state" in res else
                                f" {res['member']}" if "member" in res else "")
            steps.setdefault(gen, {})[name] = round(res["_t1"] - res["_t0"], 2)
            for part in ("md_seconds", "train_seconds", "mcmc_seconds", "estimate_seconds"):
                if res.get(part) is not None:
                    steps[gen][f"{name} {part.removesuffix('_seconds')}"] = round(res[part], 2)
    out = []
    for h in hist:
        g = int(h["generation"])
        if g not in decisions:
            continue
        d, a = decisions[g]
        b = a + d["wall_s"]
        corrected = h.get("corrected_ev") is not None
        val = h["corrected_ev"] if corrected else h.get("value_ev")
        err = h["corrected_error_ev"] if corrected else h.get("error_ev")
        row = {"generation": g, "wall_s": round(d["wall_s"], 1),
               "oracle_s": round(union_seconds(labels.get(g, [])), 2),
               "task_s": round(d["task_s"], 1),
               "outside_oracle_s": round(d["wall_s"] - union_seconds(labels.get(g, [])), 1),
               "cpu_s": None,
               "overhead_fraction": round((d["wall_s"] - d["task_s"]) / d["wall_s"], 4),
               "cpu_utilisation": None, "steps_s": steps.get(g, {}),
               "labels_s": round(union_seconds(labels.get(g, [])), 2),
               "calls": sum(1 for j in journal if int(j["tags"].get("generation", 0)) <= g),
               "delta_f_kt": None if val is None else round(val / KT_EV, 4),
               "error_kt": None if err is None else round(err / KT_EV, 4),
               "corrected": corrected, "rhat": h.get("rhat")}
        if cpu is not None:
            row["cpu_s"] = round(cpu.between(a, b), 1)
            row["cpu_utilisation"] = round(row["cpu_s"] / (d["wall_s"] * cores), 3)
        out.append(row)
    return out


def print_generations(title: str, rows: list[dict]) -> None:
    print(f"\n{title}")
    print(f"{'gen':>3} {'wall s':>8} {'oracle s':>8} {'other s':>8} {'overhead':>8} "
          f"{'CPU s':>7} {'CPU util':>8} {'calls':>5} {'ΔF kT':>16}")
    for r in rows:
        df = "—" if r["delta_f_kt"] is None else f"{r['delta_f_kt']:.3f} ± {r['error_kt']:.3f}"
        cpu = "—" if r["cpu_utilisation"] is None else f"{100 * r['cpu_utilisation']:.0f} %"
        cpu_s = "—" if r["cpu_s"] is None else f"{r['cpu_s']:.0f}"
        print(f"{r['generation']:>3} {r['wall_s']:>8.1f} {r['oracle_s']:>8.2f} "
              f"{r['outside_oracle_s']:>8.1f} {100 * r['overhead_fraction']:>7.2f}% "
              f"{cpu_s:>7} {cpu:>8} {r['calls']:>5} {df:>16}")
        for k, v in r["steps_s"].items():
            print(f"      {k:<28} {v:>8.2f} s")


def print_sites(table: dict[str, dict]) -> None:
    names = sorted({k for t in table.values() for k in t["steps_s"]})
    sites = list(table)
    print("\ngeneration 0, step times (s) per site")
    print(f"{'step':<28}" + "".join(f"{s:>15}" for s in sites))
    for n in ["wall", "oracle", "cpu utilisation", *names]:
        cells = []
        for s in sites:
            t = table[s]
            v = {"wall": t["wall_s"], "oracle": t["oracle_s"],
                 "cpu utilisation": t["cpu_utilisation"]}.get(n, t["steps_s"].get(n))
            cells.append(f"{'—' if v is None else v:>15}")
        print(f"{n:<28}" + "".join(cells))


# ----------------------------------------------------------------------------- main
def _reference(args: argparse.Namespace) -> dict:
    if args.compute_reference:
        return reference(**(REFERENCE_QUICK if args.quick else {}))
    if args.reference is None:
        return best_reference()
    try:
        return json.loads(args.reference.read_text().strip().splitlines()[-1])
    except (OSError, ValueError, IndexError) as err:
        sys.exit(f"--reference {args.reference}: not the JSON line of lj7_reference.py "
                 f"({err})")


def _strategies(out: Path, gens: int, quick: bool, ref_kt: float) -> dict:
    """Uncertainty selection vs the random baseline, both at once (two processes)."""
    def figures(run: Path) -> dict:
        rows = generations(run, None, 1)
        vals = [r["delta_f_kt"] for r in rows]
        reach = None
        for i in range(len(vals)):
            if all(v is not None and abs(v - ref_kt) <= 0.1 for v in vals[i:]):
                reach = rows[i]["calls"]
                break
        return {"calls": [r["calls"] for r in rows], "delta_f_kt": vals,
                "error_kt": [r["error_kt"] for r in rows], "calls_to_0.1kT": reach}

    paths = {s: campaign(out, f"strategy-{s}", quick, gens, strategy=s)
             for s in ("uncertainty", "random")}
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        futs = [pool.submit(_run, str(p), str(p.parent / "run")) for p in paths.values()]
        for f in futs:
            f.result()
    return {s: figures(p.parent / "run") for s, p in paths.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--sites", default="", help="comma-separated sites for the side-by-side "
                    "generation 0 (local-threads, local-htex, slurm)")
    ap.add_argument("--strategies", action="store_true",
                    help="also compare uncertainty selection with the random baseline")
    ap.add_argument("--generations", type=int, default=None,
                    help="a fixed number of generations (default: the example's rule; "
                         "2 with --quick)")
    ap.add_argument("--out", type=Path, default=None, help="run directories (default: a tmp dir)")
    ap.add_argument("--reference", type=Path, default=None,
                    help="JSON line of lj7_reference.py (default: the most precise on file)")
    ap.add_argument("--compute-reference", action="store_true",
                    help="compute the reference now (with --quick: the short run)")
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="alflow-bench-campaign-"))
    cores = len(os.sched_getaffinity(0))
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    ref = _reference(args)
    ref_kt = ref["delta_f_kt"]
    print("reference", json.dumps(ref), flush=True)
    gens = args.generations or (2 if args.quick else None)

    path = campaign(out, "example", args.quick, gens)
    t = time.perf_counter()
    _, cpu = run_measured(path, path.parent / "run")
    wall = time.perf_counter() - t
    rows = generations(path.parent / "run", cpu, cores)
    status = json.loads((path.parent / "run" / "status.json").read_text())
    print_generations(f"lj7 example on local-threads ({cores} cores): {wall:.1f} s, "
                      f"converged: {status['converged']} ({status['stop_reason']})", rows)
    total_cpu = cpu.series[-1][1] if cpu.series else float("nan")
    last = rows[-1] if rows else {}
    example = {"wall_s": round(wall, 1), "converged": status["converged"],
               "generations": len(rows), "oracle_calls": status["oracle_calls"],
               "delta_f_kt": last.get("delta_f_kt"), "error_kt": last.get("error_kt"),
               "off_reference_kt": None if last.get("delta_f_kt") is None
               else round(last["delta_f_kt"] - ref_kt, 4),
               "cpu_utilisation": round(total_cpu / (wall * cores), 3),
               "cpu_s": round(total_cpu, 1),
               "load_mean": round(float(np.mean(cpu.load)), 2) if cpu.load else None,
               "oracle_s": round(sum(r["oracle_s"] for r in rows), 2),
               "overhead_fraction_max": max((r["overhead_fraction"] for r in rows),
                                            default=None),
               "per_generation": rows}

    sites = {}
    for site in [s for s in args.sites.split(",") if s]:
        name = slurm_site(out) if site == "slurm" else site
        p = campaign(out, f"site-{site}", args.quick, 1, site=name)
        t = time.perf_counter()
        _, c = run_measured(p, p.parent / "run")
        r = generations(p.parent / "run", c, cores)[0]
        r["driver_wall_s"] = round(time.perf_counter() - t, 1)
        sites[site] = r
    if sites:
        print_sites(sites)

    strategies = _strategies(out, gens or 3, args.quick, ref_kt) if args.strategies else None
    if strategies:
        for s, f in strategies.items():
            print(s, json.dumps(f))
    load1 = os.getloadavg()[0]
    print(f"\nload average (1 min) {load0:.2f} at the start, {load1:.2f} at the end, "
          f"{example['load_mean']} on average over the example's run")
    summary = {"system": "lj7", "temperature_k": TEMPERATURE_K, "quick": args.quick,
               "cores": cores, "reference_delta_f_kt": round(ref_kt, 4),
               "reference_error_kt": round(ref["error_kt"], 4), "example": example,
               "sites": {s: {k: v for k, v in r.items() if k != "calls"}
                         for s, r in sites.items()},
               "strategies": strategies, "seconds": round(time.perf_counter() - t0, 1),
               "load_average": [round(load0, 2), round(load1, 2)], "runs": str(out)}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
