"""``alflow md``: Langevin MD (optionally well-tempered metadynamics) of a structure's replicas."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from alflow.errors import InputError

log = logging.getLogger(__name__)


def register(app: typer.Typer) -> None:
    @app.command("md")
    def md(
        model_dir: Annotated[Path | None, typer.Argument(
            help="committee model directory (alflow train); or use --calculator")] = None,
        structure: Annotated[Path, typer.Option(
            "--structure", "-s", help="start structure(s), any ASE-readable file; frames are "
                                      "cycled over the replicas")] = ...,
        temperature: Annotated[float | None, typer.Option(help="K (overrides --config)")] = None,
        steps: Annotated[int | None, typer.Option(min=0, help="MD steps")] = None,
        replicas: Annotated[int | None, typer.Option(min=1, help="parallel replicas")] = None,
        metad: Annotated[Path | None, typer.Option(
            help="well-tempered metadynamics YAML (cvs, sigma, height_ev, pace, bias_factor, "
                 "grid_min, grid_max); see docs/md.md")] = None,
        bias_in: Annotated[Path | None, typer.Option(
            help="continue from a saved bias (.npz)")] = None,
        config: Annotated[Path | None, typer.Option(
            help="MD YAML (dt_fs, friction_per_fs, record_every, trust_upper, wall, cvs, ...)")
        ] = None,
        calculator: Annotated[str | None, typer.Option(
            help="instead of MODEL_DIR: 'ase:emt', 'ase:lj(...)', 'torch:lj' or "
                 "'torch:emt'")] = None,
        out: Annotated[Path, typer.Option("--out", "-o", help=".extxyz or .h5")] = Path(
            "traj.extxyz"),
        device: Annotated[str | None, typer.Option(help="cpu or cuda")] = None,
        seed: Annotated[int | None, typer.Option(help="random seed")] = None,
    ) -> None:
        """Langevin MD of replicas at a temperature; with --metad, well-tempered metadynamics
        whose bias (.bias.npz) and free-energy surface (.fes.json) are written beside --out."""
        from ase.io import read

        from alflow.config import load_yaml_model, validate_model
        from alflow.exploration import load_potential_spec
        from alflow.sampling.explore import (
            ExploreConfig,
            explore,
            write_fes,
            write_trajectory,
        )
        from alflow.sampling.metad import MetadConfig

        if (model_dir is None) == (calculator is None):
            raise InputError("give either MODEL_DIR or --calculator (not both)")
        cfg = load_yaml_model(ExploreConfig, config) if config else ExploreConfig()
        updates = {k: v for k, v in dict(temperature_k=temperature, steps=steps,
                                         replicas=replicas, device=device, seed=seed).items()
                   if v is not None}
        if metad is not None:
            updates["metad"] = load_yaml_model(MetadConfig, metad)
        cfg = validate_model(ExploreConfig, {**cfg.model_dump(), **updates}, "md options")
        try:
            structures = read(str(structure), index=":")
        except Exception as err:  # ASE raises many kinds for unreadable files
            raise InputError(f"cannot read structures from {structure}: {err}") from None
        pot = load_potential_spec(calculator or model_dir, structures[0].numbers, cfg.device)
        console = Console(stderr=True)
        with Progress(TextColumn("[bold]MD[/bold]"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.fields[active]} active"), TimeElapsedColumn(),
                      console=console) as progress:
            task = progress.add_task("md", total=cfg.steps, active=cfg.replicas)

            def cb(step: int, n_active: int) -> None:
                progress.update(task, completed=step, active=n_active)

            traj, bias = explore(pot, structures, cfg, bias_in, callback=cb)
        write_trajectory(traj, out)
        stopped = np.flatnonzero(traj.stopped_at >= 0)
        console.print(f"wrote {out}: {int(traj.valid.sum())} frames of {traj.n_replicas} "
                      f"replicas, {traj.time_ps[-1]:.3f} ps")
        if len(stopped):
            console.print(f"stopped (force_dev > {cfg.trust_upper} eV/Å): replicas "
                          f"{stopped.tolist()} at steps {traj.stopped_at[stopped].tolist()}")
        if bias is not None:
            stem = out.with_suffix("")
            bias.save(f"{stem}.bias.npz")
            write_fes(bias.fes(), f"{stem}.fes.json")
            console.print(f"bias: {stem}.bias.npz ({sum(len(c) for c in bias.centers)} "
                          f"Gaussians); free energy from the bias: {stem}.fes.json")
