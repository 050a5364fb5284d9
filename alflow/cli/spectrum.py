"""``alflow spectrum``: TDDFT absorption spectra of given structures, averaged and broadened."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from alflow.errors import InputError
from alflow.observables import spectra as sp
from alflow.observables.tddft import TDDFTConfig, TDDFTResult

log = logging.getLogger(__name__)


def spectrum_document(results: list[TDDFTResult], config: TDDFTConfig, width: float,
                      shape: str, temperature_k: float | None = None) -> dict:
    """The SPEC.json content: per-structure sticks and the averaged broadened spectrum.

    Uniform weights, or Boltzmann weights ``exp(-E_scf/kT)`` when ``temperature_k`` is given
    (for distinct minima such as isomers; not for samples already Boltzmann-distributed)."""
    ok = [r for r in results if r.status == "ok"]
    doc: dict = {
        "method": config.method_label,
        "config": config.model_dump(),
        "width_ev": width,
        "shape": shape,
        "weighting": "uniform" if temperature_k is None else f"boltzmann {temperature_k} K",
        "structures": [
            {"index": i, "key": r.key, "status": r.status, "reason": r.reason,
             "scf_energy_ev": r.scf_energy_ev,
             "excitation_energies_ev": r.excitation_energies_ev,
             "oscillator_strengths": r.oscillator_strengths}
            for i, r in enumerate(results)
        ],
        "n_ok": len(ok),
        "n_failed": len(results) - len(ok),
    }
    if not ok:
        doc.update(grid_ev=[], intensity=[])
        return doc
    logw = None
    if temperature_k is not None:
        logw = sp.boltzmann_log_weights(np.array([r.scf_energy_ev for r in ok]), temperature_k)
    avg = sp.average_spectrum([np.asarray(r.excitation_energies_ev) for r in ok],
                              [np.asarray(r.oscillator_strengths) for r in ok],
                              log_weights=logw, width=width, shape=shape)
    doc.update(grid_ev=avg.grid_ev, intensity=avg.intensity, average=avg.model_dump())
    return doc


def register(app: typer.Typer) -> None:
    @app.command("spectrum")
    def spectrum(
        structures: Annotated[Path, typer.Argument(help="structure file ASE can read (xyz, "
                                                        "extxyz, traj...); every frame is used")],
        out: Annotated[Path, typer.Option("--out", "-o", help="output JSON")] = Path("spec.json"),
        method: Annotated[str, typer.Option(help="pyscf:XC/BASIS")] = "pyscf:pbe/def2-svp",
        nstates: Annotated[int, typer.Option(min=1, help="lowest excited states")] = 20,
        tda: Annotated[bool, typer.Option("--tda", help="Tamm-Dancoff approximation")] = False,
        width: Annotated[float, typer.Option(min=1e-6, help="broadening, eV (Gaussian sigma / "
                                                            "Lorentzian HWHM)")] = 0.08,
        shape: Annotated[str, typer.Option(help="gaussian or lorentzian")] = "gaussian",
        boltzmann: Annotated[float | None, typer.Option(
            help="weight structures by exp(-E_scf/kT) at this temperature (K); for distinct "
                 "minima, not for Boltzmann samples")] = None,
        store: Annotated[Path | None, typer.Option(
            help="HDF5 spectrum store: reuse stored results, store new ones")] = None,
        threads: Annotated[int | None, typer.Option(min=1, help="OpenMP threads")] = None,
        td_grid: Annotated[int | None, typer.Option(
            "--td-grid", min=0, max=9, help="grid level of the response XC kernel (default: "
                                            "the SCF's; 1 is 2.5x faster for Ag6, docs)")] = None,
        charge: int = 0,
        spin: Annotated[int, typer.Option(min=0, help="2S")] = 0,
    ) -> None:
        """TDDFT excitations of every structure, and their averaged broadened spectrum."""
        from alflow.labelling.validate import validate_method
        from alflow.observables.batch import spectra_many
        from alflow.observables.store import SpectrumStore
        from alflow.structures import read_structures

        if shape not in ("gaussian", "lorentzian"):
            raise InputError(f"--shape must be 'gaussian' or 'lorentzian', got {shape!r}")
        config = TDDFTConfig.from_method(method, nstates=nstates, tda=tda, threads=threads,
                                         charge=charge, spin=spin, td_grids_level=td_grid)
        images = read_structures(structures)
        validate_method(config.labeller_config(), images)  # functional, basis, ECP: before work
        st = SpectrumStore(store) if store is not None else None
        console = Console(stderr=True)
        console.print(f"{len(images)} structure(s) from {structures}; {config.method_label}, "
                      f"{nstates} states")
        with Progress(TextColumn("[bold]TDDFT"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), TextColumn("{task.description}"),
                      console=console) as progress:
            task = progress.add_task("", total=len(images))

            def on_result(i: int, res: TDDFTResult, cached: bool) -> None:
                note = "stored" if cached else res.status
                if res.status == "ok" and res.excitation_energies_ev:
                    note += f", lowest {res.excitation_energies_ev[0]:.3f} eV"
                progress.update(task, advance=1, description=f"#{i}: {note}")
                if res.status != "ok":
                    console.print(f"[yellow]structure {i} failed: {res.reason}")

            results = spectra_many(images, config, store=st, on_result=on_result)
        doc = spectrum_document(results, config, width, shape, boltzmann)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(doc, indent=1))
        msg = f"wrote {out}: {doc['n_ok']} ok, {doc['n_failed']} failed"
        if doc.get("average"):
            avg = doc["average"]
            peaks = ", ".join(f"{p:.2f}" for p in avg["peaks_ev"][:6])
            msg += f"; peaks (eV): {peaks}; complete below {avg['complete_below_ev']:.2f} eV"
        console.print(msg)
        if doc["n_ok"] == 0:
            raise typer.Exit(1)
