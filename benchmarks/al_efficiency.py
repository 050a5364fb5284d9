"""Does alflow's selection save oracle calls? The same campaign with four ways of choosing
what to label, several seeds each, on ag6-xtb (Ag6, GFN1-xTB, 300 K) and lj7 (LJ, 18 K).

Strategies (``selection.strategy``, alflow.select; everything else identical: oracle,
committee, flows, estimator, oracle correction, budget per generation):

- ``alflow``: the campaign's own selection (the default ``selection.strategy``,
  ``uncertainty``): committee force deviation between the trust levels on plain MD frames
  and flow proposals within 3 kT of the MD energies;
- ``free_energy``: plain MD frames and flow proposals ranked by Boltzmann weight ×
  committee energy variance (alflow.select_free_energy);
- ``md_frames``: the same trust window on plain MD frames only (DP-GEN, psiflow);
- ``lowest_energy``: the lowest-energy quarter of the flow proposals (the seed rule of the
  reference Ag6 work);
- ``random``: plain MD frames drawn at random.

Every run has a fixed number of generations (no early stop). Figure per run: the oracle
calls (every calculation, the oracle-correction samples included) at the first generation
from which on the ΔF corrected to the oracle stays within 0.1 kT of the reference with an
error bar of at most 0.1 kT; null if it never does. Per strategy: median and range. The
plot (``al_efficiency.png`` in ``--out``) shows ΔF against oracle calls, one panel per
system, one colour per strategy, one line per seed; ``al_efficiency.json`` holds every run's
trajectory.

References: lj7 ``lj7_reference.best_reference()`` (parallel tempering on the LJ oracle);
ag6-xtb ``benchmarks/ag6_xtb_reference.json`` (umbrella sampling along planarity with MBAR
on GFN1-xTB, ``benchmarks/ag6_xtb_reference.py``), or ``--ag6-reference FILE``.

    python benchmarks/al_efficiency.py [--quick] [--seeds N] [--systems ag6_xtb,lj7]
        [--strategies alflow,free_energy,md_frames,lowest_energy,random] [--generations N]
        [--workers N] [--out DIR]

``--quick``: 2 seeds, smaller committee training, MD and flows, 3 generations. The last line
is one JSON object: per system ``{"reference_kt", "strategies": {name: {"calls_to_target",
"median", ...}}}`` under ``ag6_xtb`` and ``lj7``.
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

from campaign import QUICK_MD, QUICK_MLIP, QUICK_SAMPLER  # noqa: E402
from lj7_reference import best_reference  # noqa: E402

from alflow.examples import write_example  # noqa: E402
from alflow.select import SelectionConfig  # noqa: E402

HERE = Path(__file__).resolve().parent
STRATEGIES = {"alflow": SelectionConfig().strategy, "free_energy": "free_energy",
              "md_frames": "md_frames", "lowest_energy": "lowest_energy", "random": "random"}
SYSTEMS = {"ag6_xtb": "ag6-xtb", "lj7": "lj7"}
REFERENCES = {"ag6_xtb": HERE / "ag6_xtb_reference.json"}
TARGET_KT = 0.1  # |ΔF − reference| and error bar, kT
# --quick (both systems): a shorter committee training, smaller MD and flows
QUICK = {
    "lj7": {"mlip": QUICK_MLIP, "exploration": {"md": QUICK_MD, "sampler": QUICK_SAMPLER},
            "estimate": {"bootstrap": 100}},
    "ag6_xtb": {"mlip": {"epochs": 60, "committee_size": 2},
                "exploration": {"md": {"replicas": 4, "steps": 300},
                                "sampler": {"md_replicas": 8, "md_steps": 600,
                                            "samples": 500, "explore_samples": 100,
                                            "flow": {"layers": 4, "hidden": 32},
                                            "train": {"steps": 200, "batch_size": 128}}},
                "estimate": {"bootstrap": 100}},
}


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out.get(k, {}), v) if isinstance(v, dict) and v else v
    return out


def write_campaign(out: Path, system: str, strategy: str, seed: int, generations: int,
                   quick: bool) -> Path:
    """The system's example in ``out``, set to ``strategy``, ``seed`` and a fixed number of
    ``generations``; its YAML path."""
    path = write_example(SYSTEMS[system], out)
    data = yaml.safe_load(path.read_text())
    data["seed"] = seed
    data["selection"]["strategy"] = STRATEGIES[strategy]
    data["convergence"].update(tolerance_kt=1e-9, generations=1, max_generations=generations,
                               max_labels=100000)
    if quick:
        data = _merge(data, QUICK[system])
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _run(path: str, run_dir: str) -> str | None:
    """Child process: run one campaign (unless ``run_dir`` holds it finished: a rerun with
    the same ``--out`` recomputes the figures only); None or the error that stopped it."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from alflow.campaign.runner import start

    status = Path(run_dir) / "status.json"
    if status.exists() and json.loads(status.read_text()).get("state") == "finished":
        return None

    try:
        start(path, run_dir, progress=False)
    except Exception as err:  # one failed run is a figure (null), not the benchmark's end
        return f"{type(err).__name__}: {err}"
    return None


def calls_to_target(calls: list[int], values: list[float | None], errors: list[float | None],
                    corrected: list[bool], reference_kt: float | None) -> int | None:
    """Oracle calls at the first generation from which on every generation's ΔF is corrected
    to the oracle, within ``TARGET_KT`` of ``reference_kt`` and has an error bar of at most
    ``TARGET_KT`` (kT); None if no such generation."""
    if reference_kt is None:
        return None
    ok = [c and v is not None and e is not None and abs(v - reference_kt) <= TARGET_KT
          and e <= TARGET_KT for v, e, c in zip(values, errors, corrected, strict=True)]
    for i in range(len(ok)):
        if all(ok[i:]):
            return calls[i]
    return None


def run_figures(run: Path, kt_ev: float, reference_kt: float | None) -> dict:
    """One run's trajectory (oracle calls, ΔF kT, error kT, correction to the oracle and its
    error kT per generation) and its figure."""
    from alflow.campaign.rundir import read_lines

    hist = json.loads((run / "status.json").read_text())["history"]
    # oracle calls by the end of each generation, from the journal (one line per calculation;
    # the generations' events repeat when an interrupted run is resumed)
    journal = [int(j["tags"].get("generation", 0))
               for j in read_lines(run / "oracle_calls.jsonl")]
    calls = [sum(1 for g in journal if g <= int(h["generation"])) for h in hist]
    vals, errs, corr, cval, cerr = [], [], [], [], []
    for h in hist:
        cv, ce = h.get("correction_ev"), h.get("correction_error_ev")
        cval.append(None if cv is None else round(cv / kt_ev, 4))
        cerr.append(None if ce is None else round(ce / kt_ev, 4))
        c = h.get("corrected_ev") is not None
        v = h["corrected_ev"] if c else h.get("value_ev")
        e = h["corrected_error_ev"] if c else h.get("error_ev")
        vals.append(None if v is None else round(v / kt_ev, 4))
        errs.append(None if e is None else round(e / kt_ev, 4))
        corr.append(c)
    return {"calls": calls, "delta_f_kt": vals, "error_kt": errs, "corrected": corr,
            "correction_kt": cval, "correction_error_kt": cerr,
            "calls_to_target": calls_to_target(calls, vals, errs, corr, reference_kt)}


def picks(run: Path, kt_ev: float) -> dict:
    """What a run labelled by selection (every generation after the first): how many picks,
    the share that were flow proposals, and the median of each pick's committee energy above
    the highest energy of its state's MD frames, kT (negative: inside the MD range)."""
    from alflow.select import fingerprint

    explored: dict[str, list[tuple[str, dict]]] = {}
    for j in (run / "results").glob("explore-*.json"):
        explored.setdefault("all", []).append(
            (json.loads(j.read_text())["result"]["state"], dict(np.load(j.with_suffix(".npz")))))
    flow, above = [], []
    for j in (run / "results").glob("select-*.json"):
        res = json.loads(j.read_text())["result"]
        npz = j.with_suffix(".npz")
        chosen = np.load(npz)["positions"] if npz.exists() else np.zeros((0,))
        for x, state in zip(chosen, res["states"], strict=True):
            for st, a in explored.get("all", []):
                if st != state:
                    continue
                d = np.abs(fingerprint(a["positions"]) - fingerprint(x)).max(-1)
                i = int(d.argmin())
                if d[i] > 1e-9:
                    continue
                md = a["energy"][~a["from_flow"]]
                flow.append(bool(a["from_flow"][i]))
                above.append(float((a["energy"][i] - md.max()) / kt_ev) if len(md) else np.nan)
                break
    return {"picks": len(flow), "flow_share": round(float(np.mean(flow)), 3) if flow else None,
            "median_above_md_kt": round(float(np.nanmedian(above)), 2) if above else None}


def summary(runs: list[dict]) -> dict:
    """Median and range of calls to target over seeds (a run that never reaches it counts
    as infinitely many: the median is null when half or more never do)."""
    reach = [r["calls_to_target"] for r in runs]
    x = np.array([np.inf if c is None else c for c in reach], dtype=float)
    med = float(np.median(x)) if len(x) else float("inf")
    done = x[np.isfinite(x)]
    return {"calls_to_target": reach, "median": med if np.isfinite(med) else None,
            "range": [float(done.min()), float(done.max())] if len(done) else None,
            "reached": int(len(done)), "runs": len(x)}


def plot(results: dict, path: Path) -> None:
    """ΔF (kT) against oracle calls, one panel per system, one colour per strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = list(results)
    fig, axes = plt.subplots(1, len(systems), figsize=(6 * len(systems), 4.5), squeeze=False)
    colours = dict(zip(STRATEGIES, ("C3", "C1", "C0", "C2", "C7"), strict=True))
    for ax, system in zip(axes[0], systems, strict=True):
        res = results[system]
        ref = res["reference_kt"]
        if ref is not None:
            ax.axhspan(ref - TARGET_KT, ref + TARGET_KT, color="0.85",
                       label="reference ± 0.1 kT")
            ax.axhline(ref, color="k", lw=0.8)
        for name, st in res["strategies"].items():
            for i, run in enumerate(st["runs_detail"]):
                pts = [(c, v, e) for c, v, e in zip(run["calls"], run["delta_f_kt"],
                                                    run["error_kt"], strict=True)
                       if v is not None]
                if not pts:
                    continue
                c, v, e = map(np.array, zip(*pts, strict=True))
                ax.errorbar(c, v, yerr=e, color=colours[name], marker="o", ms=3, lw=1,
                            capsize=2, alpha=0.8, label=name if i == 0 else None)
        ax.set_xlabel("oracle calls")
        ax.set_ylabel("ΔF corrected to the oracle (kT)")
        ax.set_title(f"{system}: reference {ref:.2f} kT" if ref is not None
                     else f"{system}: no reference")
        if ref is not None:
            ax.set_ylim(ref - 3, ref + 3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _reference(system: str, path: Path) -> dict:
    """The reference's JSON line; without the file, no reference (the runs still give their
    ΔF against oracle calls, calls to target are null); a file that is not one: exit 2."""
    if not path.exists():
        print(f"{system}: no reference ({path} does not exist): calls to target are null",
              flush=True)
        return {"delta_f_kt": None}
    try:
        ref = json.loads(path.read_text().strip().splitlines()[-1])
        float(ref["delta_f_kt"])
    except (OSError, ValueError, IndexError, KeyError, TypeError) as err:
        print(f"{system} reference {path}: not the JSON line of its reference benchmark "
              f"({err})", file=sys.stderr)
        sys.exit(2)
    return ref


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 seeds, small settings")
    ap.add_argument("--seeds", type=int, help="seeds per strategy (default 5, --quick 2)")
    ap.add_argument("--systems", default="ag6_xtb,lj7")
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--generations", type=int, help="per run (default 5, --quick 3)")
    ap.add_argument("--workers", type=int, default=1, help="campaigns at once")
    ap.add_argument("--out", type=Path, help="run directories (default: a tmp dir)")
    ap.add_argument("--ag6-reference", type=Path, default=REFERENCES["ag6_xtb"])
    ap.add_argument("--lj7-reference", type=Path, default=None,
                    help="JSON line of lj7_reference.py (default: the most precise on file)")
    args = ap.parse_args()
    systems = [s for s in args.systems.split(",") if s]
    names = [s for s in args.strategies.split(",") if s]
    for s in systems:
        if s not in SYSTEMS:
            ap.error(f"--systems: unknown system {s!r} (expected {', '.join(SYSTEMS)})")
    for s in names:
        if s not in STRATEGIES:
            ap.error(f"--strategies: unknown strategy {s!r} (expected "
                     f"{', '.join(STRATEGIES)})")
    seeds = args.seeds or (2 if args.quick else 5)
    gens = args.generations or (3 if args.quick else 5)
    out = args.out or Path(tempfile.mkdtemp(prefix="alflow-al-efficiency-"))
    out.mkdir(parents=True, exist_ok=True)
    refs = {"ag6_xtb": _reference("ag6_xtb", args.ag6_reference) if "ag6_xtb" in systems
            else None, "lj7": (_reference("lj7", args.lj7_reference) if args.lj7_reference
                    else best_reference()) if "lj7" in systems
            else None}
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    jobs = {}
    for sy in systems:
        for st in names:
            for seed in range(seeds):
                d = out / sy / f"{st}-seed{seed}"
                # a campaign written before (an interrupted or finished run) is resumed
                jobs[(sy, st, seed)] = (d / "campaign.yaml" if (d / "campaign.yaml").exists()
                                        else write_campaign(d, sy, st, seed, gens, args.quick))
    errors: dict[tuple, str | None] = {}
    with ProcessPoolExecutor(args.workers,
                             mp_context=multiprocessing.get_context("spawn")) as pool:
        futs = {k: pool.submit(_run, str(p), str(p.parent / "run")) for k, p in jobs.items()}
        for k, f in futs.items():
            errors[k] = f.result()
            print(f"{k[0]} {k[1]} seed {k[2]}: {errors[k] or 'done'} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    results: dict[str, dict] = {}
    from alflow.campaign.config import KB_EV

    for sy in systems:
        ref_kt = refs[sy]["delta_f_kt"]
        kt_ev = KB_EV * float(refs[sy].get("temperature_k", 300.0 if sy == "ag6_xtb" else 18.0))
        strat = {}
        for st in names:
            runs = []
            for seed in range(seeds):
                run = jobs[(sy, st, seed)].parent / "run"
                try:
                    fig = run_figures(run, kt_ev, ref_kt)
                except (OSError, ValueError, KeyError) as err:
                    fig = {"calls": [], "delta_f_kt": [], "error_kt": [], "corrected": [],
                           "calls_to_target": None, "error": str(err)}
                fig["seed"] = seed
                fig["failed"] = errors[(sy, st, seed)]
                try:
                    fig["labelled"] = picks(run, kt_ev)
                except (OSError, ValueError, KeyError) as err:
                    fig["labelled"] = {"error": str(err)}
                runs.append(fig)
            strat[st] = {**summary(runs), "runs_detail": runs}
        results[sy] = {"reference_kt": None if ref_kt is None else round(ref_kt, 4),
                       "reference_error_kt": refs[sy].get("error_kt"), "strategies": strat}
    (out / "al_efficiency.json").write_text(json.dumps(results, indent=1))
    plot(results, out / "al_efficiency.png")
    load1 = os.getloadavg()[0]
    for sy, res in results.items():
        print(f"\n{sy}: reference {res['reference_kt']} kT; oracle calls until ΔF stays "
              f"within {TARGET_KT} kT with error ≤ {TARGET_KT} kT ({seeds} seeds, {gens} "
              "generations)")
        for st, s in res["strategies"].items():
            last = [r["delta_f_kt"][-1] if r["delta_f_kt"] else None
                    for r in s["runs_detail"]]
            print(f"  {st:<14} median {s['median']}  range {s['range']}  per seed "
                  f"{s['calls_to_target']}  final ΔF {last}")
            for r in s["runs_detail"]:
                lab = r.get("labelled", {})
                print(f"      seed {r['seed']}: ΔF {r['delta_f_kt']} ± {r['error_kt']} kT at "
                      f"{r['calls']} calls; correction {r.get('correction_kt')} ± "
                      f"{r.get('correction_error_kt')} kT; selected {lab.get('picks')}, "
                      f"flow proposals {lab.get('flow_share')}, median energy above the "
                      f"state's MD frames {lab.get('median_above_md_kt')} kT")
    print(f"\nplot {out / 'al_efficiency.png'}; load average (1 min) {load0:.2f} at the start, "
          f"{load1:.2f} at the end; {time.perf_counter() - t0:.0f} s")
    line = {sy: {"reference_kt": res["reference_kt"],
                 "strategies": {st: {k: v for k, v in s.items() if k != "runs_detail"}
                                for st, s in res["strategies"].items()}}
            for sy, res in results.items()}
    for sy in SYSTEMS:  # both keys, null for a system not run
        line.setdefault(sy, None)
    line.update(quick=args.quick, seeds=seeds, generations=gens,
                seconds=round(time.perf_counter() - t0, 1),
                load_average=[round(load0, 2), round(load1, 2)], runs=str(out))
    print(json.dumps(line))


if __name__ == "__main__":
    main()
