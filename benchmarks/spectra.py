"""Benchmark: TDDFT absorption spectra of the two Ag6 isomers.

Figures (last line of output, one JSON object):
- ``seconds_per_spectrum``: wall seconds of one TDDFT spectrum (SCF + Casida, lowest
  ``nstates`` states) of Ag6, mean over the computed samples, with the SCF / TDDFT split;
- ``samples_to_5pct_l1``: per state, the number of samples after which adding one more changes
  the averaged broadened spectrum by < 5 % (relative L1), in the one order computed; null if
  not reached within the samples computed. ``l1_changes``: that order's relative L1 change on
  adding sample 2, 3, ... One order is noisy, so two order-free estimates
  (:mod:`alflow.observables.convergence`): ``expected_samples_to_5pct``, where the change
  averaged over 500 random orders (``expected_l1_changes``) first falls below 5 % (null if
  not within the samples computed); and ``estimated_samples_to_5pct``, from the spread
  ``l1_spread`` = c ± standard error (each sample against the mean of the others), the n
  after which one more sample is expected to change the average by c/(n+1) < 5 %, with the
  range from c ± its standard error;

Samples: Gaussian random displacements (sigma 0.1 Å, about the thermal amplitude at 300 K)
of the example planar triangle (D3h) and pentagonal pyramid (C5v) (alflow/examples/data/
ag6.extxyz, Ag–Ag near 2.75 Å); uniform weights. Full run: PBE/def2-SVP (def2 ECP, density
fitting), 20 states, 4 samples per state by default (one spectrum takes minutes on a shared
2-core machine; raise ``--samples`` for a tighter convergence figure). ``--td-grid L``
integrates the response XC kernel (most of the time) on grid level L (docs/observables.md for
its effect). ``--quick``: the same figures for the same isomers at a deliberately minimal
level (labelled in the JSON): CRENBS basis/ECP, grid level 0, no density fitting (exact J is
cheaper in 54 functions), 4 states, 2 samples per state. Results are kept in an HDF5 spectrum
store (``--store``), so an interrupted run resumes. Each state's SCF starts from the density
of its previous computed sample (``scf_guess`` of :func:`alflow.observables.tddft.run_tddft`).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from ase import Atoms

from alflow.observables import convergence as cv
from alflow.observables import spectra as sp
from alflow.observables.batch import spectra_many
from alflow.observables.store import SpectrumStore
from alflow.observables.tddft import TDDFTConfig, spectrum_key

EXAMPLE = Path(__file__).resolve().parents[1] / "alflow" / "examples" / "data" / "ag6.extxyz"


def isomers() -> dict[str, Atoms]:
    """The Ag6 example structures (planar D3h, pentagonal pyramid C5v) by ``state``."""
    from ase.io import read

    return {a.info["state"]: a for a in read(EXAMPLE, index=":")}


def samples(atoms: Atoms, n: int, sigma: float, seed: int) -> list[Atoms]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        a = atoms.copy()
        a.positions += rng.normal(0.0, sigma, a.positions.shape)
        out.append(a)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="minimal basis, fewer states/samples")
    ap.add_argument("--samples", type=int, default=None, help="samples per state")
    ap.add_argument("--nstates", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--td-grid", type=int, default=None,
                    help="grid level of the response XC kernel (default: the SCF's)")
    ap.add_argument("--sigma", type=float, default=0.1, help="displacement sigma (Å)")
    ap.add_argument("--budget-minutes", type=float, default=None,
                    help="start no new spectrum after this; figures from those done")
    ap.add_argument("--store", type=Path, default=None,
                    help="HDF5 store (resumable); default under $TMPDIR")
    args = ap.parse_args()

    if args.quick:
        cfg = TDDFTConfig(basis="crenbs", ecp="crenbs", density_fit=False,
                          nstates=args.nstates or 4, threads=args.threads, grids_level=0,
                          td_grids_level=args.td_grid)
        n = args.samples or 2
    else:
        cfg = TDDFTConfig(nstates=args.nstates or 20, threads=args.threads,
                          td_grids_level=args.td_grid)
        n = args.samples or 4
    store_path = args.store or Path(os.environ.get("TMPDIR", "/tmp")) / (
        f"alflow-bench-spectra-{'quick' if args.quick else 'full'}.h5")
    store = SpectrumStore(store_path)
    t0 = time.perf_counter()
    figures: dict = {"benchmark": "spectra", "quick": args.quick, "system": "Ag6",
                     "method": cfg.method_label, "nstates": cfg.nstates, "threads": args.threads,
                     "level": ("QUICK: CRENBS minimal basis/ECP, grid 0, no DF (not the "
                               "PBE/def2-SVP figure)") if args.quick else "PBE/def2-SVP, DF",
                     "td_grids_level": cfg.td_grids_level,
                     "samples_per_state": n, "sigma_a": args.sigma,
                     "samples_to_5pct_l1": {}, "last_l1_change": {}, "l1_changes": {},
                     "expected_samples_to_5pct": {}, "expected_l1_changes": {},
                     "l1_spread": {}, "estimated_samples_to_5pct": {}, "peaks_ev": {}}
    geoms = sorted(isomers().items())
    pools = {state: samples(geom, n, args.sigma, seed=k) for k, (state, geom) in enumerate(geoms)}
    results: dict[str, list] = {state: [] for state in pools}
    deadline = None if args.budget_minutes is None else t0 + 60.0 * args.budget_minutes
    guesses: dict[str, dict] = {state: {} for state in pools}  # SCF density of the last sample
    for i in range(n):  # interleave the states, so a time budget cuts both evenly
        for state, pool in pools.items():
            if (deadline is not None and time.perf_counter() > deadline
                    and not store.has(spectrum_key(pool[i], cfg))):
                figures["stopped_by_budget"] = True
                continue

            def report(_, res, cached, state=state, i=i):
                how = "stored" if cached else f"{res.provenance.get('wall_seconds', 0):.1f} s"
                lowest = res.excitation_energies_ev[:1]
                print(f"{state} sample {i}: {res.status} {res.reason} ({how}) lowest {lowest}"
                      " eV", flush=True)

            results[state] += spectra_many([pool[i]], cfg, store=store,
                                           tags={"state": state, "sample": i,
                                                 "benchmark": "spectra"}, on_result=report,
                                           scf_guess=guesses[state])
    walls, cpus, scfs, tds, failed = [], [], [], [], 0
    for state, res in results.items():
        ok = [r for r in res if r.status == "ok"]
        failed += len(res) - len(ok)
        for r in ok:
            walls.append(r.provenance["wall_seconds"])
            cpus.append(r.provenance.get("cpu_seconds", np.nan))
            scfs.append(r.provenance["scf_seconds"])
            tds.append(r.provenance["td_seconds"])
        figures["samples_done"] = {**figures.get("samples_done", {}), state: len(ok)}
        if not ok:
            continue
        grid = sp.energy_grid(0.5, 6.0, 0.01)
        avg = sp.average_spectrum([np.asarray(r.excitation_energies_ev) for r in ok],
                                  [np.asarray(r.oscillator_strengths) for r in ok],
                                  grid_ev=grid, width=sp.DEFAULT_WIDTH_EV, tol=0.05)
        last = avg.l1_changes[-1] if avg.l1_changes else None
        figures["samples_to_5pct_l1"][state] = avg.samples_to_converge
        figures["last_l1_change"][state] = last
        figures["l1_changes"][state] = [round(float(c), 4) for c in avg.l1_changes]
        if len(ok) >= 2:
            s = sp.broaden_many([np.asarray(r.excitation_energies_ev) for r in ok],
                                [np.asarray(r.oscillator_strengths) for r in ok],
                                grid, sp.DEFAULT_WIDTH_EV)
            expected = cv.permuted_l1_changes(grid, s, n_perm=500, seed=0).mean(axis=0)
            figures["expected_l1_changes"][state] = [round(float(c), 4) for c in expected]
            figures["expected_samples_to_5pct"][state] = cv.expected_samples_to_converge(
                expected, 0.05)
            d = cv.leave_one_out_l1(grid, s)
            c, se = float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d)))
            figures["l1_spread"][state] = [round(c, 4), round(se, 4)]
            figures["estimated_samples_to_5pct"][state] = {
                "n": cv.samples_for_change(c, 0.05),
                "range": [cv.samples_for_change(max(c - se, 0.0), 0.05),
                          cv.samples_for_change(c + se, 0.05)]}
        figures["peaks_ev"][state] = [round(p, 3) for p in avg.peaks_ev[:5]]
        figures[f"complete_below_ev_{state}"] = round(avg.complete_below_ev, 3)
    figures.update(
        seconds_per_spectrum=float(np.mean(walls)) if walls else None,
        cpu_seconds_per_spectrum=float(np.nanmean(cpus)) if walls else None,
        scf_seconds=float(np.mean(scfs)) if scfs else None,
        tddft_seconds=float(np.mean(tds)) if tds else None,
        spectra_timed=len(walls), failed=failed,
        wall_seconds=time.perf_counter() - t0, store=str(store_path),
        load_average=[round(x, 2) for x in os.getloadavg()],
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
