"""Labelled configurations and the file format of the label store (see :mod:`alflow.dataset`).

:class:`LabelRecord` is one labelled configuration. The rest of this module reads and writes
a store file: records as columns (:class:`Columns`), their checksums, the HDF5 image, the
frames of the commit log and the 512-byte user block that says where the log starts.

Byte layout (little-endian)::

    user block (bytes 0-511, ignored by HDF5)
        16 s   b"alflow-labels\0v2"
        u64    where the log starts (= the size of the HDF5 image, user block included)
        16 s   epoch (random, new with every image)
        u32    CRC-32 of the 40 bytes before
    HDF5 image (superblock at byte 512)
    log: frames, one per commit
        4 s    b"ALF2";  u32 payload length;  u32 CRC-32 of the payload;
        u32    CRC-32 of the 12 bytes before
        payload: u32 JSON length; JSON (keys, status, natoms, has_forces, checksum, the length
                 of each record's JSON, replace_failed), padded with spaces to 8 bytes;
                 energy f8 (n); cell f8 (n, 3, 3); numbers i8 (m); positions f8 (m, 3);
                 forces f8 (m, 3); pbc u1 (n, 3); each record's JSON, one after the other
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import struct
import time
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from alflow.errors import InputError
from alflow.h5commit import remove_stale_copies, replace_with

Status = Literal["ok", "failed"]

FORMAT = "alflow-labels"
VERSION = 2
GROUP = "labels"

USERBLOCK = 512
MAGIC = b"alflow-labels\x00v2"  # 16 bytes at the start of a format-2 file
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"  # where HDF5 finds its superblock: after the user block
USER_BLOCK_HEAD = struct.Struct("<16sQ16sI")  # magic, log start, epoch, CRC-32 of the rest
FRAME = b"ALF2"
_HEAD = struct.Struct("<4sIII")  # magic, payload length, payload CRC-32, CRC-32 of the first 12


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


def _dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


@dataclass
class Columns:
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
            self.checksum = checksums(self)

    def __len__(self) -> int:
        return len(self.keys)

    @classmethod
    def of(cls, recs: Sequence[LabelRecord]) -> Columns:
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

    def take(self, rows: np.ndarray) -> Columns:
        rows = np.asarray(rows, dtype=np.int64)
        atoms = _ranges(self.start[rows], self.natoms[rows])
        return Columns(
            keys=[self.keys[i] for i in rows], status=[self.status[i] for i in rows],
            meta=[self.meta[i] for i in rows], energy=self.energy[rows],
            natoms=self.natoms[rows], cell=self.cell[rows], pbc=self.pbc[rows],
            has_forces=self.has_forces[rows], numbers=self.numbers[atoms],
            positions=self.positions[atoms], forces=self.forces[atoms],
            checksum=self.checksum[rows])

    @classmethod
    def concat(cls, parts: Sequence[Columns]) -> Columns:
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


def checksums(c: Columns) -> np.ndarray:
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


def encode_frame(c: Columns, replace_failed: bool) -> bytes:
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


def _unframe(payload: bytes) -> tuple[Columns, bool]:
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
    cols = Columns(keys=h["keys"], status=h["status"], meta=meta, energy=energy,
                    natoms=natoms, cell=cell, pbc=pbc,
                    has_forces=np.array(h["has_forces"], dtype=bool), numbers=numbers,
                    positions=positions, forces=forces,
                    checksum=np.array(h["checksum"], dtype=np.uint64))
    return cols, bool(h["replace_failed"])


@dataclass
class LogFrames:
    """The frames found in a log: ``(columns, replace_failed)`` each; where the intact log
    ends; whether an incomplete frame (an interrupted commit) follows; a problem if a frame is
    damaged (the walk stops there)."""

    frames: list[tuple[Columns, bool]]
    end: int
    torn: bool = False
    problem: str | None = None


def _read_frame(buf: bytes, pos: int, base: int = 0) -> tuple[str, Any]:
    """The frame at ``buf[pos:]`` (``buf`` starts at byte ``base`` of the file):
    ("ok", (frame, next position)) | ("torn", None) | ("damaged", why)."""
    if len(buf) - pos < _HEAD.size:
        return "torn", None
    magic, length, crc, hcrc = _HEAD.unpack_from(buf, pos)
    if not buf[pos:].strip(b"\0"):  # zeros only: a commit cut by a power loss before its data
        return "torn", None
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


def walk_log(buf: bytes, base: int) -> LogFrames:
    """Frames of ``buf`` (the file from byte ``base``) until its end or the first damage."""
    out, pos = LogFrames([], base), 0
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


def write_image(path: Path, c: Columns) -> None:
    """Write ``c`` as a new format-2 file at ``path`` (no log). Its user block holds a random
    epoch, so that readers tell every image from the one before."""
    with h5py.File(path, "w", userblock_size=USERBLOCK, libver=("v110", "latest"),
                   locking=False) as f:  # a new file of this writer
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


@dataclass
class Image:
    """What a file holds: the records read (intact ones), those lost, and the problems."""

    version: int
    columns: Columns
    log_start: int = 0
    lost: list[str] = field(default_factory=list)  # keys of records failing their checksum
    problems: list[str] = field(default_factory=list)
    uncounted: bool = False  # records were lost in a part where they cannot be named


def _verified(c: Columns, image: Image, where: str) -> Columns:
    bad = np.flatnonzero(checksums(c) != c.checksum)
    if len(bad) == 0:
        return c
    image.lost += [c.keys[i] for i in bad]
    image.problems.append(f"{len(bad)} record(s) {where} fail their checksum")
    return c.take(np.setdiff1d(np.arange(len(c)), bad))


def _read_v2(f: h5py.File, image: Image) -> Columns:
    g = f[GROUP]
    cols = {name: g[name][()] for name in (
        "key", "status", "meta", "meta_len", "energy", "natoms", "cell", "pbc", "has_forces",
        "checksum", "numbers", "positions", "forces")}
    n = len(cols["key"])
    if any(len(cols[k]) != n for k in ("status", "meta_len", "energy", "natoms", "checksum")):
        raise ValueError("columns of different lengths")
    blob, ends = cols.pop("meta").tobytes(), np.cumsum(cols.pop("meta_len")).tolist()
    status, key_bytes = cols.pop("status"), cols.pop("key")
    return Columns(
        keys=[k.decode() for k in key_bytes], key_bytes=key_bytes,
        status=np.where(status == b"ok", "ok", "failed").tolist(),
        meta=[blob[a:b] for a, b in zip([0, *ends][:-1], ends, strict=True)],
        **{k: v.astype(np.uint64) if k == "checksum" else v for k, v in cols.items()})


def _read_v1(f: h5py.File, image: Image) -> Columns:
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
    return Columns.of(recs)


def read_file(real: Path, tolerant: bool = False) -> tuple[Image, LogFrames]:
    """Read a store file: its image (records verified against their checksums) and its log.

    Damage is reported in the image's ``problems`` (the log's in the frames' ``problem``);
    ``tolerant`` (salvage) also looks past a damaged frame for the intact ones after it.
    Raises InputError for a file that is not a label store.
    """
    try:
        with open(real, "rb") as fh:
            ub = fh.read(USER_BLOCK_HEAD.size)
            size = os.fstat(fh.fileno()).st_size
            fh.seek(USERBLOCK)
            hdf5_after_block = fh.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE
    except OSError as err:
        raise InputError(f"cannot open label store {real}: {err}") from None
    ours = ub[:len(MAGIC)] == MAGIC
    image = Image(version=VERSION, columns=Columns.of([]))
    damaged_header = "the header (user block) is damaged"
    if not ours and hdf5_after_block:  # a format-2 file whose first bytes are damaged
        ours = True
        image.problems.append(damaged_header)
    elif not ours:
        image.version = 1
    if ours and not image.problems:
        _, image.log_start, _, crc = USER_BLOCK_HEAD.unpack(ub)
        if (zlib.crc32(ub[:USER_BLOCK_HEAD.size - 4]) != crc
                or not USERBLOCK <= image.log_start <= size):
            image.problems.append(damaged_header)
            image.log_start = 0
    try:
        with h5py.File(real, "r", locking=False) as f:  # the store has its own lock
            fmt, version = f.attrs.get("format"), int(f.attrs.get("version", 0))
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
        main = Columns.of([])
    image.columns = _verified(main, image, "in the image") if ours else main
    if not ours:
        return image, LogFrames([], size)
    with open(real, "rb") as fh:
        if image.log_start:
            fh.seek(image.log_start)
            frames = walk_log(fh.read(), image.log_start)
        else:
            frames = LogFrames([], size, problem="the commit log cannot be located")
        if tolerant and frames.problem:
            after = frames.end + 1 if image.log_start else USERBLOCK
            fh.seek(0)
            frames = LogFrames(frames.frames + _scan(fh.read(), after), size,
                             problem=frames.problem)
    return image, frames


def _scan(buf: bytes, pos: int) -> list[tuple[Columns, bool]]:
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



def put_image(real: Path, c: Columns) -> None:
    """Write ``c`` as a new image and put it in place of ``real`` (copy-on-write; the caller
    holds the exclusive lock)."""
    remove_stale_copies(real)
    tmp = real.with_name(f"{real.name}.tmp-{os.getpid()}")
    try:
        write_image(tmp, c)
        replace_with(real, tmp)
    finally:
        tmp.unlink(missing_ok=True)


class RecordIndex:
    """The records of a store in memory: the columns of the image and of each commit, and
    where each key's record is (a later ok record may replace a failed one)."""

    def __init__(self) -> None:
        self.parts: list[Columns] = []
        self.where: dict[str, tuple[int, int]] = {}

    def add(self, cols: Columns, replace_failed: bool) -> None:
        """Apply one commit (or the image) as its writer did."""
        part = len(self.parts)
        self.parts.append(cols)
        where = self.where
        if not where:  # the image: one record per key
            where.update(zip(cols.keys, zip(itertools.repeat(part), range(len(cols))),
                             strict=True))
            return
        for i, (key, st) in enumerate(zip(cols.keys, cols.status, strict=True)):
            old = where.get(key)
            if old is None or (replace_failed and st == "ok"
                               and self.parts[old[0]].status[old[1]] == "failed"):
                where[key] = (part, i)

    def status(self, key: str) -> str | None:
        """The stored status of ``key``, or None."""
        at = self.where.get(key)
        return None if at is None else self.parts[at[0]].status[at[1]]

    def rows(self, keys: Iterable[str] | None = None) -> list[tuple[Columns, int]]:
        """(columns, row) of the given stored keys (default: all, in key order)."""
        where = self.where
        keys = sorted(where) if keys is None else [k for k in keys if k in where]
        return [(self.parts[p], i) for p, i in (where[k] for k in keys)]

    def live(self) -> Columns:
        """The stored records (one per key) as one set of columns, in commit order."""
        by_part: dict[int, list[int]] = {}
        for p, i in self.where.values():
            by_part.setdefault(p, []).append(i)
        return Columns.concat([self.parts[p].take(np.sort(rows))
                               for p, rows in sorted(by_part.items())])
