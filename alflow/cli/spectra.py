"""``alflow spectra``: TDDFT spectra of a campaign's Boltzmann samples, per state."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from alflow.errors import InputError
from alflow.runlayout import RunLayout


def register(app: typer.Typer) -> None:
    @app.command("spectra")
    def spectra(
        run_dir: Annotated[Path, typer.Argument(help="campaign run directory")],
        state: Annotated[list[str] | None, typer.Option(
            help="state(s) to compute (default: all)")] = None,
        samples: Annotated[int, typer.Option(min=1, help="samples per state")] = 16,
        method: Annotated[str | None, typer.Option(
            help="pyscf:XC/BASIS (default: the campaign's labelling method)")] = None,
        nstates: Annotated[int, typer.Option(min=1, help="lowest excited states")] = 20,
        tda: Annotated[bool, typer.Option("--tda", help="Tamm-Dancoff approximation")] = False,
        width: Annotated[float, typer.Option(min=1e-6, help="broadening, eV")] = 0.08,
        site: Annotated[str | None, typer.Option(
            help="Parsl site (name or YAML) whose 'dft' executor runs the TDDFT tasks; "
                 "default: the campaign's site")] = None,
        inline: Annotated[bool, typer.Option(
            "--inline", help="run the TDDFT here, one after another (no Parsl)")] = False,
        threads: Annotated[int | None, typer.Option(min=1, help="OpenMP threads each")] = None,
        td_grid: Annotated[int | None, typer.Option(
            "--td-grid", min=0, max=9, help="grid level of the response XC kernel (default: "
                                            "the SCF's; 1 is 2.5x faster for Ag6, docs)")] = None,
    ) -> None:
        """TDDFT of N samples per state into RUN_DIR/spectra.h5 (resumable); averaged spectra.
        """
        from alflow.campaign.rundir import open_run_dir
        from alflow.observables.batch import spectra_many
        from alflow.observables.spectra_campaign import campaign_samples, state_spectra
        from alflow.observables.store import SpectrumStore
        from alflow.observables.tddft import TDDFTConfig

        open_run_dir(run_dir)  # spectra.h5 goes there: only into a directory alflow created
        layout = RunLayout(run_dir)
        cfg_yaml = layout.config
        import yaml

        camp = yaml.safe_load(cfg_yaml.read_text()) if cfg_yaml.exists() else {}
        names = state or list(((camp or {}).get("system") or {}).get("states") or {})
        if not names:
            raise InputError(f"{run_dir}: no states given and none in campaign.yaml")
        over = dict(nstates=nstates, tda=tda, threads=threads, td_grids_level=td_grid)
        if method:
            config = TDDFTConfig.from_method(method, **over)
        else:
            from alflow.labelling.base import parse_method

            oracle = (camp or {}).get("oracle") or {}
            lab = parse_method(oracle.get("method", "pyscf:pbe/def2-svp"),
                               **(oracle.get("options") or {}))
            config = TDDFTConfig.from_labeller(lab, **over)
        store = SpectrumStore(layout.spectra)
        console = Console(stderr=True)
        site = site or (camp or {}).get("site")
        with _parsl_session(None if inline else site, run_dir) as submit:
            for name in names:
                atoms, logw, gen = campaign_samples(run_dir, name, samples)
                tags = [{"state": name, "generation": gen, "sample": i,
                         **({} if logw is None else {"log_weight": float(logw[i])})}
                        for i in range(len(atoms))]
                with Progress(TextColumn(f"[bold]{name}"), BarColumn(), MofNCompleteColumn(),
                              TimeElapsedColumn(), TextColumn("{task.description}"),
                              console=console) as progress:
                    task = progress.add_task("", total=len(atoms))

                    def on_result(i, res, cached, progress=progress, task=task):
                        note = "stored" if cached else res.status
                        progress.update(task, advance=1, description=f"#{i}: {note}")

                    spectra_many(atoms, config, store=store, tags=tags, submit=submit,
                                 on_result=on_result)
        table = Table(title=f"spectra ({config.method_label}, width {width} eV)")
        for col in ("state", "samples", "ESS", "peaks (eV)", "complete below (eV)",
                    "samples to <5% L1"):
            table.add_column(col)
        for name, _, avg in state_spectra(layout.spectra, names, width=width):
            table.add_row(name, str(avg.n_samples), f"{avg.ess:.1f}",
                          ", ".join(f"{p:.2f}" for p in avg.peaks_ev[:5]),
                          f"{avg.complete_below_ev:.2f}",
                          str(avg.samples_to_converge or "not reached"))
        console.print(table)
        console.print(f"stored in {layout.spectra}; `alflow report {run_dir}` draws them")


@contextlib.contextmanager
def _parsl_session(site: str | None, run_dir: Path) -> Iterator[Any]:
    """``submit`` for :func:`spectra_many`: the Parsl app on the site's ``dft`` executor, or
    None (inline) without a site."""
    if site is None:
        yield None
        return
    import parsl

    from alflow.campaign.sites import load_site
    from apps.spectra import tddft_app

    pcfg = load_site(site, RunLayout(run_dir).spectra_site)
    if "dft" not in {e.label for e in pcfg.executors}:
        raise InputError(f"site {site!r} has no executor labelled 'dft' for the TDDFT tasks")
    dfk = parsl.load(pcfg)
    try:
        yield tddft_app
    finally:
        dfk.cleanup()
        parsl.clear()
