"""``alflow data``: summary of a label store, export to extended XYZ, check and salvage."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from alflow.dataset import StoreReport


def _report(console: Console, report: StoreReport, action: str) -> None:
    """Print what :func:`alflow.dataset.check_store` / ``salvage_store`` found."""
    lost = report.lost_keys
    if report.healthy and report.version == 1:
        console.print(f"{report.path}: {report.intact} record(s), every one readable; format 1 "
                      f"has no checksums (the first append converts the store to format 2)")
        return
    if report.healthy:
        console.print(f"{report.path}: healthy, {report.intact} record(s), every checksum "
                      f"verified (format {report.version})")
        return
    console.print(f"[red]{report.path}: damaged[/red] (format {report.version})")
    for p in report.problems:
        console.print(f"  - {p}")
    console.print(f"{report.intact} intact record(s) {action}; {len(lost)} record(s) known "
                  f"lost" + (": " + ", ".join(k[:16] for k in lost[:10]) if lost else "")
                  + (" ..." if len(lost) > 10 else ""))
    if report.uncounted:
        console.print("  records in an unreadable part of the file cannot be named or counted")


def register(app: typer.Typer) -> None:
    @app.command("data")
    def data(
        store: Annotated[Path, typer.Argument(help="HDF5 label store")],
        export: Annotated[Path | None, typer.Option(
            "--export", "-e", help="write the selected labels to this extxyz file")] = None,
        status: Annotated[str, typer.Option(help="ok, failed or all (for --export)")] = "ok",
        method: Annotated[str | None, typer.Option(
            help="only this method, e.g. pyscf:pbe/def2-svp (for --export)")] = None,
        state: Annotated[str | None, typer.Option(help="only this state tag (for --export)")]
        = None,
        check: Annotated[bool, typer.Option(
            "--check", help="verify every record's checksum; exit code 1 if damaged")] = False,
        salvage: Annotated[Path | None, typer.Option(
            "--salvage", help="copy every intact record into this new store and report what "
                              "was lost")] = None,
        compact: Annotated[bool, typer.Option(
            "--compact", help="fold the commit log into the HDF5 image (plain h5py then sees "
                              "every record)")] = False,
    ) -> None:
        """Counts by status and method, energy range; optionally export to extxyz; check a
        store's checksums or salvage a damaged one."""
        from alflow.dataset import LabelStore, check_store, salvage_store
        from alflow.errors import InputError

        console = Console()
        if check or salvage is not None:
            if export is not None:
                raise InputError("--export cannot be combined with --check or --salvage")
            if salvage is not None:
                report = salvage_store(store, salvage)
                _report(console, report, f"copied to {salvage}")
                if report.healthy:
                    console.print(f"copied {report.intact} record(s) to {salvage}")
                return
            report = check_store(store)
            _report(console, report, "readable")
            if not report.healthy:
                console.print(f"`alflow data {store} --salvage NEW.h5` copies the intact "
                              f"records into a new store")
                raise typer.Exit(1)
            return
        if status not in ("ok", "failed", "all"):
            raise InputError(f"--status must be ok, failed or all, got {status!r}")
        st = LabelStore(store, create=False)
        if compact:
            st.compact()
        s = st.summary()
        table = Table(title=f"{store}: {s['records']} record(s)")
        for col in ("method", "ok", "failed", "atoms", "E min (eV)", "E max (eV)"):
            table.add_column(col, justify="left" if col == "method" else "right")

        def fmt(e: float | None) -> str:
            return "-" if e is None else f"{e:.6f}"

        for name, m in sorted(s["by_method"].items()):
            table.add_row(name, str(m["ok"]), str(m["failed"]),
                          ",".join(map(str, m["natoms"])), fmt(m["energy_min_ev"]),
                          fmt(m["energy_max_ev"]))
        console.print(table)
        if s["failure_reasons"]:
            console.print("failures: " + ", ".join(
                f"{k} x{v}" for k, v in sorted(s["failure_reasons"].items())))
        if export is not None:
            tags = {"state": state} if state is not None else {}
            n = st.export_extxyz(export, status=None if status == "all" else status,
                                 method=method, **tags)
            console.print(f"wrote {n} configuration(s) to {export}")
