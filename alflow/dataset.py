"""The label store: an append-only, crash-safe HDF5 file of labelled configurations.

Layout of ``DATA.h5`` (one file per campaign)::

    /                     attrs: format="alflow-labels", version=1
    /labels/<key>/        one group per record, <key> = alflow.structures.config_key(...)
        numbers (N,) int64, positions (N, 3) Å, cell (3, 3) Å, pbc (3,) bool
        forces (N, 3) eV/Å                       (ok records only)
        attrs: status ("ok" | "failed"), reason, energy (eV, NaN if failed),
               method (JSON: the labeller's method_info), provenance (JSON), tags (JSON),
               created (UTC ISO time)

Crash safety (copy-on-write): ``DATA.h5`` is never modified in place. A writer takes an
exclusive ``fcntl`` lock on ``DATA.h5.lock``, copies the file to ``DATA.h5.tmp-<pid>``, adds its
records there, closes and fsyncs it, then ``os.replace``s it over ``DATA.h5`` (atomic on POSIX)
and fsyncs the directory. A writer killed at any moment (SIGKILL, node failure) leaves either
the old file or the new one, never a half-written one; stale ``.tmp-*`` files are removed by the
next writer. Readers take no lock: an open reader keeps the inode it opened.

Concurrency: any number of readers; writers on one machine (or a file system with working
``flock``) are serialised by the lock. Across nodes of a cluster, write from one process only
(the MPI driver writes from rank 0; Parsl apps return records to the campaign driver, which
appends them).
Cost: an append copies the file (~4 kB per record of 6 atoms; 11 ms at 1000 records); batch
appends with :meth:`LabelStore.append_many`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from alflow.errors import InputError
from alflow.h5commit import commit_copy, locked

log = logging.getLogger(__name__)

FORMAT = "alflow-labels"
VERSION = 1
GROUP = "labels"
Status = Literal["ok", "failed"]


@dataclass
class LabelRecord:
    """One labelled configuration: structure (Å), energy (eV), forces (eV/Å) and metadata.

    ``method`` is the labeller's ``method_info`` (hashed into ``key``); ``provenance`` holds
    code versions, wall time, SCF iterations, host...; ``tags`` are free-form (``state``,
    ``generation``...). ``energy``/``forces`` are None for failed records.
    """

    key: str
    numbers: np.ndarray
    positions: np.ndarray
    status: Status
    energy: float | None = None
    forces: np.ndarray | None = None
    reason: str = ""
    cell: np.ndarray = field(default_factory=lambda: np.zeros((3, 3)))
    pbc: np.ndarray = field(default_factory=lambda: np.zeros(3, dtype=bool))
    method: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, Any] = field(default_factory=dict)
    created: str = ""

    def __post_init__(self) -> None:
        self.numbers = np.asarray(self.numbers, dtype=np.int64).reshape(-1)
        n = len(self.numbers)
        self.positions = np.asarray(self.positions, dtype=np.float64).reshape(n, 3)
        self.cell = np.asarray(self.cell, dtype=np.float64).reshape(3, 3)
        self.pbc = np.asarray(self.pbc, dtype=bool).reshape(3)
        if self.status not in ("ok", "failed"):
            raise ValueError(f"status must be 'ok' or 'failed', got {self.status!r}")
        if self.status == "ok":
            if self.energy is None or not np.isfinite(self.energy):
                raise ValueError(f"record {self.key[:12]}: an ok record needs a finite energy")
            if self.forces is None:
                raise ValueError(f"record {self.key[:12]}: an ok record needs forces")
        if self.forces is not None:
            self.forces = np.asarray(self.forces, dtype=np.float64).reshape(n, 3)
        if not self.created:
            self.created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    @classmethod
    def from_atoms(cls, atoms: Atoms, key: str, status: Status, energy: float | None = None,
                   forces: np.ndarray | None = None, reason: str = "",
                   method: Mapping[str, Any] | None = None,
                   provenance: Mapping[str, Any] | None = None,
                   tags: Mapping[str, Any] | None = None) -> LabelRecord:
        """A record of ``atoms`` (structure copied) with the given label."""
        return cls(key=key, numbers=atoms.numbers.copy(), positions=atoms.positions.copy(),
                   cell=atoms.cell[:].copy(), pbc=atoms.pbc.copy(), status=status,
                   energy=energy, forces=forces, reason=reason, method=dict(method or {}),
                   provenance=dict(provenance or {}), tags=dict(tags or {}))

    def to_atoms(self) -> Atoms:
        """ASE Atoms with a SinglePointCalculator (ok records) and ``info`` holding ``key``,
        ``status``, ``reason`` (failed), ``method`` (its name) and every tag."""
        atoms = Atoms(numbers=self.numbers, positions=self.positions, cell=self.cell,
                      pbc=self.pbc)
        atoms.info.update(self.tags)
        atoms.info["key"] = self.key
        atoms.info["status"] = self.status
        atoms.info["method"] = str(self.method.get("name", ""))
        if self.status == "ok":
            atoms.calc = SinglePointCalculator(atoms, energy=float(self.energy),
                                               forces=self.forces.copy())
        else:
            atoms.info["reason"] = self.reason
        return atoms


def _write_record(g: h5py.Group, rec: LabelRecord) -> None:
    r = g.create_group(rec.key)
    r["numbers"] = rec.numbers
    r["positions"] = rec.positions
    r["cell"] = rec.cell
    r["pbc"] = rec.pbc
    if rec.forces is not None:
        r["forces"] = rec.forces
    r.attrs["status"] = rec.status
    r.attrs["reason"] = rec.reason
    r.attrs["energy"] = np.nan if rec.energy is None else float(rec.energy)
    r.attrs["method"] = json.dumps(rec.method, sort_keys=True, default=str)
    r.attrs["provenance"] = json.dumps(rec.provenance, sort_keys=True, default=str)
    r.attrs["tags"] = json.dumps(rec.tags, sort_keys=True, default=str)
    r.attrs["created"] = rec.created


def _read_record(key: str, r: h5py.Group) -> LabelRecord:
    a = r.attrs
    e = float(a["energy"])
    return LabelRecord(
        key=key, numbers=r["numbers"][()], positions=r["positions"][()], cell=r["cell"][()],
        pbc=r["pbc"][()], status=str(a["status"]), reason=str(a["reason"]),
        energy=None if np.isnan(e) else e,
        forces=r["forces"][()] if "forces" in r else None,
        method=json.loads(a["method"]), provenance=json.loads(a["provenance"]),
        tags=json.loads(a["tags"]), created=str(a["created"]),
    )


def _matches(a: h5py.AttributeManager, status: str | None, method: str | None,
             tag_filters: Mapping[str, Any]) -> bool:
    if status is not None and a["status"] != status:
        return False
    if method is not None and json.loads(a["method"]).get("name") != method:
        return False
    if tag_filters:
        tags = json.loads(a["tags"])
        return all(tags.get(k) == v for k, v in tag_filters.items())
    return True


class LabelStore:
    """Append-only, crash-safe HDF5 store of :class:`LabelRecord` (see the module docstring).

    ``LabelStore(path)`` creates an empty store if ``path`` does not exist (unless
    ``create=False``: then InputError); an existing file
    that is not a label store raises :class:`~alflow.errors.InputError`.
    """

    def __init__(self, path: str | Path, create: bool = True):
        self.path = Path(path)
        if not self.path.exists():
            if not create:
                raise InputError(f"label store not found: {self.path}")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._locked():
                if not self.path.exists():
                    self._commit([], replace_failed=False, create=True)
        self._check_format()

    # -- reading ---------------------------------------------------------------------------
    def _open(self) -> h5py.File:
        return h5py.File(self.path, "r")

    def _check_format(self) -> None:
        try:
            with self._open() as f:
                fmt = f.attrs.get("format")
                ok = fmt == FORMAT and GROUP in f
                version = int(f.attrs.get("version", 0))
        except OSError as err:
            raise InputError(f"cannot open label store {self.path}: {err}") from None
        if not ok:
            raise InputError(f"{self.path} is not an alflow label store "
                             f"(format attribute {fmt!r}, expected {FORMAT!r})")
        if version > VERSION:
            raise InputError(f"{self.path}: label store version {version} is newer than this "
                             f"alflow understands ({VERSION}); upgrade alflow")

    def keys(self) -> list[str]:
        """All stored keys (ok and failed)."""
        with self._open() as f:
            return list(f[GROUP].keys())

    def __len__(self) -> int:
        with self._open() as f:
            return len(f[GROUP])

    def has(self, key: str) -> bool:
        """Whether ``key`` has a record (ok or failed)."""
        with self._open() as f:
            return key in f[GROUP]

    __contains__ = has

    def get(self, key: str) -> LabelRecord | None:
        """The record of ``key``, or None."""
        with self._open() as f:
            g = f[GROUP]
            return _read_record(key, g[key]) if key in g else None

    def get_many(self, keys: Iterable[str]) -> dict[str, LabelRecord]:
        """Records of the given keys that are stored (one file open)."""
        with self._open() as f:
            g = f[GROUP]
            return {k: _read_record(k, g[k]) for k in keys if k in g}

    def records(self, status: str | None = "ok", method: str | None = None,
                **tag_filters: Any) -> Iterator[LabelRecord]:
        """Records with ``status`` (None: any), method name (e.g. ``pyscf:pbe/def2-svp``;
        None: any) and every ``tag=value`` given, in key order."""
        with self._open() as f:
            for key, r in f[GROUP].items():
                if _matches(r.attrs, status, method, tag_filters):
                    yield _read_record(key, r)

    def read_atoms(self, status: str | None = "ok", method: str | None = None,
                   **tag_filters: Any) -> list[Atoms]:
        """Selected records as ASE Atoms with SinglePointCalculator (see
        :meth:`LabelRecord.to_atoms`)."""
        return [r.to_atoms() for r in self.records(status, method, **tag_filters)]

    def export_extxyz(self, path: str | Path, status: str | None = "ok",
                      method: str | None = None, **tag_filters: Any) -> int:
        """Write the selected records to an extended-XYZ file ``ase.io.read`` opens (energy in
        eV, forces in eV/Å; non-scalar tags as JSON text). Returns the number written."""
        from ase.io import write

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
        with self._open() as f:
            for r in f[GROUP].values():
                a = r.attrs
                st = str(a["status"])
                by_status[st] = by_status.get(st, 0) + 1
                name = json.loads(a["method"]).get("name", "?")
                m = by_method.setdefault(name, {"ok": 0, "failed": 0, "energy_min_ev": None,
                                                "energy_max_ev": None, "natoms": set()})
                m[st] += 1
                m["natoms"].add(len(r["numbers"]))
                if st == "ok":
                    e = float(a["energy"])
                    m["energy_min_ev"] = e if m["energy_min_ev"] is None else min(
                        m["energy_min_ev"], e)
                    m["energy_max_ev"] = e if m["energy_max_ev"] is None else max(
                        m["energy_max_ev"], e)
                else:
                    reason = str(a["reason"]).split(":")[0][:60]
                    reasons[reason] = reasons.get(reason, 0) + 1
        for m in by_method.values():
            m["natoms"] = sorted(m["natoms"])
        return {"path": str(self.path), "records": sum(by_status.values()),
                "by_status": by_status, "by_method": by_method, "failure_reasons": reasons}

    # -- writing ---------------------------------------------------------------------------
    def _locked(self) -> contextlib.AbstractContextManager[None]:
        return locked(self.path)

    def _commit(self, records: list[LabelRecord], replace_failed: bool,
                create: bool = False) -> int:
        """Copy-on-write commit of ``records`` (caller holds the lock); returns how many were
        added."""

        def init(f: h5py.File) -> None:
            f.attrs["format"] = FORMAT
            f.attrs["version"] = VERSION
            f.attrs["created"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            f.create_group(GROUP)

        def write(f: h5py.File) -> int:
            g, added = f[GROUP], 0
            for rec in records:
                if rec.key in g:
                    old_failed = g[rec.key].attrs["status"] == "failed"
                    if not (replace_failed and old_failed and rec.status == "ok"):
                        continue
                    del g[rec.key]
                _write_record(g, rec)
                added += 1
            return added

        return commit_copy(self.path, write, init if create else None)

    def append_many(self, records: Iterable[LabelRecord], replace_failed: bool = False) -> int:
        """Add records whose key is not stored yet, in one atomic commit; returns how many were
        added. With ``replace_failed`` an ok record replaces a stored failed one (retry)."""
        records = list(records)
        if not records:
            return 0
        with self._locked():
            with self._open() as f:  # skip the copy when nothing would be added
                g = f[GROUP]
                records = [r for r in records if r.key not in g or (
                    replace_failed and r.status == "ok" and g[r.key].attrs["status"] == "failed")]
            return self._commit(records, replace_failed) if records else 0

    def append(self, record: LabelRecord, replace_failed: bool = False) -> bool:
        """Add ``record`` atomically; False if its key was already stored (append-only)."""
        return self.append_many([record], replace_failed) == 1

    def merge(self, other: str | Path | LabelStore, replace_failed: bool = False) -> int:
        """Append every record of another store (e.g. a shard written by one task) that is not
        stored here; returns how many were added."""
        other = other if isinstance(other, LabelStore) else LabelStore(other, create=False)
        return self.append_many(other.records(status=None), replace_failed)
