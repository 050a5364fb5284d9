"""Crash-safe writes to an HDF5 file: an exclusive lock and copy-on-write commits.

HDF5 has no journal, so a writer killed while the library flushes its metadata can leave a
file unreadable. The stores of alflow (labels, spectra) therefore never modify their file in
place: a writer holds an ``fcntl`` lock on ``<file>.lock``, copies the file to
``<file>.tmp-<pid>``, adds its records, fsyncs, and ``os.replace``s the copy over the original
(atomic on POSIX). A writer killed at any moment leaves either the old file or the new one;
copies left by killed writers are removed by the next writer. Readers take no lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import h5py

log = logging.getLogger(__name__)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``<path>.lock`` (serialises writers on one file system)."""
    with open(path.with_name(path.name + ".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _fsync(path: Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit_copy(path: Path, write: Callable[[h5py.File], int],
                init: Callable[[h5py.File], None] | None = None) -> int:
    """Copy-on-write commit; the caller holds :func:`locked`.

    ``init`` (given only to create the file) fills a new empty file; otherwise the existing
    file is copied. ``write(f)`` adds records to the copy and returns how many it added; a
    commit that adds nothing (and creates nothing) leaves the original untouched.
    Returns the number of records added.
    """
    for stale in path.parent.glob(path.name + ".tmp-*"):
        # under the lock no other writer is active: every copy is left by a killed one
        log.warning("removing %s left by an interrupted write", stale)
        stale.unlink(missing_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    if init is not None:
        with h5py.File(tmp, "w", libver=("v110", "latest")) as f:
            init(f)
    else:
        shutil.copyfile(path, tmp)
    try:
        with h5py.File(tmp, "a") as f:
            added = write(f)
        if added == 0 and init is None:
            tmp.unlink()
            return 0
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync(path.parent, directory=True)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return added
