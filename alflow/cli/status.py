"""``alflow status RUN_DIR [--json]``: where a campaign stands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command("status")
    def status(
        directory: Annotated[Path, typer.Argument(help="run directory")],
        as_json: Annotated[bool, typer.Option("--json", help="one JSON object")] = False,
    ) -> None:
        """Generation, labels, oracle calls, ΔF history and what is running."""
        from alflow.campaign.crystal import is_crystal_run

        if is_crystal_run(directory):  # kind: crystal (alflow.campaign.crystal)
            from alflow.campaign.crystal import format_status, read_crystal_status

            st = read_crystal_status(directory)
        else:
            from alflow.campaign.rundir import format_status
            from alflow.campaign.status import read_status

            st = read_status(directory)
        typer.echo(json.dumps(st, sort_keys=True) if as_json else format_status(st), nl=False)
        if as_json:
            typer.echo()
