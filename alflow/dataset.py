"""The label store: an append-only, crash-safe, checksummed file of labelled configurations.

One file per campaign (``DATA.h5``) in two parts:

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
of its numbers, plus the CRC-32 of its text). Opening a store and exporting it verify every
record; a store with a damaged record raises :class:`StoreDamaged` (reading and appending are
refused, nothing is changed) until it is salvaged: :func:`check_store` reports the damage,
:func:`salvage_store` copies every intact record into a new store.

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
import itertools
import json
import logging
import os
import secrets
import struct
import threading
import time
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from alflow.errors import InputError
from alflow.h5commit import locked, real_path, remove_stale_copies, replace_with

log = logging.getLogger(__name__)

FORMAT = "alflow-labels"
VERSION = 2
GROUP = "labels"
Status = Literal["ok", "failed"]

USERBLOCK = 512
MAGIC = b"alflow-labels\x00v2"  # 16 bytes at the start of a format-2 file
_UB = struct.Struct("<16sQ16sI")  # magic, log start, epoch, CRC-32 of the preceding fields
FRAME = b"ALF2"
_HEAD = struct.Struct("<4sIII")  # magic, payload length, payload CRC-32, CRC-32 of the first 12
CHECKPOINT_MIN = 1000  # fold the log into a new image at >= max(this, records / 16) records
CHECKPOINT_FRACTION = 16


class StoreDamaged(InputError):
    """A label store whose file is damaged (records fail their checksum, or unreadable)."""


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


# -- columns: records as arrays, their checksums, HDF5 images and log frames ----------------
def _dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


@dataclass
class _Columns:
    """Records as columns (row i = record i; atoms of the records concatenated in row order)."""

    keys: list[str]
    status: list[str]
    meta: list[bytes]  # UTF-8 JSON: reason, method, provenance, tags, created
    energy: np.ndarray  # (n,) eV, NaN if failed
    natoms: np.ndarray  # (n,) int64
    cell: np.ndarray  # (n, 3, 3) Å
    pbc: np.ndarray  # (n, 3) bool
    has_forces: np.ndarray  # (n,) bool
    numbers: np.ndarray  # (m,) int64
    positions: np.ndarray  # (m, 3) Å
    forces: np.ndarray  # (m, 3) eV/Å, NaN where a record has none
    checksum: np.ndarray = field(default=None)  # (n,) uint64
    key_bytes: np.ndarray | None = None  # (n,) the keys as read from an image (bytes)

    def __post_init__(self) -> None:
        self.start = np.concatenate([[0], np.cumsum(self.natoms)]).astype(np.int64)
        if self.checksum is None:
            self.checksum = _checksums(self)

    def __len__(self) -> int:
        return len(self.keys)

    @classmethod
    def of(cls, recs: Sequence[LabelRecord]) -> _Columns:
        n = len(recs)
        natoms = np.array([len(r.numbers) for r in recs], dtype=np.int64)

        def cat(arrays: list[np.ndarray], shape: tuple[int, ...], dtype: Any) -> np.ndarray:
            return np.concatenate(arrays).astype(dtype) if arrays else np.zeros(shape, dtype)

        forces = [r.forces if r.forces is not None else np.full((len(r.numbers), 3), np.nan)
                  for r in recs]
        return cls(
            keys=[r.key for r in recs], status=[r.status for r in recs],
            meta=[_dumps({"reason": r.reason, "method": r.method, "provenance": r.provenance,
                          "tags": r.tags, "created": r.created}).encode() for r in recs],
            energy=np.array([np.nan if r.energy is None else float(r.energy) for r in recs],
                            dtype=np.float64),
            natoms=natoms, cell=np.array([r.cell for r in recs], dtype=np.float64).reshape(
                n, 3, 3), pbc=np.array([r.pbc for r in recs], dtype=bool).reshape(n, 3),
            has_forces=np.array([r.forces is not None for r in recs], dtype=bool),
            numbers=cat([r.numbers for r in recs], (0,), np.int64),
            positions=cat([r.positions for r in recs], (0, 3), np.float64),
            forces=cat(forces, (0, 3), np.float64))

    def record(self, i: int) -> LabelRecord:
        a, b = self.start[i], self.start[i + 1]
        meta = json.loads(self.meta[i])
        e = float(self.energy[i])
        return LabelRecord(
            key=self.keys[i], numbers=self.numbers[a:b].copy(),
            positions=self.positions[a:b].copy(), cell=self.cell[i].copy(),
            pbc=self.pbc[i].copy(), status=self.status[i], reason=meta["reason"],
            energy=None if np.isnan(e) else e,
            forces=self.forces[a:b].copy() if self.has_forces[i] else None,
            method=meta["method"], provenance=meta["provenance"], tags=meta["tags"],
            created=meta["created"])

    def take(self, rows: np.ndarray) -> _Columns:
        rows = np.asarray(rows, dtype=np.int64)
        atoms = _ranges(self.start[rows], self.natoms[rows])
        return _Columns(
            keys=[self.keys[i] for i in rows], status=[self.status[i] for i in rows],
            meta=[self.meta[i] for i in rows], energy=self.energy[rows],
            natoms=self.natoms[rows], cell=self.cell[rows], pbc=self.pbc[rows],
            has_forces=self.has_forces[rows], numbers=self.numbers[atoms],
            positions=self.positions[atoms], forces=self.forces[atoms],
            checksum=self.checksum[rows])

    @classmethod
    def concat(cls, parts: Sequence[_Columns]) -> _Columns:
        if len(parts) == 1:
            return parts[0]
        if not parts:
            return cls.of([])
        return cls(
            keys=[k for p in parts for k in p.keys], status=[s for p in parts for s in p.status],
            meta=[m for p in parts for m in p.meta],
            **{name: np.concatenate([getattr(p, name) for p in parts])
               for name in ("energy", "natoms", "cell", "pbc", "has_forces", "numbers",
                            "positions", "forces", "checksum")})


def _ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenated ``arange(s, s + c)`` for each start s and count c."""
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.cumsum(counts) - counts
    return np.repeat(starts - offsets, counts) + np.arange(total)


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_ATOMS_MIX = np.uint64(0xD6E8FEB86659FD93)


def _weights(pos: np.ndarray) -> np.ndarray:
    """(2·pos + 1)·φ modulo 2**64: odd weights, so any one changed word changes a sum."""
    return (pos.astype(np.uint64) * np.uint64(2) + np.uint64(1)) * _GOLDEN


def _words(a: np.ndarray, n: int) -> np.ndarray:
    """Rows of ``a`` (n rows, fixed-size items) as uint64 words, zero-padded to 8 bytes."""
    b = np.ascontiguousarray(a).reshape(n, -1).view(np.uint8)
    pad = -b.shape[1] % 8
    if pad:
        b = np.concatenate([b, np.zeros((n, pad), np.uint8)], axis=1)
    return b.view(np.uint64)


def _checksums(c: _Columns) -> np.ndarray:
    """The (n,) uint64 checksums of the records of ``c`` (independent of their row): the sum
    of the record's 64-bit words (fixed fields, CRC-32 of its JSON, its key; then its atoms'
    numbers, positions and forces), each times an odd weight of its position in the record."""
    n = len(c)
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    text = np.fromiter(map(zlib.crc32, c.meta), dtype=np.uint64, count=n)
    keys = c.key_bytes if c.key_bytes is not None else np.array([k.encode() for k in c.keys])
    fixed = np.concatenate([
        _words(c.energy, n), _words(c.cell, n), c.pbc.astype(np.uint64),
        _words(c.natoms, n), c.has_forces.astype(np.uint64).reshape(n, 1), text.reshape(n, 1),
        _words(np.array([s == "ok" for s in c.status], dtype=np.uint64), n),
        _words(keys, n)], axis=1)  # zero padding of the keys adds nothing
    head = (fixed * _weights(np.arange(fixed.shape[1]))).sum(axis=1, dtype=np.uint64)
    m = len(c.numbers)
    if m == 0:
        return head
    per_atom = np.concatenate([_words(c.numbers, m), _words(c.positions, m),
                               _words(c.forces, m)], axis=1)  # (m, 7)
    j = np.arange(m) - np.repeat(c.start[:-1], c.natoms)  # atom's place in its record
    atoms = (per_atom * _weights(j[:, None] * 7 + np.arange(7))).sum(axis=1, dtype=np.uint64)
    cum = np.concatenate([[np.uint64(0)], np.cumsum(atoms, dtype=np.uint64)])
    return head + _ATOMS_MIX * (cum[c.start[1:]] - cum[c.start[:-1]])


def _frame(c: _Columns, replace_failed: bool) -> bytes:
    """A log frame holding the records of ``c``."""
    head = json.dumps({"keys": c.keys, "status": c.status, "meta": [len(m) for m in c.meta],
                       "natoms": c.natoms.tolist(), "has_forces": c.has_forces.tolist(),
                       "checksum": c.checksum.tolist(), "replace_failed": replace_failed})
    head = head.encode()
    head += b" " * (-(len(head) + 4) % 8)
    payload = b"".join([struct.pack("<I", len(head)), head, c.energy.tobytes(),
                        c.cell.tobytes(), c.numbers.tobytes(), c.positions.tobytes(),
                        c.forces.tobytes(), c.pbc.tobytes(), *c.meta])
    crc = zlib.crc32(payload)
    first = struct.pack("<4sII", FRAME, len(payload), crc)
    return first + struct.pack("<I", zlib.crc32(first)) + payload


def _unframe(payload: bytes) -> tuple[_Columns, bool]:
    (hl,) = struct.unpack_from("<I", payload)
    h = json.loads(payload[4:4 + hl])
    n, natoms = len(h["keys"]), np.array(h["natoms"], dtype=np.int64)
    m = int(natoms.sum())
    off = 4 + hl

    def take(count: int, dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
        nonlocal off
        a = np.frombuffer(payload, dtype=dtype, count=count, offset=off).reshape(shape).copy()
        off += a.nbytes
        return a

    energy = take(n, np.float64, (n,))
    cell = take(9 * n, np.float64, (n, 3, 3))
    numbers = take(m, np.int64, (m,))
    positions = take(3 * m, np.float64, (m, 3))
    forces = take(3 * m, np.float64, (m, 3))
    pbc = take(3 * n, bool, (n, 3))
    meta = []
    for length in h["meta"]:
        meta.append(payload[off:off + length])
        off += length
    if off != len(payload):
        raise ValueError("payload of unexpected length")
    cols = _Columns(keys=h["keys"], status=h["status"], meta=meta, energy=energy,
                    natoms=natoms, cell=cell, pbc=pbc,
                    has_forces=np.array(h["has_forces"], dtype=bool), numbers=numbers,
                    positions=positions, forces=forces,
                    checksum=np.array(h["checksum"], dtype=np.uint64))
    return cols, bool(h["replace_failed"])


@dataclass
class _Frames:
    """The frames found in a log: ``(columns, replace_failed)`` each; where the intact log
    ends; whether an incomplete frame (an interrupted commit) follows; a problem if a frame is
    damaged (the walk stops there)."""

    frames: list[tuple[_Columns, bool]]
    end: int
    torn: bool = False
    problem: str | None = None


def _read_frame(buf: bytes, pos: int, base: int = 0) -> tuple[str, Any]:
    """The frame at ``buf[pos:]`` (``buf`` starts at byte ``base`` of the file):
    ("ok", (frame, next position)) | ("torn", None) | ("damaged", why)."""
    if len(buf) - pos < _HEAD.size:
        return "torn", None
    magic, length, crc, hcrc = _HEAD.unpack_from(buf, pos)
    if magic != FRAME or zlib.crc32(buf[pos:pos + 12]) != hcrc:
        return "damaged", f"the header of the commit at byte {base + pos} is damaged"
    body = pos + _HEAD.size
    if body + length > len(buf):
        return "torn", None
    payload = buf[body:body + length]
    if zlib.crc32(payload) != crc:
        return "damaged", f"the commit at byte {base + pos} fails its CRC-32"
    try:
        return "ok", (_unframe(payload), body + length)
    except (ValueError, KeyError, TypeError, struct.error) as err:
        return "damaged", f"the commit at byte {base + pos} cannot be decoded ({err})"


def _walk(buf: bytes, base: int) -> _Frames:
    """Frames of ``buf`` (the file from byte ``base``) until its end or the first damage."""
    out, pos = _Frames([], base), 0
    while pos < len(buf):
        kind, val = _read_frame(buf, pos, base)
        if kind == "torn":
            out.torn = True
            break
        if kind == "damaged":
            out.problem = val
            break
        out.frames.append(val[0])
        pos = val[1]
    out.end = base + pos
    return out


def _write_image(path: Path, c: _Columns) -> bytes:
    """Write ``c`` as a new format-2 file at ``path`` (no log); returns its epoch."""
    with h5py.File(path, "w", userblock_size=USERBLOCK, libver=("v110", "latest")) as f:
        f.attrs["format"] = FORMAT
        f.attrs["version"] = VERSION
        f.attrs["created"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        g = f.create_group(GROUP)
        keys = [k.encode() for k in c.keys]
        g["key"] = np.array(keys, dtype=f"S{max([1, *map(len, keys)])}")
        g["status"] = np.array([s.encode() for s in c.status], dtype="S6")
        g["meta"] = np.frombuffer(b"".join(c.meta), dtype=np.uint8)
        g["meta_len"] = np.array([len(m) for m in c.meta], dtype=np.int64)
        for name in ("energy", "natoms", "cell", "pbc", "has_forces", "numbers", "positions",
                     "forces", "checksum"):
            g[name] = getattr(c, name)
    epoch = secrets.token_bytes(16)
    head = struct.pack("<16sQ16s", MAGIC, os.path.getsize(path), epoch)
    with open(path, "r+b") as fh:
        fh.write(head + struct.pack("<I", zlib.crc32(head)))
    return epoch


@dataclass
class _Image:
    """What a file holds: the records read (intact ones), those lost, and the problems."""

    version: int
    columns: _Columns
    epoch: bytes = b""
    log_start: int = 0
    lost: list[str] = field(default_factory=list)  # keys of records failing their checksum
    problems: list[str] = field(default_factory=list)
    uncounted: bool = False  # records were lost in a part where they cannot be named


def _verified(c: _Columns, image: _Image, where: str) -> _Columns:
    bad = np.flatnonzero(_checksums(c) != c.checksum)
    if len(bad) == 0:
        return c
    image.lost += [c.keys[i] for i in bad]
    image.problems.append(f"{len(bad)} record(s) {where} fail their checksum")
    return c.take(np.setdiff1d(np.arange(len(c)), bad))


def _read_v2(f: h5py.File, image: _Image) -> _Columns:
    g = f[GROUP]
    cols = {name: g[name][()] for name in (
        "key", "status", "meta", "meta_len", "energy", "natoms", "cell", "pbc", "has_forces",
        "checksum", "numbers", "positions", "forces")}
    n = len(cols["key"])
    if any(len(cols[k]) != n for k in ("status", "meta_len", "energy", "natoms", "checksum")):
        raise ValueError("columns of different lengths")
    blob, ends = cols.pop("meta").tobytes(), np.cumsum(cols.pop("meta_len")).tolist()
    status, key_bytes = cols.pop("status"), cols.pop("key")
    return _Columns(
        keys=[k.decode() for k in key_bytes], key_bytes=key_bytes,
        status=np.where(status == b"ok", "ok", "failed").tolist(),
        meta=[blob[a:b] for a, b in zip([0, *ends][:-1], ends, strict=True)],
        **{k: v.astype(np.uint64) if k == "checksum" else v for k, v in cols.items()})


def _read_v1(f: h5py.File, image: _Image) -> _Columns:
    recs = []
    for key in f[GROUP]:
        try:
            r = f[GROUP][key]
            a = r.attrs
            e = float(a["energy"])
            recs.append(LabelRecord(
                key=key, numbers=r["numbers"][()], positions=r["positions"][()],
                cell=r["cell"][()], pbc=r["pbc"][()], status=str(a["status"]),
                reason=str(a["reason"]), energy=None if np.isnan(e) else e,
                forces=r["forces"][()] if "forces" in r else None,
                method=json.loads(a["method"]), provenance=json.loads(a["provenance"]),
                tags=json.loads(a["tags"]), created=str(a["created"])))
        except Exception as err:  # noqa: BLE001 (any failure of a damaged file)
            image.lost.append(key)
            image.problems.append(f"record {key[:16]} is unreadable ({type(err).__name__})")
    return _Columns.of(recs)


def _read_file(real: Path, tolerant: bool = False) -> tuple[_Image, _Frames]:
    """Read a store file: its image (records verified against their checksums) and its log.

    Damage is reported in the image's ``problems`` (the log's in the frames' ``problem``);
    ``tolerant`` (salvage) also looks past a damaged frame for the intact ones after it.
    Raises InputError for a file that is not a label store.
    """
    try:
        with open(real, "rb") as fh:
            ub = fh.read(_UB.size)
            size = os.fstat(fh.fileno()).st_size
    except OSError as err:
        raise InputError(f"cannot open label store {real}: {err}") from None
    ours = ub[:len(MAGIC)] == MAGIC
    image = _Image(version=VERSION if ours else 1, columns=_Columns.of([]))
    damaged_header = "the header (user block) is damaged"
    if ours:
        _, image.log_start, image.epoch, crc = _UB.unpack(ub)
        if zlib.crc32(ub[:_UB.size - 4]) != crc or not USERBLOCK <= image.log_start <= size:
            image.problems.append(damaged_header)
            image.log_start = 0
    try:
        with h5py.File(real, "r") as f:
            fmt, version = f.attrs.get("format"), int(f.attrs.get("version", 0))
            if not ours and version == VERSION:
                ours, image.version = True, VERSION
                image.problems.append(damaged_header)
            if not ours and (fmt != FORMAT or GROUP not in f):
                raise InputError(f"{real} is not an alflow label store "
                                 f"(format attribute {fmt!r}, expected {FORMAT!r})")
            if version > VERSION:
                raise InputError(f"{real}: label store version {version} is newer than this "
                                 f"alflow understands ({VERSION}); upgrade alflow")
            main = _read_v2(f, image) if ours else _read_v1(f, image)
    except InputError:
        raise
    except Exception as err:  # noqa: BLE001 (h5py raises OSError, KeyError, ValueError...)
        if not ours:
            raise InputError(
                f"cannot open label store {real}: {err}. If it is a damaged label store, "
                f"`alflow data {real} --salvage NEW.h5` copies its readable records.") from None
        image.problems.append(f"the HDF5 image is unreadable ({type(err).__name__}: {err})")
        image.uncounted = True
        main = _Columns.of([])
    image.columns = _verified(main, image, "in the image") if ours else main
    if not ours:
        return image, _Frames([], size)
    with open(real, "rb") as fh:
        if image.log_start:
            fh.seek(image.log_start)
            frames = _walk(fh.read(), image.log_start)
        else:
            frames = _Frames([], size, problem="the commit log cannot be located")
        if tolerant and frames.problem:
            after = frames.end + 1 if image.log_start else USERBLOCK
            fh.seek(0)
            frames = _Frames(frames.frames + _scan(fh.read(), after), size,
                             problem=frames.problem)
    return image, frames


def _scan(buf: bytes, pos: int) -> list[tuple[_Columns, bool]]:
    """Every intact frame at or after byte ``pos`` (salvage: frames are self-checking)."""
    out = []
    while (pos := buf.find(FRAME, pos)) >= 0:
        kind, val = _read_frame(buf, pos)
        if kind == "ok":
            out.append(val[0])
            pos = val[1]
        else:
            pos += 1
    return out


# -- the store ------------------------------------------------------------------------------
def _matches(rec_status: str, meta: str, status: str | None, method: str | None,
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
        self._parts: list[_Columns] = []
        self._index: dict[str, tuple[int, int]] = {}
        self._ident: tuple[Any, ...] | None = None
        self._stamp = (-1, -1)
        self._end = self._log_start = 0
        self._torn = False
        self._version = VERSION
        self._image_rows = 0
        self._log_rows = 0
        self._cleaned = False
        if not os.path.lexists(self.path) or (self.path.is_symlink() and not self.path.exists()):
            if not create:
                raise InputError(f"label store not found: {self.path}")
            real = real_path(self.path)
            real.parent.mkdir(parents=True, exist_ok=True)
            with locked(real):
                if not real.exists():
                    remove_stale_copies(real)
                    tmp = real.with_name(f"{real.name}.tmp-{os.getpid()}")
                    try:
                        _write_image(tmp, _Columns.of([]))
                        replace_with(real, tmp)
                    finally:
                        tmp.unlink(missing_ok=True)
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
                ub = fh.read(_UB.size)
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
                    frames = _walk(fh.read(), self._end)
                if frames.problem:
                    self._ident = None
                    raise self._damaged(real, [frames.problem], [])
                for cols, replace in frames.frames:
                    self._apply(cols, replace)
                self._end, self._torn = frames.end, frames.torn
            self._stamp = stamp
            return
        self._ident = None
        image, frames = _read_file(real)
        problems = image.problems + ([frames.problem] if frames.problem else [])
        if problems:
            raise self._damaged(real, problems, image.lost)
        self._version, self._log_start = image.version, image.log_start
        self._parts, self._index, self._log_rows = [], {}, 0
        self._apply(image.columns, False)
        self._image_rows, self._log_rows = len(image.columns), 0
        for cols, replace in frames.frames:
            self._apply(cols, replace)
        self._end, self._torn, self._ident = frames.end, frames.torn, ident
        self._stamp = stamp

    def _apply(self, cols: _Columns, replace_failed: bool) -> None:
        part = len(self._parts)
        self._parts.append(cols)
        self._log_rows += len(cols)
        index = self._index
        if not index:  # the image: one record per key
            index.update(zip(cols.keys, zip(itertools.repeat(part), range(len(cols))), strict=True))
            return
        for i, (key, st) in enumerate(zip(cols.keys, cols.status, strict=True)):
            old = index.get(key)
            if old is None or (replace_failed and st == "ok"
                               and self._parts[old[0]].status[old[1]] == "failed"):
                index[key] = (part, i)

    @contextlib.contextmanager
    def _reading(self, full: bool = False) -> Iterator[None]:
        real = real_path(self.path)
        with self._mutex, locked(real, shared=True):
            self._refresh(real, full)
            yield

    def _rows(self, keys: Iterable[str] | None = None) -> list[tuple[_Columns, int]]:
        """(columns, row) of the given stored keys (default: all, in key order)."""
        index = self._index
        keys = sorted(index) if keys is None else [k for k in keys if k in index]
        return [(self._parts[p], i) for p, i in (index[k] for k in keys)]

    # -- reading ---------------------------------------------------------------------------
    def keys(self) -> list[str]:
        """All stored keys (ok and failed), in key order."""
        with self._reading():
            return sorted(self._index)

    def __len__(self) -> int:
        with self._reading():
            return len(self._index)

    def has(self, key: str) -> bool:
        """Whether ``key`` has a record (ok or failed)."""
        with self._reading():
            return key in self._index

    __contains__ = has

    def get(self, key: str) -> LabelRecord | None:
        """The record of ``key``, or None."""
        return self.get_many([key]).get(key)

    def get_many(self, keys: Iterable[str]) -> dict[str, LabelRecord]:
        """Records of the given keys that are stored."""
        with self._reading():
            rows = self._rows(set(keys))
        return {c.keys[i]: c.record(i) for c, i in rows}

    def records(self, status: str | None = "ok", method: str | None = None,
                **tag_filters: Any) -> Iterator[LabelRecord]:
        """Records with ``status`` (None: any), method name (e.g. ``pyscf:pbe/def2-svp``;
        None: any) and every ``tag=value`` given, in key order."""
        with self._reading():
            rows = self._rows()
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
        with self._reading():
            rows = self._rows()
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
                old = seen.get(r.key)
                if old is None and r.key in self._index:
                    p, i = self._index[r.key]
                    old = self._parts[p].status[i]
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
                self._write_image(real)
            cols = _Columns.of(todo)
            frame = _frame(cols, replace_failed)
            fd = os.open(real, os.O_WRONLY)
            try:
                if self._torn:
                    log.warning("%s: removing an incomplete commit left by an interrupted "
                                "writer", self.path)
                    os.ftruncate(fd, self._end)
                os.pwrite(fd, frame, self._end)
                os.fdatasync(fd)
                st = os.fstat(fd)
                self._stamp = (st.st_size, st.st_mtime_ns)
            finally:
                os.close(fd)
            self._apply(cols, replace_failed)
            self._end += len(frame)
            self._torn = False
            if self._log_rows >= max(CHECKPOINT_MIN, self._image_rows // CHECKPOINT_FRACTION):
                self._write_image(real)
            return len(todo)

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
                self._write_image(real)

    def _write_image(self, real: Path) -> None:
        """Copy-on-write of every live record into a new image (caller holds the lock)."""
        live = self._live()
        remove_stale_copies(real)
        tmp = real.with_name(f"{real.name}.tmp-{os.getpid()}")
        try:
            _write_image(tmp, live)
            replace_with(real, tmp)
        finally:
            tmp.unlink(missing_ok=True)
        self._ident, self._stamp = self._identity(real)
        size = self._stamp[0]
        self._parts, self._index = [live], {k: (0, i) for i, k in enumerate(live.keys)}
        self._version, self._image_rows, self._log_rows = VERSION, len(live), 0
        self._end = self._log_start = size
        self._torn = False

    def _live(self) -> _Columns:
        """The stored records (one per key) as one set of columns, in commit order."""
        by_part: dict[int, list[int]] = {}
        for p, i in self._index.values():
            by_part.setdefault(p, []).append(i)
        return _Columns.concat([self._parts[p].take(np.sort(rows))
                                for p, rows in sorted(by_part.items())])


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


def _salvage_read(path: str | Path) -> tuple[StoreReport, _Columns]:
    real = real_path(path)
    if not real.exists():
        raise InputError(f"label store not found: {path}")
    image, frames = _read_file(real, tolerant=True)
    store = LabelStore.__new__(LabelStore)  # the in-memory index only, no file
    store._parts, store._index, store._log_rows = [], {}, 0
    store._apply(image.columns, False)
    lost = list(image.lost)
    for cols, replace in frames.frames:
        ok = _checksums(cols) == cols.checksum
        lost += [k for k, good in zip(cols.keys, ok, strict=True) if not good]
        store._apply(cols.take(np.flatnonzero(ok)), replace)
    problems = image.problems + ([frames.problem] if frames.problem else [])
    live = store._live()
    lost = sorted(set(lost) - set(store._index))
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
        tmp = real.with_name(f"{real.name}.tmp-{os.getpid()}")
        try:
            _write_image(tmp, live)
            replace_with(real, tmp)
        finally:
            tmp.unlink(missing_ok=True)
    return report
