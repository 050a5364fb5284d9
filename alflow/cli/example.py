"""``alflow example NAME DIR``: write a ready campaign (YAML + structures)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command("example")
    def example(
        name: Annotated[str, typer.Argument(
            help="lj7, ag6-emt, ag6-xtb, ag6-pyscf, lj-fcc-hcp or cu-fcc-hcp")],
        directory: Annotated[Path, typer.Argument(help="directory to write into")],
        force: Annotated[bool, typer.Option("--force", help="overwrite campaign.yaml")] = False,
    ) -> None:
        """Write a ready-to-run campaign into DIR (campaign.yaml and, for clusters, structures/)."""
        from alflow.examples import write_example

        path = write_example(name, directory, overwrite=force)
        typer.echo(f"wrote {path}\nrun it with: alflow run {path} --dir {directory}/run")
