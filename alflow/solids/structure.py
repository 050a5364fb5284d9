"""Crystal structure of each atom and of a configuration: fcc, hcp or liquid, by Steinhardt
order parameters averaged over neighbours (Lechner and Dellago, J. Chem. Phys. 129, 114707
(2008)), computed by freud (``freud.order.Steinhardt``, 12 nearest neighbours).

An atom is liquid-like if q̄6 < ``q6_solid``; a solid-like atom is fcc if q̄4 ≥ ``q4_fcc``,
else hcp. Perfect lattices give (q̄4, q̄6) = (0.191, 0.575) for fcc and (0.097, 0.485) for
hcp; thermal disorder lowers both. The defaults separate Lennard-Jones fcc, hcp and liquid:
crystals at ρ* = 1.05 with Gaussian displacements of 0.1 σ per component (beyond the
vibrations of a crystal about to melt) keep q̄6 = 0.41 ± 0.03 (fcc), 0.34 ± 0.02 (hcp) and
q̄4 = 0.145 ± 0.013 (fcc), 0.082 ± 0.012 (hcp); a liquid at ρ* = 0.85, T* = 2 has
q̄6 = 0.12 ± 0.03 (largest of 108 atoms 0.20). The state of a configuration is the structure
of most of its atoms (:func:`classify`), the way alflow's states are otherwise defined by
quench basin for clusters.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import freud
import numpy as np
from ase import Atoms

LABELS = ("fcc", "hcp", "liquid")


@dataclass(frozen=True)
class StructureCriteria:
    """Thresholds on averaged Steinhardt parameters (dimensionless)."""

    q6_solid: float = 0.25
    q4_fcc: float = 0.115
    num_neighbors: int = 12


def freud_system(atoms: Atoms) -> tuple[freud.box.Box, np.ndarray]:
    """freud's (box, points) of periodic ``atoms``: the cell turned to freud's upper-triangular
    form, points wrapped into the box centred on the origin."""
    if not atoms.pbc.all():
        raise ValueError("structure recognition needs a cell periodic in all three directions")
    cell, op = atoms.cell.standard_form()
    box = freud.box.Box.from_matrix(np.asarray(cell).T)
    return box, box.wrap(atoms.positions @ op.T)


def order_parameters(atoms: Atoms, num_neighbors: int = 12) -> np.ndarray:
    """Averaged (q̄4, q̄6) of every atom: (N, 2)."""
    st = freud.order.Steinhardt([4, 6], average=True)
    st.compute(freud_system(atoms), neighbors={"num_neighbors": num_neighbors})
    return np.asarray(st.particle_order, dtype=float)


def atom_structures(atoms: Atoms, criteria: StructureCriteria = StructureCriteria()
                    ) -> np.ndarray:
    """Label of every atom ("fcc", "hcp" or "liquid"): (N,) array of str."""
    q = order_parameters(atoms, criteria.num_neighbors)
    solid = np.where(q[:, 0] >= criteria.q4_fcc, "fcc", "hcp")
    return np.where(q[:, 1] < criteria.q6_solid, "liquid", solid)


def structure_fractions(atoms: Atoms, criteria: StructureCriteria = StructureCriteria()
                        ) -> dict[str, float]:
    """Fraction of atoms of each label."""
    labels = atom_structures(atoms, criteria)
    counts = Counter(labels.tolist())
    return {k: counts.get(k, 0) / len(labels) for k in LABELS}


def classify(atoms: Atoms, criteria: StructureCriteria = StructureCriteria(),
             majority: float = 0.5) -> str:
    """The configuration's state: the label of more than ``majority`` of its atoms, else
    "mixed" (a stacking fault, an interface or a crystal melting)."""
    frac = structure_fractions(atoms, criteria)
    label, f = max(frac.items(), key=lambda kv: kv[1])
    return label if f > majority else "mixed"


__all__ = ["LABELS", "StructureCriteria", "atom_structures", "classify", "freud_system",
           "order_parameters", "structure_fractions"]
