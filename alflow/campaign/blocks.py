"""Watching a campaign's Slurm blocks for one deadlock the scheduler never reports: a block
pending for ``Resources`` while the only node that could take it is the one the driver's own
job holds (exclusive blocks, or more cores than remain beside the driver).

:func:`blocked_by_driver` is a pure function of ``squeue`` and ``sinfo`` output;
:class:`BlockWatch` polls them from a thread of the driver and reports the fix once.
"""

from __future__ import annotations

import logging
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

SQUEUE_FORMAT = "%i|%T|%r|%P|%N|%o"
SINFO_FORMAT = "%N|%P|%t"
WATCH_PERIOD_S = 15.0
FIX = ("set `slurm.exclusive: false` and `slurm.cores_per_node` to the cores a block may "
       "take beside the driver in the site file (docs/hpc.md, 'Launching a campaign with "
       "sbatch'), or submit the driver where other nodes are free")


@dataclass(frozen=True)
class Job:
    """One ``squeue`` row."""

    id: str
    state: str
    reason: str
    partition: str
    nodes: str
    command: str


def parse_squeue(text: str) -> list[Job]:
    """Rows of ``squeue -h -o '%i|%T|%r|%P|%N|%o'``."""
    jobs = []
    for line in text.splitlines():
        parts = line.split("|", 5)
        if len(parts) == 6:
            jobs.append(Job(*(p.strip() for p in parts)))
    return jobs


def parse_sinfo(text: str) -> dict[str, dict[str, str]]:
    """``sinfo -h -N -o '%N|%P|%t'`` as partition -> {node: state} (``*`` of the default
    partition and state flags such as ``idle~`` stripped)."""
    out: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) == 3 and parts[0]:
            node, part, state = parts
            out.setdefault(part.rstrip("*"), {})[node] = state.rstrip("*~#!%$@^-+")
    return out


def blocked_by_driver(jobs: list[Job], partitions: dict[str, dict[str, str]], driver_job: str,
                      runinfo: str) -> str | None:
    """A message naming the fix when a block of this run (batch script under ``runinfo``) is
    pending for Resources while the driver's job runs on a node of the block's partition and no
    other node there is idle; else None."""
    driver = next((j for j in jobs if j.id == driver_job and j.state == "RUNNING"), None)
    if driver is None:
        return None
    prefix = runinfo.rstrip("/") + "/"
    for block in jobs:
        if not (block.command.startswith(prefix) and block.state == "PENDING"
                and block.reason == "Resources"):
            continue
        nodes = partitions.get(block.partition, {})
        if driver.nodes not in nodes:
            continue
        if any(state == "idle" for node, state in nodes.items() if node != driver.nodes):
            continue
        others = len(nodes) - 1
        where = (f"node {driver.nodes}, the only node of partition {block.partition}"
                 if not others else f"node {driver.nodes}, the only node of partition "
                 f"{block.partition} not taken by other jobs")
        return (f"Slurm block job {block.id} is pending (Reason=Resources) while the driver's "
                f"own job {driver.id} holds {where}: blocks that need the whole node "
                f"(exclusive) or more cores than remain beside the driver never start there. "
                f"Fix: {FIX}.")
    return None


def _run(cmd: list[str], timeout: float) -> str | None:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return p.stdout if p.returncode == 0 else None


class BlockWatch:
    """Thread polling squeue/sinfo every ``period`` s; calls ``report(message)`` once when
    :func:`blocked_by_driver` holds on two polls in a row (a block just submitted may show
    Resources for a moment)."""

    def __init__(self, driver_job: str, runinfo: str, report: Callable[[str], None],
                 period: float = WATCH_PERIOD_S, timeout: float = 30.0):
        self.driver_job, self.runinfo, self.report = driver_job, runinfo, report
        self.period, self.timeout = period, timeout
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="alflow-block-watch",
                                        daemon=True)

    def check(self) -> str | None:
        squeue = _run(["squeue", "-h", "-o", SQUEUE_FORMAT], self.timeout)
        sinfo = _run(["sinfo", "-h", "-N", "-o", SINFO_FORMAT], self.timeout)
        if squeue is None or sinfo is None:
            return None
        return blocked_by_driver(parse_squeue(squeue), parse_sinfo(sinfo), self.driver_job,
                                 self.runinfo)

    def _loop(self) -> None:
        seen = None
        while not self._stop.wait(self.period):
            msg = self.check()
            if msg is not None and seen is not None:
                self.report(msg)
                return
            seen = msg

    def __enter__(self) -> BlockWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
