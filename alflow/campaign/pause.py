"""Named pause points, for testing interruption at a precise moment.

With ``ALFLOW_PAUSE_AT=<point>:<generation>`` in the environment (points: ``label``,
``train``, ``generation``), the process reaching that point records a ``paused`` event in
``events.jsonl`` and sleeps, so a test can ``kill -9`` the driver exactly there. Without the
variable this does nothing.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from alflow.campaign.rundir import append_line
from alflow.runlayout import RunLayout

ENV = "ALFLOW_PAUSE_AT"


def pause_point(point: str, generation: int, run_root: str | Path) -> None:
    """Sleep forever if ``ALFLOW_PAUSE_AT`` names this point and generation."""
    if os.environ.get(ENV) != f"{point}:{generation}":
        return
    append_line(RunLayout(run_root).events,
                {"event": "paused", "point": point, "generation": generation,
                 "pid": os.getpid(), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    while True:
        time.sleep(3600)
