"""Helpers on ASE ``Atoms``: content hashing, sanity checks, reading structure files.

Positions in Å. A configuration's key is a SHA-256 over atomic numbers, positions rounded to
``decimals`` (default 1e-6 Å), cell, pbc and an optional method description, so the same
labelling request always maps to the same key.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols

from alflow.errors import InputError

POSITION_DECIMALS = 6


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: a stable text for hashing settings."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def config_key(atoms: Atoms, method: Mapping[str, Any] | None = None,
               decimals: int = POSITION_DECIMALS) -> str:
    """Hex SHA-256 key of (numbers, rounded positions, cell, pbc, method settings)."""
    h = hashlib.sha256()
    h.update(np.asarray(atoms.numbers, dtype=np.int64).tobytes())
    pos = np.round(np.asarray(atoms.positions, dtype=np.float64), decimals) + 0.0  # no -0.0
    h.update(pos.tobytes())
    h.update(np.round(np.asarray(atoms.cell[:], dtype=np.float64), decimals).tobytes())
    h.update(np.asarray(atoms.pbc, dtype=np.bool_).tobytes())
    h.update(canonical_json(dict(method or {})).encode())
    return h.hexdigest()


def pair_distances(positions: np.ndarray) -> np.ndarray:
    """All i<j distances (Å) of a (N, 3) array, without periodic images."""
    pos = np.asarray(positions, dtype=float)
    i, j = np.triu_indices(len(pos), k=1)
    return np.linalg.norm(pos[i] - pos[j], axis=1)


def min_distance(atoms: Atoms) -> float:
    """Smallest interatomic distance in Å (minimum image for periodic cells); inf for one atom."""
    if len(atoms) < 2:
        return float("inf")
    if atoms.pbc.any():
        d = atoms.get_all_distances(mic=True)
        return float(d[np.triu_indices(len(atoms), k=1)].min())
    return float(pair_distances(atoms.positions).min())


def read_structures(path: str | Path, index: str = ":") -> list[Atoms]:
    """Read every structure of a file ASE understands; clear InputError if it cannot."""
    from ase.io import read

    path = Path(path)
    if not path.exists():
        raise InputError(f"structure file not found: {path}")
    try:
        images = read(str(path), index=index, parallel=False)  # no implicit MPI broadcast
    except KeyError as err:  # ASE's symbol table: an element that does not exist
        symbol = err.args[0] if err.args else ""
        if isinstance(symbol, str) and symbol not in chemical_symbols:
            raise InputError(f"{path}: unknown chemical element {symbol!r} (expected a "
                             "symbol such as H, C, O, Ag)") from None
        raise InputError(f"cannot read structures from {path}: KeyError: {err}") from None
    except Exception as err:  # ASE raises many kinds for malformed files
        msg = f"cannot read structures from {path}: {type(err).__name__}: {err}"
        raise InputError(msg) from None
    if isinstance(images, Atoms):
        images = [images]
    if not images:
        raise InputError(f"no structures in {path}")
    return list(images)
