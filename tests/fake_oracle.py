"""A Lennard-Jones oracle that logs its calculations and can stall: faults without a clock.

``ase:fake_oracle.LoggedLJ(sigma=..., epsilon=..., rc=...)`` (this directory on PYTHONPATH)
labels like ASE's LennardJones. Controlled by the environment (not hashed into the keys):

- ``FAKE_ORACLE_DIR``: directory of ``calls.log``, one line per calculation started
  (``start <hash> <pid> <time>``) and finished (``done <hash> <pid> <time>``; epoch s),
  appended under ``flock`` by every process; ``<hash>`` identifies the configuration
  (numbers, positions to 1e-6 Å).
- ``FAKE_ORACLE_STALL_AFTER=n``: calculation number n (counted from 0 over all processes) and
  every later one write ``stalled-<number>`` in the directory and never finish.
- ``FAKE_ORACLE_BARRIER=m``: each of the first m calculations waits until m have started (m
  writers or ranks are computing at once).
- ``FAKE_ORACLE_SLEEP=s``: seconds each calculation takes on top.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import time
from pathlib import Path

import numpy as np
from ase.calculators.lj import LennardJones


def config_hash(atoms) -> str:
    """Identity of a configuration: atomic numbers and positions on a 1e-6 Å grid."""
    pos = np.round(np.asarray(atoms.positions, dtype=float), 6) + 0.0
    return hashlib.sha1(atoms.numbers.tobytes() + pos.tobytes()).hexdigest()[:16]


def read_log(directory: str | Path, times: bool = False) -> list[tuple]:
    """``(event, hash, pid)`` per line of the call log (``times``: and the epoch time)."""
    path = Path(directory) / "calls.log"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        event, h, pid, t = line.split()
        out.append((event, h, int(pid), float(t)) if times else (event, h, int(pid)))
    return out


def _log(directory: Path, event: str, h: str) -> int:
    """Append one line; returns how many calculations had started before it."""
    with open(directory / "calls.log", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.seek(0)
        started = sum(line.startswith("start ") for line in fh)
        fh.write(f"{event} {h} {os.getpid()} {time.time():.6f}\n")
        fh.flush()
        os.fsync(fh.fileno())
        fcntl.flock(fh, fcntl.LOCK_UN)
    return started


def _started(directory: Path) -> int:
    return sum(e == "start" for e, _, _ in read_log(directory))


class LoggedLJ(LennardJones):
    """ASE's LennardJones, logging and stalling as the environment says (module docstring)."""

    def calculate(self, atoms=None, properties=None, system_changes=None):
        directory = Path(os.environ["FAKE_ORACLE_DIR"]) if "FAKE_ORACLE_DIR" in os.environ \
            else None
        h = config_hash(atoms if atoms is not None else self.atoms)
        if directory is not None:
            n = _log(directory, "start", h)
            stall = os.environ.get("FAKE_ORACLE_STALL_AFTER")
            if stall is not None and n >= int(stall):
                (directory / f"stalled-{n}").touch()
                while True:  # until killed
                    time.sleep(0.05)
            barrier = int(os.environ.get("FAKE_ORACLE_BARRIER", "0"))
            if n < barrier:
                while _started(directory) < barrier:
                    time.sleep(0.02)
        time.sleep(float(os.environ.get("FAKE_ORACLE_SLEEP", "0")))
        kwargs = {} if properties is None else {"properties": properties}
        if system_changes is not None:
            kwargs["system_changes"] = system_changes
        super().calculate(atoms, **kwargs)
        if directory is not None:
            _log(directory, "done", h)
