"""``alflow refine``: fit a potential's parameters to dynamical and structural targets by
differentiable MD (see docs/refine.md)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

log = logging.getLogger(__name__)


def register(app: typer.Typer) -> None:
    @app.command("refine")
    def refine(
        config: Annotated[Path, typer.Argument(help="refinement YAML (system, potential, md, "
                                                    "targets, optimiser)")],
        out: Annotated[Path, typer.Option("--out", "-o", help="output directory")] = Path(
            "refine"),
        threads: Annotated[int | None, typer.Option(min=1, help="torch threads")] = None,
    ) -> None:
        """Adjust the potential so MD reproduces the targets; writes OUT/result.json,
        OUT/loss.png, OUT/observables.png and, for an MLIP, the refined committee in
        OUT/model."""
        import torch

        from alflow.refine.config import load_config
        from alflow.refine.fit import load_targets, refine
        from alflow.refine.report import write_result

        cfg = load_config(config)
        load_targets(cfg)  # the target files are checked before any MD
        if threads is not None:
            torch.set_num_threads(threads)

        def progress(it: int, params: dict[str, float], ev) -> None:
            shown = ", ".join(f"{k} {v:.5g}" for k, v in params.items())
            typer.echo(f"iteration {it}: loss {ev.loss:.4g} at {shown} (effective sample "
                       f"fraction {ev.ess:.2f})")

        doc = refine(cfg, progress=progress,
                     model_out=out / "model" if cfg.potential.kind == "mlip" else None)
        for path in write_result(doc, out):
            typer.echo(f"wrote {path}")
        typer.echo("fitted: " + ", ".join(f"{k} = {v:.6g}" for k, v in
                                          doc["parameters"].items()))
