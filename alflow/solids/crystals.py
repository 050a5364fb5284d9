"""Close-packed crystals at a given number of atoms and density: fcc and hcp supercells.

fcc is the cubic cell of ASE's ``bulk`` repeated n×n×n (N = 4n³: 32, 108, 256, 500); hcp is
ASE's orthorhombic hcp cell (4 atoms, a × √3a × c, ideal c/a = √(8/3)) repeated to the N asked,
choosing the repeats that make the box closest to a cube (largest smallest width). Lengths are
in the unit of the caller: Å for real elements, σ for reduced Lennard-Jones (see
:mod:`alflow.solids.lj`). Density is atoms per unit volume (Å⁻³ or σ⁻³).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from ase import Atoms
from ase.build import bulk

STRUCTURES = ("fcc", "hcp")


def _hcp_repeats(n_cells: int) -> tuple[int, int, int]:
    """Repeats (nx, ny, nz) of the orthorhombic hcp cell with nx·ny·nz = n_cells whose box
    has the largest smallest width (widths a·nx, √3a·ny, √(8/3)a·nz)."""
    best, score = None, -1.0
    for nx, ny in itertools.product(range(1, n_cells + 1), repeat=2):
        if n_cells % (nx * ny):
            continue
        nz = n_cells // (nx * ny)
        w = min(nx, math.sqrt(3) * ny, math.sqrt(8 / 3) * nz)
        if w > score + 1e-12:
            best, score = (nx, ny, nz), w
    return best


def crystal(structure: str, n_atoms: int, density: float, symbol: str = "Ar") -> Atoms:
    """A perfect ``structure`` ("fcc" or "hcp") crystal of ``n_atoms`` atoms at ``density``
    (atoms per volume), periodic in three directions, rows of ``cell`` the box vectors.

    fcc needs N = 4n³; hcp needs N divisible by 4. Raises ValueError naming what was expected.
    """
    if structure not in STRUCTURES:
        raise ValueError(f"structure must be one of {STRUCTURES}, got {structure!r}")
    if not density > 0:
        raise ValueError(f"density must be positive, got {density}")
    if structure == "fcc":
        n = round((n_atoms / 4) ** (1 / 3))
        if 4 * n**3 != n_atoms:
            raise ValueError(f"fcc needs n_atoms = 4 n³ (32, 108, 256, 500...), got {n_atoms}")
        a = (4 / density) ** (1 / 3)
        atoms = bulk(symbol, "fcc", a=a, cubic=True).repeat((n, n, n))
    else:
        if n_atoms % 4 or n_atoms <= 0:
            raise ValueError(f"hcp needs n_atoms divisible by 4, got {n_atoms}")
        c_over_a = math.sqrt(8 / 3)
        a = (math.sqrt(2) / density) ** (1 / 3)  # close packing: volume per atom a³/√2
        cell = bulk(symbol, "hcp", a=a, c=c_over_a * a, orthorhombic=True)
        atoms = cell.repeat(_hcp_repeats(n_atoms // 4))
    atoms.wrap()
    return atoms


def nearest_neighbour_distance(density: float) -> float:
    """Nearest-neighbour distance of an ideal close-packed (fcc or ideal hcp) crystal."""
    return (math.sqrt(2) / density) ** (1 / 3)


def lattice_sites(atoms: Atoms) -> np.ndarray:
    """Positions (N, 3) of a perfect crystal, shifted so that their mean is the origin."""
    x = atoms.positions
    return x - x.mean(0)


__all__ = ["STRUCTURES", "crystal", "lattice_sites", "nearest_neighbour_distance"]
