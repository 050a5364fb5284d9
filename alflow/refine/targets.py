"""Tabulated targets: reading and writing the CSV files a refinement fits.

A table is a header line naming the columns, then one row of numbers per line:
``r_angstrom,g`` for g(r), ``frequency_thz,vdos`` for the vibrational density of states.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from alflow.errors import InputError


def read_table(path: str | Path, columns: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """The two named columns of a CSV file as float arrays (strictly increasing first column).

    Raises InputError naming the file, line and what was expected."""
    path = Path(path)
    try:
        rows = list(csv.reader(path.read_text().splitlines()))
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: cannot read: {err}") from None
    rows = [r for r in rows if r and not r[0].lstrip().startswith("#")]
    if not rows:
        raise InputError(f"{path}: empty; expected a header line {','.join(columns)}")
    header = [h.strip() for h in rows[0]]
    missing = [c for c in columns if c not in header]
    if missing:
        raise InputError(f"{path}: header {header} lacks column(s) {missing}; expected "
                         f"{','.join(columns)}")
    idx = [header.index(c) for c in columns]
    out = []
    for n, row in enumerate(rows[1:], start=2):
        try:
            out.append([float(row[i]) for i in idx])
        except (ValueError, IndexError):
            raise InputError(f"{path}: line {n}: expected numbers in columns "
                             f"{','.join(columns)}, got {row}") from None
    if len(out) < 3:
        raise InputError(f"{path}: {len(out)} data rows; expected at least 3")
    a = np.asarray(out, dtype=float)
    if not np.all(np.isfinite(a)) or np.any(np.diff(a[:, 0]) <= 0):
        raise InputError(f"{path}: column {columns[0]} must be finite and strictly increasing")
    return a[:, 0], a[:, 1]


def write_table(path: str | Path, columns: tuple[str, str], x: np.ndarray,
                y: np.ndarray) -> None:
    """Write two columns with a header line (the format :func:`read_table` reads)."""
    lines = [",".join(columns)] + [f"{a:.6f},{b:.6f}" for a, b in zip(x, y, strict=True)]
    Path(path).write_text("\n".join(lines) + "\n")


def rdf_grid(r: np.ndarray, g: np.ndarray, r_max: float, width: float,
             source: str | Path = "the g(r) target") -> tuple[np.ndarray, np.ndarray]:
    """The rows of a g(r) target a box can compute: r in (0, r_max − 4·width] Å.

    Raises InputError when fewer than 3 rows remain."""
    keep = (r > 0) & (r <= r_max - 4 * width)
    if keep.sum() < 3:
        raise InputError(f"{source}: {int(keep.sum())} points below "
                         f"{r_max - 4 * width:.3f} Å (half the box less 4 smoothing widths); "
                         "use more atoms")
    return r[keep], g[keep]
