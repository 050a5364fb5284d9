"""``alflow report``: an HTML page with figures and a JSON of the numbers of a campaign."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from alflow.errors import InputError


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report(
        run_dir: Annotated[Path, typer.Argument(help="campaign run directory")],
        out: Annotated[Path | None, typer.Option(
            "--out", "-o", help="output directory (default RUN_DIR/report)")] = None,
        temperatures: Annotated[str | None, typer.Option(
            "--temperatures", help="ΔF reweighted to these temperatures, K, comma-separated "
                                   "(default: 0.8-1.25 × the campaign's)")] = None,
    ) -> None:
        """Write RUN_DIR/report/index.html (+ figures/*.png, report.json)."""
        from alflow.campaign.crystal import is_crystal_run
        from alflow.campaign.report_loader import load_report_data
        from alflow.campaign.rundir import open_run_dir
        from alflow.observables.report import write_report

        if is_crystal_run(run_dir):  # kind: crystal (alflow.campaign.crystal_report)
            from alflow.campaign.crystal_report import write_crystal_report

            Console(stderr=True).print(f"wrote {write_crystal_report(run_dir, out)}")
            return
        if out is None:  # the page goes into the run directory: only one alflow created
            open_run_dir(run_dir)
        elif not run_dir.is_dir():
            raise InputError(f"run directory not found: {run_dir}")
        temps = _temperatures(temperatures) if temperatures is not None else None
        console = Console(stderr=True)
        with console.status("reading the run directory and drawing figures"):
            data = load_report_data(run_dir, temps)
            page = write_report(data, out or run_dir / "report")
        for w in data.warnings:
            console.print(f"[yellow]warning: {w}")
        missing = [name for name, present in (
            ("ΔF", data.delta_f), ("ΔF vs T", data.delta_f_temperature),
            ("labels", data.labels), ("parity", data.parity),
            ("FES", data.fes), ("flow diagnostics", data.flow), ("spectra", data.spectra))
            if not present]
        if missing:
            console.print("not computed yet: " + ", ".join(missing))
        console.print(f"wrote {page}")


def _temperatures(text: str) -> list[float]:
    """``"250,300,350"`` -> [250.0, 300.0, 350.0] (K, each positive)."""
    try:
        temps = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise InputError(f"--temperatures {text!r}: give K values separated by commas, "
                         "e.g. 250,300,350") from None
    if not temps or min(temps) <= 0:
        raise InputError(f"--temperatures {text!r}: need at least one positive temperature (K)")
    return temps
