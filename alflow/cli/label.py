"""``alflow label``: DFT (or oracle) labels of structures into an HDF5 label store."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from alflow.errors import InputError

log = logging.getLogger(__name__)

EXAMPLES = ("ag6", "lj7")


def example_structures(name: str) -> Path:
    """Path of a built-in example structure file (``ag6`` or ``lj7``)."""
    return Path(__file__).resolve().parents[1] / "examples" / "data" / f"{name}.extxyz"


def resolve_structures(arg: str) -> Path:
    """A structure file, or a built-in example name (``ag6``, ``lj7``) if no such file exists."""
    path = Path(arg)
    if not path.exists() and arg.lower() in EXAMPLES:
        return example_structures(arg.lower())
    return path


def register(app: typer.Typer) -> None:
    @app.command("label")
    def label(
        structures: Annotated[str, typer.Argument(
            help="structure file ASE can read (every frame is labelled), or a built-in "
                 "example: ag6, lj7")],
        store: Annotated[Path, typer.Option("--store", "-s", help="HDF5 label store (created "
                                                                  "if missing)")] = Path(
            "labels.h5"),
        method: Annotated[str | None, typer.Option(
            "--method", "-m", help="shorthand: pyscf:XC/BASIS, ase:emt, ase:lj(sigma=..), ..."
                                   " [default: pyscf:pbe/def2-svp]")] = None,
        config: Annotated[Path | None, typer.Option(
            "--config", "-c", help="YAML file of labeller settings (LabellerConfig fields)")]
        = None,
        tag: Annotated[list[str], typer.Option(
            "--tag", "-t", help="key=value stored with every label (repeatable)")] = [],  # noqa: B006
        threads: Annotated[int | None, typer.Option(min=1, help="OpenMP threads")] = None,
        retry_failed: Annotated[bool, typer.Option(help="recompute stored failed labels")]
        = False,
    ) -> None:
        """Label every structure (energy eV, forces eV/Å) and store it; stored ones are skipped."""
        from alflow.config import load_yaml_model
        from alflow.dataset import LabelStore
        from alflow.labelling import DEFAULT_METHOD, LabellerConfig, label_many
        from alflow.labelling.commit import sigterm_raises
        from alflow.labelling.tags import image_tags, parse_tags
        from alflow.labelling.validate import validate_method
        from alflow.structures import read_structures

        if method and config:
            raise InputError("give either --method or --config, not both")
        overrides = {"threads": threads} if threads else {}
        chosen = (load_yaml_model(LabellerConfig, config) if config is not None
                  else method or DEFAULT_METHOD)
        tags = parse_tags(tag)
        path = resolve_structures(structures)
        images = read_structures(path)
        labeller = validate_method(chosen, images, **overrides)
        per_image = image_tags(images, tags)
        st = LabelStore(store)
        console = Console(stderr=True, soft_wrap=True)
        keys = {labeller.key(a) for a in images}
        done = {k for k in keys if st.has(k)}
        if retry_failed:
            done = {k for k in done if st.get(k).status == "ok"}
        todo = len(keys - done)
        console.print(f"{len(images)} structure(s) from {path}; {labeller.name}; "
                      f"{len(done)} already in {store}, {todo} to compute")
        if todo == 0:
            console.print("nothing to compute: every label is already stored")
        counts = {"ok": 0, "failed": 0, "stored": 0}
        with Progress(TextColumn("[bold]label"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), TextColumn("{task.description}"), console=console,
                      disable=todo == 0) as progress:
            task = progress.add_task("", total=len(images))

            def on_result(i: int, rec, cached: bool) -> None:
                counts["stored" if cached else rec.status] += 1
                note = "stored" if cached else rec.status
                if rec.status == "ok":
                    note += f", E = {rec.energy:.6f} eV"
                progress.update(task, advance=1, description=f"#{i}: {note}")
                if rec.status != "ok" and not cached:
                    console.print(f"[yellow]structure {i} failed: {rec.reason}")

            with sigterm_raises():  # a finished label is committed before the process ends
                recs = label_many(images, labeller, st, per_image, retry_failed=retry_failed,
                                  on_result=on_result)
        n_ok = sum(r.status == "ok" for r in recs)
        console.print(f"{store}: {n_ok}/{len(recs)} ok; computed {counts['ok']} ok + "
                      f"{counts['failed']} failed, reused {counts['stored']}")
        if n_ok == 0:
            raise typer.Exit(1)
