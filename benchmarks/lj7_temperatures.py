"""ΔF(T') = F(coh) − F(pbp) of an lj7 campaign at temperatures other than its own, on the MLIP
(reweighted flow samples) and corrected to the oracle (reweighted oracle-labelled samples),
against the oracle's exact answer at each T' by parallel-tempering basin counts
(benchmarks/lj7_reference.py with its lowest replica at T' and the same temperature ladder
ratio, 40/18).

    python benchmarks/lj7_temperatures.py RUN_DIR [--quick] [--temperatures 14.4,18,22.5]

RUN_DIR: a finished ``alflow run`` of the lj7 example (read only: it needs the flows step's
``is_samples.npz``, or it resamples into RUN_DIR/temperatures/). ``--quick``: the reference's
quick settings (32 chains × 20000 steps, ≈ 40 s per temperature; full: 128 × 60000, ≈ 10
min). The last line is one JSON object (with the load average).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from ase.units import kB

sys.path.insert(0, str(Path(__file__).resolve().parent))

import lj7_reference  # noqa: E402

from alflow.campaign.flow_samples import campaign_samples  # noqa: E402
from alflow.observables.oracle_samples import campaign_labelled  # noqa: E402
from alflow.observables.temperatures import delta_f_vs_temperature  # noqa: E402


def compare(run_dir: Path, temperatures: list[float], quick: bool) -> dict:
    """Per T': MLIP and DFT-corrected ΔF (eV and kT) with errors, ESS, flags, the reference
    and the deviation of the DFT-corrected value from it in combined standard errors."""
    t0 = time.perf_counter()
    samples, info = campaign_samples(run_dir)
    if sorted(samples) != ["coh", "pbp"]:
        raise SystemExit(f"{run_dir}: not an lj7 campaign (states {sorted(samples)})")
    lab = campaign_labelled(run_dir, info["config"], info["generation"])
    pts = delta_f_vs_temperature(samples, "pbp", "coh", temperatures, labelled=lab)
    settings = lj7_reference.QUICK if quick else {}
    rows = []
    for p in pts:
        t = p.temperature_k
        ref = lj7_reference.reference(**settings, temperature_k=t, t_max=t * 40.0 / 18.0)
        kt = kB * t
        row = {"temperature_k": t, "reference_kt": ref["delta_f_kt"],
               "reference_error_kt": ref["error_kt"],
               "mlip_kt": p.delta_f_ev / kt, "mlip_error_kt": p.error_ev / kt,
               "mlip_ess": p.ess, "mlip_poor_overlap": p.poor_overlap}
        if p.dft_delta_f_ev is not None:
            sig = (p.dft_error_ev**2 + ref["error_ev"]**2) ** 0.5
            row.update(dft_kt=p.dft_delta_f_ev / kt, dft_error_kt=p.dft_error_ev / kt,
                       dft_ess=p.dft_ess, dft_poor_overlap=p.dft_poor_overlap,
                       dft_minus_reference_sigma=(p.dft_delta_f_ev - ref["delta_f_ev"]) / sig)
        rows.append(row)
        print(f"T' {t:6.2f} K  reference {ref['delta_f_kt']:6.3f} ± {ref['error_kt']:.3f} kT  "
              f"MLIP {row['mlip_kt']:6.3f} ± {row['mlip_error_kt']:.3f}  DFT-corrected "
              + (f"{row['dft_kt']:6.3f} ± {row['dft_error_kt']:.3f} "
                 f"({row['dft_minus_reference_sigma']:+.1f}σ)" if "dft_kt" in row else "—"),
              flush=True)
    return {"run_dir": str(run_dir), "generation": info["generation"],
            "campaign_temperature_k": info["temperature_k"],
            "flow_samples": {s: len(v.energy_ev) for s, v in samples.items()},
            "labelled_samples": {s: len(v.model_ev) for s, v in lab.items()},
            "reference": "QUICK: 32 chains x 20000 steps" if quick else "128 chains x 60000",
            "points": rows, "seconds": time.perf_counter() - t0,
            "load_average": os.getloadavg()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--temperatures", default="14.4,18,22.5")
    args = ap.parse_args()
    temps = [float(x) for x in args.temperatures.split(",")]
    print(json.dumps(compare(args.run_dir, temps, args.quick)))


if __name__ == "__main__":
    main()
