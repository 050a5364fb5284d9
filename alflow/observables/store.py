"""HDF5 store of TDDFT results, keyed by the content hash of (configuration, TDDFT settings).

Layout of a campaign's ``spectra.h5`` (next to the label store)::

    /spectra/<key>/                  one group per configuration + method
        attrs: status, reason, method (JSON), provenance (JSON), tags (JSON), scf_energy_ev,
               created (UTC ISO time)
        numbers (N,) int, positions (N, 3) Å
        excitation_energies_ev (K,), oscillator_strengths (K,), transition_dipoles_au (K, 3)

Append-only: a key is written once (failed results too, so a deterministic failure is not
recomputed); the one exception is an ok result replacing a failed one (``retry_failed`` in
:func:`alflow.observables.batch.spectra_many`).

Crash safety as in the label store: copy-on-write commits under a lock (:mod:`alflow.h5commit`).
A writer takes an exclusive ``fcntl`` lock on ``spectra.h5.lock``, copies the file to
``spectra.h5.tmp-<pid>``, adds its records, fsyncs, and ``os.replace``s it over the original
(atomic on POSIX). A writer killed at any moment leaves the old file or the new one; stale
``.tmp-*`` files are removed by the next writer. Readers take no lock.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from ase import Atoms

from alflow.errors import InputError
from alflow.h5commit import commit_copy, locked
from alflow.observables.tddft import TDDFTResult

log = logging.getLogger(__name__)

GROUP = "spectra"
FORMAT = "alflow-spectra"


class SpectrumStore:
    """Append-only HDF5 store of :class:`TDDFTResult` records with tags (e.g. state)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not self.path.exists():
                with self._locked():
                    if not self.path.exists():
                        self._commit([], create=True)
            with self._read() as f:
                if f.attrs.get("format") != FORMAT or GROUP not in f:
                    raise InputError(f"{self.path} is not an alflow spectrum store")
        except OSError as err:
            raise InputError(f"cannot open spectrum store {self.path}: {err}") from None

    def _locked(self) -> contextlib.AbstractContextManager[None]:
        return locked(self.path)

    def _commit(self, items: list[tuple[TDDFTResult, Atoms | None, dict[str, Any] | None]],
                create: bool = False) -> int:
        """Copy-on-write commit (caller holds the lock); returns how many records were added."""

        def init(f: h5py.File) -> None:
            f.attrs["format"] = FORMAT
            f.create_group(GROUP)

        def write(f: h5py.File) -> int:
            g, added = f[GROUP], 0
            for result, atoms, tags in items:
                if result.key in g:
                    if not (g[result.key].attrs["status"] == "failed"
                            and result.status == "ok"):
                        continue
                    del g[result.key]
                _write(g.create_group(result.key), result, atoms, tags)
                added += 1
            return added

        return commit_copy(self.path, write, init if create else None)

    def _read(self):
        return h5py.File(self.path, "r")

    def keys(self) -> list[str]:
        """All stored keys."""
        with self._read() as f:
            return list(f[GROUP].keys())

    def __len__(self) -> int:
        with self._read() as f:
            return len(f[GROUP])

    def has(self, key: str) -> bool:
        """Whether ``key`` has a record (ok or failed)."""
        with self._read() as f:
            return key in f[GROUP]

    def append_many(self, items: list[tuple[TDDFTResult, Atoms | None,
                                           dict[str, Any] | None]]) -> int:
        """Add ``(result, atoms, tags)`` items in one atomic commit; returns how many were
        added (stored keys are skipped, except that an ok result replaces a failed one)."""
        if not items:
            return 0
        with self._locked():
            return self._commit(list(items))

    def append(self, result: TDDFTResult, atoms: Atoms | None = None,
               tags: dict[str, Any] | None = None) -> bool:
        """Write ``result`` (with the structure and free-form JSON ``tags``); False if the key
        is already stored. The only overwrite: an ok result replaces a failed one."""
        return self.append_many([(result, atoms, tags)]) == 1

    @staticmethod
    def _record(key: str, r: h5py.Group) -> tuple[TDDFTResult, dict[str, Any]]:
        e = float(r.attrs["scf_energy_ev"])
        res = TDDFTResult(
            key=key,
            status=str(r.attrs["status"]),
            reason=str(r.attrs["reason"]),
            excitation_energies_ev=r["excitation_energies_ev"][()].tolist(),
            oscillator_strengths=r["oscillator_strengths"][()].tolist(),
            transition_dipoles_au=r["transition_dipoles_au"][()].tolist(),
            scf_energy_ev=None if np.isnan(e) else e,
            provenance=json.loads(r.attrs["provenance"]),
        )
        return res, json.loads(r.attrs["tags"])

    def get(self, key: str) -> TDDFTResult | None:
        """The stored result of ``key``, or None."""
        with self._read() as f:
            g = f[GROUP]
            return self._record(key, g[key])[0] if key in g else None

    def tags(self, key: str) -> dict[str, Any]:
        """The tags stored with ``key`` (empty if absent)."""
        with self._read() as f:
            g = f[GROUP]
            return json.loads(g[key].attrs["tags"]) if key in g else {}

    def iter_records(self, status: str | None = "ok", method: dict[str, Any] | None = None,
                     **tag_filters: Any) -> Iterator[tuple[TDDFTResult, dict[str, Any]]]:
        """``(result, tags)`` for records with ``status`` (None: any), the TDDFT ``method``
        settings (None: any) and every ``tag=value`` given."""
        want_method = None if method is None else json.dumps(method, sort_keys=True)
        with self._read() as f:
            for key, r in f[GROUP].items():
                if status is not None and r.attrs["status"] != status:
                    continue
                if want_method is not None and r.attrs["method"] != want_method:
                    continue
                tags = json.loads(r.attrs["tags"])
                if any(tags.get(k) != v for k, v in tag_filters.items()):
                    continue
                yield self._record(key, r)


def _write(r: h5py.Group, result: TDDFTResult, atoms: Atoms | None,
           tags: dict[str, Any] | None) -> None:
    r.attrs["status"] = result.status
    r.attrs["reason"] = result.reason
    r.attrs["method"] = json.dumps(result.provenance.get("method", {}), sort_keys=True)
    r.attrs["provenance"] = json.dumps(result.provenance, sort_keys=True, default=str)
    r.attrs["tags"] = json.dumps(tags or {}, sort_keys=True, default=str)
    r.attrs["scf_energy_ev"] = np.nan if result.scf_energy_ev is None else result.scf_energy_ev
    r.attrs["created"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if atoms is not None:
        r["numbers"] = np.asarray(atoms.numbers, dtype=np.int64)
        r["positions"] = np.asarray(atoms.positions, dtype=np.float64)
    r["excitation_energies_ev"] = np.asarray(result.excitation_energies_ev, np.float64)
    r["oscillator_strengths"] = np.asarray(result.oscillator_strengths, np.float64)
    r["transition_dipoles_au"] = np.asarray(result.transition_dipoles_au,
                                            np.float64).reshape(-1, 3)
