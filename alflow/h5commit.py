"""Crash-safe writes to an HDF5 file: a lock on the real path and copy-on-write commits.

HDF5 has no journal, so a writer killed while the library flushes its metadata can leave a
file unreadable. The stores of alflow (labels, spectra) therefore never let HDF5 modify their
file in place: a writer holds an ``fcntl`` lock on ``<real file>.lock``, writes a new file
``<real file>.tmp-<pid>`` next to the real one, fsyncs it, gives it the mode of the file it
replaces and ``os.replace``s it over the original (atomic on POSIX). A writer killed at any
moment leaves either the old file or the new one; copies left by killed writers are removed by
the next writer.

Paths are resolved first (:func:`real_path`): a store reached through a symbolic link keeps
its link, and two names of one file share one lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import h5py

log = logging.getLogger(__name__)


def real_path(path: str | Path) -> Path:
    """``path`` with every symbolic link resolved (the file that is read and written)."""
    return Path(os.path.realpath(path))


@contextlib.contextmanager
def locked(path: Path, shared: bool = False) -> Iterator[None]:
    """Hold an ``flock`` on ``<real path>.lock``: exclusive (writers) or shared (readers).

    Writers on one file system are serialised, whatever name they use for the file. A shared
    lock that cannot be taken because the lock file cannot be created (a read-only directory,
    where no writer can work either) is skipped.
    """
    real = real_path(path)
    lock = real.with_name(real.name + ".lock")
    try:
        fh = open(lock, "a")  # noqa: SIM115 (closed below)
    except OSError:
        if not shared:
            raise
        yield
        return
    with fh:
        fcntl.flock(fh, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def fsync_path(path: Path, directory: bool = False) -> None:
    """fsync a file (or, with ``directory``, a directory's entries)."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale_copies(real: Path) -> None:
    """Remove ``<real>.tmp-*`` left by killed writers (call with the exclusive lock held)."""
    for stale in real.parent.glob(real.name + ".tmp-*"):
        log.warning("removing %s left by an interrupted write", stale)
        stale.unlink(missing_ok=True)


def replace_with(real: Path, tmp: Path) -> None:
    """Atomically put the finished file ``tmp`` in place of ``real`` (caller holds the lock):
    fsync, the mode of the file it replaces (or 0o666 minus the umask for a new one),
    ``os.replace``, fsync of the directory."""
    try:
        mode = stat.S_IMODE(os.stat(real).st_mode)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    os.chmod(tmp, mode)
    fsync_path(tmp)
    os.replace(tmp, real)
    fsync_path(real.parent, directory=True)


def commit_copy(path: Path, write: Callable[[h5py.File], int],
                init: Callable[[h5py.File], None] | None = None) -> int:
    """Copy-on-write commit; the caller holds :func:`locked`.

    ``init`` (given only to create the file) fills a new empty file; otherwise the existing
    file is copied. ``write(f)`` adds records to the copy and returns how many it added; a
    commit that adds nothing (and creates nothing) leaves the original untouched.
    Returns the number of records added.
    """
    real = real_path(path)
    remove_stale_copies(real)
    tmp = real.with_name(f"{real.name}.tmp-{os.getpid()}")
    try:
        if init is not None:
            with h5py.File(tmp, "w", libver=("v110", "latest")) as f:
                init(f)
        else:
            shutil.copyfile(real, tmp)
        with h5py.File(tmp, "a") as f:
            added = write(f)
        if added == 0 and init is None:
            tmp.unlink()
            return 0
        replace_with(real, tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return added
