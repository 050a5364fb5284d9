"""The ``alflow`` command line: one verb per module in this package.

Each module defines ``register(app)``; errors of kind :class:`~alflow.errors.AlflowError`
are printed as one clear message (no traceback) with exit code 2.
"""

from __future__ import annotations

import sys

import typer

from alflow.errors import AlflowError

app = typer.Typer(
    name="alflow",
    help="Active learning of ML potentials and Boltzmann generators, on a laptop or on Slurm.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Each verb lives in its own module with a ``register(app)`` function.
from alflow.cli import (  # noqa: E402
    data,
    evaluate,
    example,
    label,
    md,
    refine,
    report,
    run,
    spectra,
    spectrum,
    status,
    train,
)

for _verb in (label, data, train, evaluate, md, example, run, status, report, spectrum, spectra,
              refine):
    _verb.register(app)


def main() -> None:
    """Entry point: run the app, turning user-facing errors into a message and exit code 2."""
    try:
        app()
    except AlflowError as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        sys.exit(2)
