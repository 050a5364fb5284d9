"""The label store: an append-only, crash-safe, checksummed file of labelled configurations.

One file per campaign (``DATA.h5``) in two parts (written and read by :mod:`alflow.labelfile`):

1. **an HDF5 image** (format 2) that ``h5py`` reads as it is, with one row per record::

       /                  attrs: format="alflow-labels", version=2, created
       /labels/key        (n,) bytes     alflow.structures.config_key(...)
       /labels/status     (n,) bytes     "ok" | "failed"
       /labels/energy     (n,) eV        NaN if failed
       /labels/natoms     (n,)           atoms of each record, in row order in the atom arrays
       /labels/cell       (n, 3, 3) Å;   /labels/pbc (n, 3) bool
       /labels/has_forces (n,) bool
       /labels/numbers    (m,);  /labels/positions (m, 3) Å;  /labels/forces (m, 3) eV/Å
       /labels/meta       (total,) uint8     the records' UTF-8 JSON, one after the other:
                                             reason, method (the labeller's method_info),
                                             provenance, tags, created (UTC ISO time)
       /labels/meta_len   (n,)           bytes of each record's JSON
       /labels/checksum   (n,) uint64    checksum of the record (below)

2. **a commit log** appended after the image: one frame per commit (``append_many``), each
   ``b"ALF2"``, payload length, CRC-32 of the payload, CRC-32 of the header, then the payload
   (the records' columns). A 512-byte HDF5 user block at the start of the file (ignored by
   HDF5) holds where the log starts and an epoch that changes with every image.

A commit appends one frame and ``fdatasync``s: its cost does not grow with the store. When the
log holds more than 1/16 of the records (and at least 1,000), the writer folds it into a new
image: it writes ``DATA.h5.tmp-<pid>``, fsyncs it and ``os.replace``s it over the file (the
copy-on-write of :mod:`alflow.h5commit`), which keeps the amortised cost of a commit constant.

Crash safety: HDF5 never modifies the file in place (images are written whole to a new file),
and log frames are only appended. A writer killed at any moment leaves every committed frame
and at most one incomplete frame at the end, which readers ignore and the next writer cuts off.

Checksums: every record carries a 64-bit checksum (a position-weighted sum of the 64-bit words
of its numbers, its key and the CRC-32 of its JSON). Opening a store and exporting it verify every
record; a store with a damaged record raises :class:`StoreDamaged` (reading and appending are
refused, nothing is changed) until it is salvaged: :func:`check_store` reports the damage,
:func:`salvage_store` copies every intact record into a new store.

Memory: a :class:`LabelStore` holds a copy of every record (opening a store of 100,000
6-atom records takes about 250 MB at its peak).

Concurrency: writers take an exclusive ``flock`` on ``<real file>.lock`` (symbolic links are
resolved: two names of one store share one lock), readers a shared one while they bring their
in-memory copy up to date (only the frames added since). Across nodes of a cluster, write from
one process only (the MPI driver writes from rank 0; Parsl apps return records to the campaign
driver, which appends them). The file keeps its mode through commits and images.

Stores of format 1 (one HDF5 group per record, written by alflow before format 2) are read as
they are; the first append converts them to format 2 (once, atomically).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from alflow.errors import AlflowError, InputError
from alflow.h5commit import locked, real_path, remove_stale_copies
from alflow.labelfile import (
    FORMAT,
    MAGIC,
    USER_BLOCK_HEAD,
    VERSION,
    Columns,
    LabelRecord,
    RecordIndex,
    Status,
    checksums,
    encode_frame,
    put_image,
    read_file,
    walk_log,
)

__all__ = ["FORMAT", "VERSION", "LabelRecord", "LabelStore", "Status", "StoreDamaged",
           "StoreReport", "check_store", "salvage_store"]

log = logging.getLogger(__name__)

FOLD_MIN = 1000  # fold the log into a new image at >= max(this, records / 16) records
FOLD_FRACTION = 16


class StoreDamaged(InputError):
    """A label store whose file is damaged (records fail their checksum, or unreadable)."""


def _matches(rec_status: str, meta: bytes, status: str | None, method: str | None,
             tag_filters: Mapping[str, Any]) -> bool:
    if status is not None and rec_status != status:
        return False
    if method is None and not tag_filters:
        return True
    m = json.loads(meta)
    if method is not None and m["method"].get("name") != method:
        return False
    return all(m["tags"].get(k) == v for k, v in tag_filters.items())


class LabelStore:
    """Append-only, crash-safe, checksummed store of :class:`LabelRecord` (see the module
    docstring).

    ``LabelStore(path)`` creates an empty store if ``path`` does not exist (unless
    ``create=False``: then InputError); an existing file that is not a label store raises
    :class:`~alflow.errors.InputError`, a damaged one :class:`StoreDamaged`. The store keeps an
    in-memory copy of the records, brought up to date (the new commits only) by every call.
    """

    def __init__(self, path: str | Path, create: bool = True):
        self.path = Path(path)
        self._mutex = threading.RLock()
        self._recs = RecordIndex()
        self._ident: tuple[Any, ...] | None = None  # which file and image the copy is of
        self._stamp = (-1, -1)  # (size, mtime) of the file when last read
        self._end = self._log_start = 0  # where the intact log ends, starts
        self._torn = False  # an incomplete frame follows the intact log
        self._version = VERSION
        self._image_rows = self._log_rows = 0
        self._cleaned = False
        if not os.path.lexists(self.path) or (self.path.is_symlink() and not self.path.exists()):
            if not create:
                raise InputError(f"label store not found: {self.path}")
            real = real_path(self.path)
            real.parent.mkdir(parents=True, exist_ok=True)
            with locked(real):
                if not real.exists():
                    put_image(real, Columns.of([]))
        with self._reading():
            pass

    # -- the in-memory copy ----------------------------------------------------------------
    def _damaged(self, real: Path, problems: list[str], lost: list[str]) -> StoreDamaged:
        keys = ", ".join(k[:16] for k in lost[:5]) + (" ..." if len(lost) > 5 else "")
        return StoreDamaged(
            f"label store {self.path} is damaged: {'; '.join(problems)}"
            + (f" (keys {keys})" if lost else "")
            + f". Nothing was read or changed. `alflow data {self.path} --check` reports the "
            f"damage; `alflow data {self.path} --salvage NEW.h5` copies every intact record "
            f"into NEW.h5, which can then replace {real.name}.")

    def _identity(self, real: Path) -> tuple[tuple[Any, ...], tuple[int, int]]:
        """(which file and image, (size, mtime)) of the store's file."""
        try:
            with open(real, "rb") as fh:
                st = os.fstat(fh.fileno())
                ub = fh.read(USER_BLOCK_HEAD.size)
        except FileNotFoundError:
            raise InputError(f"label store not found: {self.path}") from None
        except OSError as err:
            raise InputError(f"cannot open label store {self.path}: {err}") from None
        stamp = (st.st_size, st.st_mtime_ns)
        if ub[:len(MAGIC)] == MAGIC:
            return ("v2", st.st_dev, st.st_ino, ub), stamp
        return ("v1", st.st_dev, st.st_ino, *stamp), stamp

    def _refresh(self, real: Path, full: bool = False) -> None:
        """Bring the in-memory copy up to date (caller holds a lock); StoreDamaged if the
        file is damaged."""
        ident, stamp = self._identity(real)
        size = stamp[0]
        # same file and image, grown or untouched (a rewrite in place forces a full reading)
        if (not full and ident == self._ident and size >= self._end
                and (size != self._stamp[0] or stamp == self._stamp)):
            if size > self._end or self._torn:
                with open(real, "rb") as fh:
                    fh.seek(self._end)
                    frames = walk_log(fh.read(), self._end)
                if frames.problem:
                    self._ident = None
                    raise self._damaged(real, [frames.problem], [])
                for cols, replace in frames.frames:
                    self._add(cols, replace)
                self._end, self._torn = frames.end, frames.torn
            self._stamp = stamp
            return
        self._ident = None
        for _ in range(3):  # a new image put in place meanwhile (no working lock): read again
            image, frames = read_file(real)
            again, stamp_again = self._identity(real)
            if again == ident:
                break
            ident, stamp = again, stamp_again
        problems = image.problems + ([frames.problem] if frames.problem else [])
        if problems:
            raise self._damaged(real, problems, image.lost)
        self._version, self._log_start = image.version, image.log_start
        self._recs = RecordIndex()
        self._recs.add(image.columns, False)
        self._image_rows, self._log_rows = len(image.columns), 0
        for cols, replace in frames.frames:
            self._add(cols, replace)
        self._end, self._torn, self._ident, self._stamp = frames.end, frames.torn, ident, stamp

    def _add(self, cols: Columns, replace_failed: bool) -> None:
        self._recs.add(cols, replace_failed)
        self._log_rows += len(cols)

    @contextlib.contextmanager
    def _reading(self, full: bool = False) -> Iterator[RecordIndex]:
        real = real_path(self.path)
        with self._mutex, locked(real, shared=True):
            self._refresh(real, full)
            yield self._recs

    # -- reading ---------------------------------------------------------------------------
    def keys(self) -> list[str]:
        """All stored keys (ok and failed), in key order."""
        with self._reading() as recs:
            return sorted(recs.where)

    def __len__(self) -> int:
        with self._reading() as recs:
            return len(recs.where)

    def has(self, key: str) -> bool:
        """Whether ``key`` has a record (ok or failed)."""
        with self._reading() as recs:
            return key in recs.where

    __contains__ = has

    def get(self, key: str) -> LabelRecord | None:
        """The record of ``key``, or None."""
        return self.get_many([key]).get(key)

    def get_many(self, keys: Iterable[str]) -> dict[str, LabelRecord]:
        """Records of the given keys that are stored."""
        with self._reading() as recs:
            rows = recs.rows(set(keys))
        return {c.keys[i]: c.record(i) for c, i in rows}

    def records(self, status: str | None = "ok", method: str | None = None,
                **tag_filters: Any) -> Iterator[LabelRecord]:
        """Records with ``status`` (None: any), method name (e.g. ``pyscf:pbe/def2-svp``;
        None: any) and every ``tag=value`` given, in key order."""
        with self._reading() as recs:
            rows = recs.rows()
        for c, i in rows:
            if _matches(c.status[i], c.meta[i], status, method, tag_filters):
                yield c.record(i)

    def read_atoms(self, status: str | None = "ok", method: str | None = None,
                   **tag_filters: Any) -> list[Atoms]:
        """Selected records as ASE Atoms with SinglePointCalculator (see
        :meth:`LabelRecord.to_atoms`)."""
        return [r.to_atoms() for r in self.records(status, method, **tag_filters)]

    def export_extxyz(self, path: str | Path, status: str | None = "ok",
                      method: str | None = None, **tag_filters: Any) -> int:
        """Write the selected records to an extended-XYZ file ``ase.io.read`` opens (energy in
        eV, forces in eV/Å; non-scalar tags as JSON text), after verifying every record of
        the file against its checksum. Returns the number written."""
        from ase.io import write

        with self._reading(full=True):
            pass
        images = self.read_atoms(status, method, **tag_filters)
        for atoms in images:
            for k, v in list(atoms.info.items()):
                if not isinstance(v, str | int | float | bool | np.integer | np.floating):
                    atoms.info[k] = json.dumps(v, default=str)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write(str(path), images, format="extxyz", parallel=False)
        return len(images)

    def summary(self) -> dict[str, Any]:
        """Counts by status and by method, and the energy range (eV) of ok records per method."""
        by_status: dict[str, int] = {}
        by_method: dict[str, dict[str, Any]] = {}
        reasons: dict[str, int] = {}
        with self._reading() as recs:
            rows = recs.rows()
        for c, i in rows:
            st = c.status[i]
            meta = json.loads(c.meta[i])
            by_status[st] = by_status.get(st, 0) + 1
            name = meta["method"].get("name", "?")
            m = by_method.setdefault(name, {"ok": 0, "failed": 0, "energy_min_ev": None,
                                            "energy_max_ev": None, "natoms": set()})
            m[st] += 1
            m["natoms"].add(int(c.natoms[i]))
            if st == "ok":
                e = float(c.energy[i])
                m["energy_min_ev"] = e if m["energy_min_ev"] is None else min(
                    m["energy_min_ev"], e)
                m["energy_max_ev"] = e if m["energy_max_ev"] is None else max(
                    m["energy_max_ev"], e)
            else:
                reason = str(meta["reason"]).split(":")[0][:60]
                reasons[reason] = reasons.get(reason, 0) + 1
        for m in by_method.values():
            m["natoms"] = sorted(m["natoms"])
        return {"path": str(self.path), "records": sum(by_status.values()),
                "by_status": by_status, "by_method": by_method, "failure_reasons": reasons}

    # -- writing ---------------------------------------------------------------------------
    def append_many(self, records: Iterable[LabelRecord], replace_failed: bool = False) -> int:
        """Add records whose key is not stored yet, in one atomic, durable commit; returns how
        many were added. With ``replace_failed`` an ok record replaces a stored failed one
        (retry). Raises :class:`StoreDamaged` (and writes nothing) if the store is damaged."""
        records = list(records)
        if not records:
            return 0
        real = real_path(self.path)
        with self._mutex, locked(real):
            self._refresh(real)
            seen: dict[str, str] = {}
            todo = []
            for r in records:
                old = seen.get(r.key) or self._recs.status(r.key)
                if old is None or (replace_failed and old == "failed" and r.status == "ok"):
                    todo.append(r)
                    seen[r.key] = r.status
            if not todo:
                return 0
            if not self._cleaned:
                remove_stale_copies(real)
                self._cleaned = True
            if self._version < VERSION:
                log.info("converting label store %s to format %d (once)", self.path, VERSION)
                self._fold(real)
            cols = Columns.of(todo)
            self._write_frame(real, encode_frame(cols, replace_failed))
            self._add(cols, replace_failed)
            if self._log_rows >= max(FOLD_MIN, self._image_rows // FOLD_FRACTION):
                self._fold(real)
            return len(todo)

    def _write_frame(self, real: Path, frame: bytes) -> None:
        """Append one frame after the intact log and fdatasync (caller holds the lock). A
        failed write (e.g. a full disk) leaves at most an incomplete frame, cut off later."""
        try:
            fd = os.open(real, os.O_WRONLY)
            try:
                if self._torn:
                    log.warning("%s: removing an incomplete commit left by an interrupted "
                                "writer", self.path)
                    os.ftruncate(fd, self._end)
                    self._torn = False
                os.pwrite(fd, frame, self._end)
                os.fdatasync(fd)
                st = os.fstat(fd)
            finally:
                os.close(fd)
        except OSError as err:
            self._ident = None  # read the file again before the next commit
            raise AlflowError(f"cannot write label store {self.path}: {err.strerror}; the "
                              f"labels of this commit were not stored") from None
        self._stamp = (st.st_size, st.st_mtime_ns)
        self._end += len(frame)

    def append(self, record: LabelRecord, replace_failed: bool = False) -> bool:
        """Add ``record`` atomically; False if its key was already stored (append-only)."""
        return self.append_many([record], replace_failed) == 1

    def merge(self, other: str | Path | LabelStore, replace_failed: bool = False) -> int:
        """Append every record of another store (e.g. a shard written by one task) that is not
        stored here; returns how many were added."""
        other = other if isinstance(other, LabelStore) else LabelStore(other, create=False)
        return self.append_many(other.records(status=None), replace_failed)

    def compact(self) -> None:
        """Fold the commit log into a new HDF5 image now (``h5py`` then sees every record)."""
        real = real_path(self.path)
        with self._mutex, locked(real):
            self._refresh(real)
            if self._version < VERSION or self._end != self._log_start or self._torn:
                self._fold(real)

    def _fold(self, real: Path) -> None:
        """Put every live record into a new image (copy-on-write; caller holds the lock)."""
        live = self._recs.live()
        put_image(real, live)
        self._ident, self._stamp = self._identity(real)
        self._recs = RecordIndex()
        self._recs.add(live, False)
        self._version, self._image_rows, self._log_rows = VERSION, len(live), 0
        self._end = self._log_start = self._stamp[0]
        self._torn = False


# -- damaged stores ---------------------------------------------------------------------------
@dataclass
class StoreReport:
    """What :func:`check_store` / :func:`salvage_store` found: intact records, the keys of
    damaged ones (where still known) and the problems, in words."""

    path: str
    version: int
    intact: int
    lost_keys: list[str]
    problems: list[str]
    uncounted: bool  # some records were lost where they cannot be named or counted

    @property
    def healthy(self) -> bool:
        return not self.problems


def _salvage_read(path: str | Path) -> tuple[StoreReport, Columns]:
    real = real_path(path)
    if not real.exists():
        raise InputError(f"label store not found: {path}")
    with locked(real, shared=True):
        image, frames = read_file(real, tolerant=True)
    recs = RecordIndex()
    recs.add(image.columns, False)
    lost = list(image.lost)
    for cols, replace in frames.frames:
        ok = checksums(cols) == cols.checksum
        lost += [k for k, good in zip(cols.keys, ok, strict=True) if not good]
        recs.add(cols.take(np.flatnonzero(ok)), replace)
    problems = image.problems + ([frames.problem] if frames.problem else [])
    live = recs.live()
    lost = sorted(set(lost) - set(recs.where))
    uncounted = image.uncounted or frames.problem is not None
    return StoreReport(str(path), image.version, len(live), lost, problems, uncounted), live


def check_store(path: str | Path) -> StoreReport:
    """Verify every record of the store at ``path`` (never raises for damage: reports it)."""
    return _salvage_read(path)[0]


def salvage_store(path: str | Path, out: str | Path) -> StoreReport:
    """Copy every intact record of the (damaged) store at ``path`` into a new store ``out``
    (which must not exist); returns what was found and lost."""
    out = Path(out)
    if os.path.lexists(out):
        raise InputError(f"{out} exists; --salvage writes a new store (give a new file name)")
    report, live = _salvage_read(path)
    real = real_path(out)
    real.parent.mkdir(parents=True, exist_ok=True)
    with locked(real):
        put_image(real, live)
    return report
