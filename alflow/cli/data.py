"""``alflow data``: summary of a label store, and export to extended XYZ."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table


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
    ) -> None:
        """Counts by status and method, energy range; optionally export to extxyz."""
        from alflow.dataset import LabelStore
        from alflow.errors import InputError

        if status not in ("ok", "failed", "all"):
            raise InputError(f"--status must be ok, failed or all, got {status!r}")
        st = LabelStore(store, create=False)
        s = st.summary()
        console = Console()
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
