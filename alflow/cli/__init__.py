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

# Each verb lives in its own module; register them here (one line each).
from alflow.cli import spectrum as _spectrum; _spectrum.register(app)  # noqa: E402,E702,I001
from alflow.cli import label as _label, data as _data; _label.register(app); _data.register(app)  # noqa: E402,E702,I001
from alflow.cli import spectra as _spectra; _spectra.register(app)  # noqa: E402,E702,I001
from alflow.cli import report as _report; _report.register(app)  # noqa: E402,E702,I001
from alflow.cli import run as _run, status as _status, example as _example; _run.register(app); _status.register(app); _example.register(app)  # noqa: E402,E501,E702,I001
from alflow.cli import md as _md; _md.register(app)  # noqa: E402,E702,I001
from alflow.cli import train as _train, evaluate as _evaluate; _train.register(app); _evaluate.register(app)  # noqa: E402,E501,E702,I001


def main() -> None:
    """Entry point: run the app, turning user-facing errors into a message and exit code 2."""
    try:
        app()
    except AlflowError as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        sys.exit(2)
