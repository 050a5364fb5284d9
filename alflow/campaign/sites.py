"""Site configurations: validated descriptions of where tasks run, turned into ``parsl.Config``.

Every site maps the three resource classes of a campaign to Parsl executor labels:
``dft`` (DFT labelling, CPU nodes), ``gpu`` (training, sampling) and ``cpu`` (light steps).
"""

from __future__ import annotations

from pathlib import Path

from parsl.config import Config
from parsl.executors import ThreadPoolExecutor

RESOURCE_CLASSES = ("cpu", "dft", "gpu")


def local_threads(run_dir: str | Path, max_threads: int = 2) -> Config:
    """Every resource class on a ThreadPoolExecutor in this process (tests, quick runs)."""
    run_dir = Path(run_dir)
    return Config(
        executors=[ThreadPoolExecutor(label=c, max_threads=max_threads) for c in RESOURCE_CLASSES],
        run_dir=str(run_dir / "runinfo"),
        strategy="none",
    )
