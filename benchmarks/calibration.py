"""Calibration of the campaign's answer: do its error bars hold?

Per system (the ``lj7`` and ``ag6_emt`` examples), independent campaigns that differ only in
their ``seed`` run until their convergence rule stops them; the answer of each is the last
generation's ΔF corrected to the oracle, with its error. Against an independent reference
on the oracle itself (basin counts by MD, no flows, no MLIP), per system: the mean corrected
ΔF and its bias, every seed's z-score (ΔF − reference) / √(σ² + σ_ref²), the fraction with
|z| ≤ 2 and the RMS z. Goals (issue 22): |bias| ≤ 0.03 kT, ≥ 90 % of seeds with |z| ≤ 2,
RMS z in [0.7, 1.3].

References, by the campaign's own state definition (alflow.states.BasinStates: quench
stopped at 5e-4 eV/Å, matched within 0.05 Å): lj7 at 18 K from the parallel-tempering basin
counts of ``benchmarks/lj7_reference.py --long`` (``lj7_reference_18k.jsonl``, the quench
stopped as the campaign's; ``lj7_reference.best_reference("campaign")``), with the z-scores
against the full-quench basin (``best_reference()``, 0.016 kT lower) alongside; Ag6/EMT at
300 K from ``ag6_emt_reference.json`` (``benchmarks/ag6_emt_reference.py``, BasinStates on
EMT). Each run also reports its stages: the committee's ΔF, the correction to the oracle,
per state the BAR estimate against the flow's importance sampling, and for lj7 how far
the last committee moves the basins (:func:`basin_shift`: frames of the oracle assigned on
the committee and on LJ itself; ``--no-basin-check`` skips it); with ``--repeat-flows K``
the last flows step rerun K times on its committee (:func:`repeat_flows`), which splits the
committee-side error into the draw's noise and the estimator's bias.

    python benchmarks/calibration.py [--quick] [--seeds 8] [--first-seed 0]
                                     [--systems lj7,ag6_emt] [--generations N] [--out DIR]
                                     [--repeat-flows K]

Full: 8 seeds per system, the examples' own settings and convergence rules (lj7: the
quickstart, 5-7 min per seed on an idle 2-core CPU, up to 30 min when it does not converge).
``--quick``: 2 seeds, the examples with small budgets and one generation (a smoke test of
every figure: its answers are far from converged and its z-scores mean little). Campaigns
run one after the other, each in a child process; with ``--out DIR`` a seed whose run in DIR
has finished is read, not run again, so seeds accumulate over several invocations. Every
run counts, converged or not (``converged`` per run; the figures also over the converged
ones). The last line is one JSON object with the figures and the load.
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
    """name -> {"delta_f_kt", "error_kt", "source"} by the campaign's state definition, and
    for lj7 ``full``: the same for the full-quench basin."""
    r, full = best_reference("campaign"), best_reference()
    out = {"lj7": {"delta_f_kt": r["delta_f_kt"], "error_kt": r["error_kt"],
                   "source": r["source"],
                   "full": {"delta_f_kt": full["delta_f_kt"], "error_kt": full["error_kt"],
                            "source": full["source"]}}}
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


def _run(path: str | None, run_dir: str) -> None:
    """Child process: run the campaign to its end (``path`` None: resume ``run_dir``)."""
    from alflow.campaign.runner import resume, start

    if path is None:
        resume(run_dir, progress=False)
    else:
        start(path, run_dir, progress=False)


def finished(run: Path) -> bool:
    """Whether ``run`` holds a campaign that ran to its end."""
    try:
        return json.loads((run / "status.json").read_text()).get("state") == "finished"
    except (OSError, ValueError):
        return False


def _bar_minus_is(run: Path, entry: dict, kt: float) -> dict:
    """state -> F by the estimator minus F by importance sampling (kT) of the generation
    ``entry``, from its flows results (``results/flows-*.json``, matched by flow directory)."""
    flows = {}
    for f in (run / "results").glob("flows-*.json"):
        try:
            r = json.loads(f.read_text())
        except ValueError:
            continue
        r = r.get("result", r) if isinstance(r, dict) else r[0]
        if isinstance(r, dict) and r.get("flow_dir") and r.get("is_f_ev") is not None:
            flows[Path(r["flow_dir"]).parts[-2:]] = r
    out = {}
    for s, st in (entry.get("states") or {}).items():
        r = flows.get(Path(st.get("flow_dir") or "").parts[-2:])
        if r is not None:
            out[s] = round((r["f_ev"] - r["is_f_ev"]) / kt, 4)
    return out


def answer(run: Path) -> dict:
    """The run's answer: the last generation's corrected ΔF (kT) and error, its calls, and
    its stages (kT): the committee's ΔF and error, the correction to the oracle and its
    error, and per state F by the estimator minus F by the flow's importance sampling."""
    status = json.loads((run / "status.json").read_text())
    kt = status["kt_ev"]
    last = next((h for h in reversed(status["history"]) if h.get("value_ev") is not None),
                None)
    val = err = None
    corrected = False
    stages: dict = {}
    if last is not None:
        corrected = last.get("corrected_ev") is not None
        val = last["corrected_ev"] if corrected else last["value_ev"]
        err = last["corrected_error_ev"] if corrected else last["error_ev"]

        def kt_(v):
            return None if v is None else round(v / kt, 4)

        stages = {"committee_kt": kt_(last["value_ev"]), "committee_err_kt":
                  kt_(last["error_ev"]), "committee_spread_kt": kt_(last.get("committee_ev")),
                  "correction_kt": kt_(last.get("correction_ev")),
                  "correction_err_kt": kt_(last.get("correction_error_ev")),
                  "rhat": last.get("rhat"),
                  "bar_minus_is_kt": _bar_minus_is(run, last, kt)}
    return {"delta_f_kt": None if val is None else round(val / kt, 4),
            "err_kt": None if err is None else round(err / kt, 4), "corrected": corrected,
            "oracle_calls": status.get("oracle_calls"), "converged": status["converged"],
            "generations": len(status["history"]), "stop_reason": status.get("stop_reason"),
            "stages": stages}


def _z(r: dict, ref: dict) -> float:
    return round((r["delta_f_kt"] - ref["delta_f_kt"])
                 / math.hypot(r["err_kt"], ref["error_kt"]), 3)


def _summary(ok: list[dict], ref: dict, key: str = "z") -> dict:
    """Mean, bias (kT) with its standard error, RMS z and |z| ≤ 2 coverage of ``ok``."""
    z = np.array([r[key] for r in ok])
    v = np.array([r["delta_f_kt"] for r in ok])
    mean = float(v.mean()) if len(v) else float("nan")
    return {"n": len(ok), "mean_kt": mean, "bias_kt": mean - ref["delta_f_kt"],
            "bias_err_kt": float(math.hypot(v.std(ddof=1) / math.sqrt(len(v)),
                                            ref["error_kt"])) if len(v) > 1 else float("nan"),
            "rms_z": float(np.sqrt(np.mean(z**2))) if len(z) else float("nan"),
            "covered_2sigma": float(np.mean(np.abs(z) <= 2)) if len(z) else float("nan")}


def basin_shift(run: Path, replicas: int = 64, steps: int = 3000, seed: int = 5) -> dict:
    """lj7 only: how far the last committee of ``run`` moves the states' basins. Langevin
    frames of the oracle (LJ) at 18 K from each minimum (``replicas`` × ``steps`` of 10 fs,
    every 50th after a 20 % burn-in) are assigned by the full quench on LJ and by the
    campaign's ``BasinStates`` on the committee; ``shift_kt`` = ΔF(committee's basins) −
    ΔF(LJ's full-quench basins) = −ln(n_coh,com / n_coh,LJ) + ln(n_pbp,com / n_pbp,LJ)
    (``shift_campaign_kt``: against LJ's basins by the campaign's definition), a systematic
    error of the campaign's answer that the energy correction cannot see. Also
    ``correction_exact_kt``: the exact correction of ΔF from the committee to LJ on the
    committee's states, Σ± kT ln⟨exp(−(U_com − U_LJ)/kT)⟩ over the LJ frames the committee
    assigns to each state (what the campaign's 16 labels per state estimate)."""
    import torch
    from ase.io import read
    from lj7_reference import WALL, basin_labels

    from alflow.examples import DATA
    from alflow.mlip import load_potential
    from alflow.potential import LennardJones
    from alflow.sampling.langevin import run_langevin
    from alflow.states import BasinStates

    torch.set_num_threads(1)
    minima = {a.info.get("state"): a.positions for a in read(DATA / "lj7.extxyz", index=":")}
    refs = {"pbp": minima["bipyramid"], "coh": minima["capped_octahedron"]}
    numbers = np.full(7, 18)
    lj = BasinStates(LennardJones(numbers), refs)
    gen = sorted((run / "models").glob("gen*"))[-1]
    com = BasinStates(load_potential(str(gen), numbers), refs)
    n_lj, n_com, n_cam = np.zeros(2), np.zeros(2), np.zeros(2)
    corr = np.zeros(2)
    kt = 8.617333262e-5 * 18.0
    for k, x0 in enumerate(lj.minima):
        tr = run_langevin(LennardJones(numbers), np.repeat(x0[None], replicas, 0),
                          np.full(7, 39.948), 18.0, 10.0, steps, 0.01, record_every=50,
                          seed=seed + k)
        pos = np.asarray(tr.positions)
        x = pos[len(pos) // 5:].reshape(-1, 7, 3)
        rel = x - x.mean(-2, keepdims=True)
        inside = np.sqrt((rel * rel).sum(-1)).max(-1) <= WALL
        _, full = basin_labels(x, np.stack(lj.minima))
        a = np.where(inside, com.assign(x), -1)
        n_lj[k], n_com[k] = (full == k).sum(), (a == k).sum()
        n_cam[k] = (np.where(inside, lj.assign(x), -1) == k).sum()
        xs = torch.as_tensor(x[a == k])
        d = (com.potential.stats(xs)["energy"].double().numpy()
             - LennardJones(numbers).energy(xs).double().numpy()) / kt
        corr[k] = float(np.log(np.mean(np.exp(-(d - d.mean())))) - d.mean())
    shift = float(-np.log(n_com[1] / n_lj[1]) + np.log(n_com[0] / n_lj[0]))
    return {"committee": gen.name, "shift_kt": round(shift, 4),
            "shift_campaign_kt": round(float(-np.log(n_com[1] / n_cam[1])
                                             + np.log(n_com[0] / n_cam[0])), 4),
            "correction_exact_kt": round(float(corr[1] - corr[0]), 4),
            "lost_fraction": {s: round(float(1 - n_com[k] / n_lj[k]), 4)
                              for k, s in enumerate(("pbp", "coh"))}}


def repeat_flows(run: Path, repeats: int) -> dict:
    """The last generation's flows step of every state run ``repeats`` more times on the
    same committee with fresh seeds (the campaign's settings): the committee's ΔF (kT) of
    each repeat, their mean and spread, and the error (kT) each repeat states for itself.
    The spread against the stated error says whether one flows step's error bar holds; the
    mean is the committee-side estimate without one draw's noise. Seeds 10⁶ + 1000 r + k
    (repeat r, state k) collide with no campaign's (alflow.seeds.step_seed)."""
    import torch

    from alflow.campaign import steps
    from alflow.campaign.config import load_campaign
    from alflow.campaign.system import build_system

    torch.set_num_threads(1)
    status = json.loads((run / "status.json").read_text())
    last = next(h for h in reversed(status["history"]) if h.get("value_ev") is not None)
    g, kt = last["generation"], status["kt_ev"]
    cfg = load_campaign(run / "campaign.yaml")
    system = build_system(cfg)
    sp = cfg.exploration.sampler
    md = steps.seed_md_config(cfg)
    model = str(run / "models" / f"gen{g:03d}")
    names = list(cfg.system.states)
    values, errors = [], []
    for r in range(repeats):
        per_state = {}
        for k, s in enumerate(names):
            out = run.parent / "repeat_flows" / f"r{r}" / s
            out.mkdir(parents=True, exist_ok=True)
            per_state[s], _ = steps.flows(model, system, s, str(out), sp, md, cfg.temperature_k,
                                          cfg.system.states, 0, cfg.estimate.bootstrap,
                                          10**6 + 1000 * r + k)
        d = steps.summarise(cfg, g, per_state, {})
        values.append(d["value_ev"] / kt)
        errors.append(d["error_ev"] / kt)
    v = np.array(values)
    return {"generation": g, "delta_f_kt": [round(x, 4) for x in values],
            "err_kt": [round(x, 4) for x in errors], "mean_kt": round(float(v.mean()), 4),
            "sd_kt": round(float(v.std(ddof=1)), 4) if len(v) > 1 else None,
            "stated_err_kt": round(float(np.sqrt(np.mean(np.square(errors)))), 4)}


def decompose(r: dict, ref: dict) -> dict | None:
    """lj7, per run with a basin check: its error against the reference (kT) split into the
    committee-side estimate's error (flows, MCMC, BAR: the committee's ΔF minus its exact
    value on its own states, reference + shift − exact correction), the correction's error
    (the campaign's correction minus the exact one) and the basin shift, each with its
    z-score against the error the campaign states for it."""
    st = r.get("stages") or {}
    b = st.get("basin")
    if not b or st.get("committee_kt") is None or st.get("correction_kt") is None:
        return None
    truth = ref["delta_f_kt"] + b["shift_campaign_kt"] - b["correction_exact_kt"]
    sampler = st["committee_kt"] - truth
    corr = st["correction_kt"] - b["correction_exact_kt"]
    out = {"sampler_kt": round(sampler, 4),
           "sampler_z": round(sampler / st["committee_err_kt"], 3),
           "correction_kt": round(corr, 4),
           "correction_z": round(corr / st["correction_err_kt"], 3),
           "shift_kt": b["shift_campaign_kt"]}
    rep = st.get("repeat_flows")
    if rep and rep.get("sd_kt"):
        # the committee-side error = this draw's noise (against the repeats' mean) + the
        # committee-side estimator's own bias (the repeats' mean against the truth)
        noise, bias = st["committee_kt"] - rep["mean_kt"], rep["mean_kt"] - truth
        n = len(rep["delta_f_kt"])
        sd_mean = rep["sd_kt"] / math.sqrt(n)  # the repeats' mean is itself uncertain
        out.update(noise_kt=round(noise, 4),
                   noise_z=round(noise / math.hypot(st["committee_err_kt"], sd_mean), 3),
                   estimator_bias_kt=round(bias, 4),
                   estimator_bias_z=round(bias / math.hypot(sd_mean, ref["error_kt"]), 3),
                   repeat_sd_over_stated=round(rep["sd_kt"] / rep["stated_err_kt"], 3))
    return out


def figures(runs: list[dict], ref: dict) -> dict:
    """Bias (kT), z-scores, coverage and RMS z of the runs against the reference (all runs
    with an answer, converged or not; ``converged``: the same over the converged ones; for
    lj7 ``z_full`` against the full-quench basin)."""
    ok = [r for r in runs if r["delta_f_kt"] is not None and r["err_kt"]]
    for r in ok:
        r["z"] = _z(r, ref)
        if "full" in ref:
            r["z_full"] = _z(r, ref["full"])
    out = {"reference_kt": ref["delta_f_kt"], "reference_err_kt": ref["error_kt"],
           "reference_source": ref["source"], "runs": runs, **_summary(ok, ref),
           "runs_without_answer": len(runs) - len(ok),
           "converged": _summary([r for r in ok if r["converged"]], ref)}
    parts = [d for r in ok if (d := decompose(r, ref)) is not None]
    for r in ok:
        if (d := decompose(r, ref)) is not None:
            r["stages"]["decomposition"] = d
    if parts:
        out["decomposition"] = {
            "n": len(parts),
            **{f"mean_{k}": round(float(np.mean([d[k] for d in parts])), 4)
               for k in ("sampler_kt", "correction_kt", "shift_kt")},
            **{f"rms_{k}": round(float(np.sqrt(np.mean([d[k] ** 2 for d in parts]))), 3)
               for k in ("sampler_z", "correction_z")}}
        rep = [d for d in parts if "noise_kt" in d]
        if rep:
            out["decomposition"]["repeat_flows"] = {
                "n": len(rep),
                "mean_estimator_bias_kt": round(float(np.mean(
                    [d["estimator_bias_kt"] for d in rep])), 4),
                **{f"rms_{k}": round(float(np.sqrt(np.mean([d[k] ** 2 for d in rep]))), 3)
                   for k in ("noise_z", "estimator_bias_z")},
                "mean_repeat_sd_over_stated": round(float(np.mean(
                    [d["repeat_sd_over_stated"] for d in rep])), 3)}
    if "full" in ref:
        out["full_quench"] = {"reference_kt": ref["full"]["delta_f_kt"],
                              "reference_err_kt": ref["full"]["error_kt"],
                              **_summary(ok, ref["full"], "z_full")}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seeds", type=int, default=None, help="seeds per system (8; quick 2)")
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--basin-check", action=argparse.BooleanOptionalAction, default=None,
                    help="lj7: how far each run's last committee moves the basins "
                         "(basin_shift; default on, off with --quick)")
    ap.add_argument("--repeat-flows", type=int, default=0, metavar="K",
                    help="lj7: rerun each run's last flows step K times on its committee "
                         "(repeat_flows; splits the committee-side error into this draw's "
                         "noise and the estimator's bias)")
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
    if args.basin_check is None:
        args.basin_check = not args.quick
    gens = args.generations or (1 if args.quick else None)
    out = args.out or Path(tempfile.mkdtemp(prefix="alflow-bench-calibration-"))
    refs = references()
    load0, t0 = os.getloadavg()[0], time.perf_counter()
    result: dict = {}
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        for system in systems:
            runs = []
            for seed in range(args.first_seed, args.first_seed + seeds):
                run = out / f"{system}-seed{seed}" / "run"
                t = time.perf_counter()
                if (run / "status.json").exists() and not finished(run):
                    pool.submit(_run, None, str(run)).result()  # an interrupted run
                elif not finished(run):
                    path = campaign(out, system, seed, args.quick, gens)
                    pool.submit(_run, str(path), str(run)).result()
                r = {"seed": seed, **answer(run), "wall_s": round(time.perf_counter() - t, 1)}
                if system == "lj7" and args.basin_check and (run / "models").exists():
                    r["stages"]["basin"] = pool.submit(basin_shift, run).result()
                if system == "lj7" and args.repeat_flows > 1 and (run / "models").exists():
                    r["stages"]["repeat_flows"] = pool.submit(repeat_flows, run,
                                                              args.repeat_flows).result()
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
                st = r.get("stages") or {}
                basin = (st.get("basin") or {}).get("shift_kt")
                print(f"  seed {r['seed']}: {r['delta_f_kt']} ± {r['err_kt']} kT  z {z}  "
                      f"(committee {st.get('committee_kt')} ± {st.get('committee_err_kt')}, "
                      f"correction {st.get('correction_kt')} ± {st.get('correction_err_kt')}"
                      + ("" if basin is None else f", basins moved ΔF by {basin:+.3f} kT")
                      + f", converged {r['converged']})")
            for r in runs:
                d = (r.get("stages") or {}).get("decomposition")
                if d:
                    print(f"  seed {r['seed']}: error = committee-side {d['sampler_kt']:+.3f} "
                          f"(z {d['sampler_z']:+.2f}) + correction {d['correction_kt']:+.3f} "
                          f"(z {d['correction_z']:+.2f}) + basin shift {d['shift_kt']:+.3f} kT")
                    if "noise_kt" in d:
                        print(f"    committee-side = this draw's noise {d['noise_kt']:+.3f} "
                              f"(z {d['noise_z']:+.2f}) + estimator bias "
                              f"{d['estimator_bias_kt']:+.3f} kT (z "
                              f"{d['estimator_bias_z']:+.2f}); repeats' spread / stated "
                              f"error {d['repeat_sd_over_stated']:.2f}")
            if "decomposition" in f:
                d = f["decomposition"]
                print(f"  mean errors: committee-side {d['mean_sampler_kt']:+.3f}, correction "
                      f"{d['mean_correction_kt']:+.3f}, basin shift {d['mean_shift_kt']:+.3f} "
                      f"kT; RMS z committee-side {d['rms_sampler_z']:.2f}, correction "
                      f"{d['rms_correction_z']:.2f} ({d['n']} runs)")
                if "repeat_flows" in d:
                    q = d["repeat_flows"]
                    print(f"  repeated flows steps ({q['n']} runs): mean estimator bias "
                          f"{q['mean_estimator_bias_kt']:+.3f} kT, RMS z of the draws' noise "
                          f"{q['rms_noise_z']:.2f}, of the estimator bias "
                          f"{q['rms_estimator_bias_z']:.2f}; repeats' spread / stated error "
                          f"{q['mean_repeat_sd_over_stated']:.2f}")
            print(f"  mean {f['mean_kt']:.3f} kT, bias {f['bias_kt']:+.3f} ± "
                  f"{f['bias_err_kt']:.3f} kT, |z| ≤ 2: {100 * f['covered_2sigma']:.0f} %, "
                  f"RMS z {f['rms_z']:.2f} ({f['n']} runs; converged: {f['converged']['n']})",
                  flush=True)
            if "full_quench" in f:
                g = f["full_quench"]
                print(f"  against the full-quench basin {g['reference_kt']:.3f} kT: bias "
                      f"{g['bias_kt']:+.3f} kT, |z| ≤ 2: {100 * g['covered_2sigma']:.0f} %, "
                      f"RMS z {g['rms_z']:.2f}")
            print(flush=True)
    load1 = os.getloadavg()[0]
    result.update(quick=args.quick, seeds=seeds, cores=len(os.sched_getaffinity(0)),
                  seconds=round(time.perf_counter() - t0, 1),
                  load_average=[round(load0, 2), round(load1, 2)], runs_dir=str(out))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
