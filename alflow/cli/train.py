"""``alflow train``: fit a committee MLIP to the labels of a dataset."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

log = logging.getLogger(__name__)


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train(
        data: Annotated[Path, typer.Argument(help="label store (DATA.h5) from alflow label")],
        out: Annotated[Path, typer.Option("--out", "-o", help="model directory to write")],
        config: Annotated[Path | None, typer.Option(
            "--config", "-c", help="YAML of MLIPConfig fields (see docs/mlip.md)")] = None,
        nproc: Annotated[int, typer.Option(min=1, help="processes: parallel members or DDP "
                                                       "ranks")] = 1,
        init_from: Annotated[Path | None, typer.Option(
            help="warm start from this committee's weights")] = None,
        device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:N or auto")] = None,
    ) -> None:
        """Train the committee (resumes an interrupted run in the same --out)."""
        from alflow.config import load_yaml_model
        from alflow.dataset import LabelStore
        from alflow.errors import InputError
        from alflow.mlip import MLIPConfig, train_committee
        from alflow.mlip.committee import Committee

        if not data.exists():
            raise InputError(f"{data}: no such label store")
        cfg = load_yaml_model(MLIPConfig, config) if config else MLIPConfig()
        if device:
            cfg.device = device
        atoms = LabelStore(data, create=False).read_atoms()
        console = Console(stderr=True)
        console.print(f"{len(atoms)} labelled configurations from {data}; {cfg.backend} "
                      f"committee of {cfg.committee_size}, nproc={nproc}")
        with console.status("[bold]training...") as status:
            def on_epoch(member: str, epoch: int, epochs: int, val: dict) -> None:
                status.update(f"[bold]{member}[/] epoch {epoch + 1}/{epochs}: val force MAE "
                              f"{val['f_mae']:.4f} eV/Å")
            path = train_committee(atoms, out, cfg, nproc=nproc, init_from=init_from,
                                   progress=on_epoch)
        val = Committee.load(path).meta.get("val", {})
        if val:
            console.print(f"wrote {path}: validation energy MAE "
                          f"{1000 * val['e_mae_per_atom']:.2f} meV/atom, force MAE "
                          f"{val['f_mae']:.4f} eV/Å (n={val['n']})")
        else:
            console.print(f"wrote {path}")
