"""``alflow run CAMPAIGN.yaml --dir RUN_DIR [--site SITE]`` and ``alflow resume RUN_DIR``."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer


class _QuietLibraries(logging.Filter):
    """Console filter: libraries speak only at WARNING and above. (``parsl.load`` sets the
    ``parsl`` logger to DEBUG for its own log in RUN_DIR/runinfo, which would otherwise
    reach the console through propagation.)"""

    NOISY = ("parsl", "h5py", "matplotlib")

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not record.name.startswith(self.NOISY)


def _logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose or not sys.stderr.isatty()
                        else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_QuietLibraries())
    for noisy in _QuietLibraries.NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)


STOP_GRACE_S = 8.0  # below Slurm's KillWait (30 s by default): then SIGKILL comes


def _end_after(seconds: float, code: int) -> None:
    """Watchdog: if the orderly stop has not finished after ``seconds`` (e.g. scancel also
    signalled the interchange, so Parsl's clean-up waits for it forever), stop every
    descendant process and exit."""

    def expire() -> None:
        import psutil

        me = psutil.Process()
        kids = me.children(recursive=True)
        for k in kids:
            with contextlib.suppress(psutil.Error):
                k.terminate()
        _, alive = psutil.wait_procs(kids, timeout=2)
        for k in alive:
            with contextlib.suppress(psutil.Error):
                k.kill()
        logging.getLogger("alflow").warning("clean-up took over %.0f s: stopped %d processes",
                                            seconds, len(kids))
        os._exit(code)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()


@contextlib.contextmanager
def _sigterm_stops_cleanly() -> Iterator[None]:
    """Turn SIGTERM (scancel, a walltime signal) into SystemExit in the driver, so that Parsl's
    clean-up runs: interchanges and worker pools stop and Slurm blocks are cancelled. Every
    finished step is already checkpointed; further SIGTERMs are ignored. If the clean-up
    hangs, a watchdog stops the driver's processes after ``STOP_GRACE_S``."""

    stopping = threading.Event()

    def stop(signum: int, _frame: object) -> None:
        if stopping.is_set():  # scancel signals the driver and the batch script forwards it
            return
        stopping.set()
        logging.getLogger("alflow").warning("SIGTERM: stopping; `alflow resume` continues")
        _end_after(STOP_GRACE_S, 128 + signum)
        raise SystemExit(128 + signum)

    old = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _final(status: dict) -> None:
    from alflow.campaign.rundir import format_status

    typer.echo(format_status(status), nl=False)


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run(
        campaign: Annotated[Path, typer.Argument(help="campaign YAML")],
        directory: Annotated[Path, typer.Option("--dir", help="run directory")],
        site: Annotated[str | None, typer.Option(
            "--site", help="site name (local-threads, slurm, ...) or YAML path")] = None,
        verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
    ) -> None:
        """Validate and run a campaign to convergence in RUN_DIR."""
        from alflow.campaign.crystal import is_crystal_yaml

        _logging(verbose)
        if is_crystal_yaml(campaign):  # kind: crystal (alflow.campaign.crystal)
            from alflow.campaign import crystal

            with _sigterm_stops_cleanly():
                typer.echo(crystal.format_status(crystal.start(campaign, directory, site)),
                           nl=False)
            return
        from alflow.campaign.runner import start

        with _sigterm_stops_cleanly():
            status = start(campaign, directory, site=site)
        _final(status)

    @app.command("resume")
    def resume(
        directory: Annotated[Path, typer.Argument(help="run directory")],
        site: Annotated[str | None, typer.Option("--site", help="override the site")] = None,
        verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
    ) -> None:
        """Continue an interrupted campaign; finished work is not redone."""
        from alflow.campaign.crystal import is_crystal_run

        _logging(verbose)
        if is_crystal_run(directory):  # kind: crystal (alflow.campaign.crystal)
            from alflow.campaign import crystal

            with _sigterm_stops_cleanly():
                typer.echo(crystal.format_status(crystal.resume(directory, site)), nl=False)
            return
        from alflow.campaign.runner import resume as _resume

        with _sigterm_stops_cleanly():
            status = _resume(directory, site=site)
        _final(status)
