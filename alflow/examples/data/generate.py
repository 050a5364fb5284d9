"""Regenerate the example structures of this directory (run from anywhere):

    python alflow/examples/data/generate.py [--relax-ag6]

(without ``--relax-ag6`` it overwrites the DFT-relaxed ``ag6.extxyz`` with the built geometry)

- ``lj7.extxyz``: the two lowest minima of the 7-atom Lennard-Jones argon cluster
  (sigma 3.405 Å, epsilon 0.0103 eV): pentagonal bipyramid (D5h, -16.505 epsilon) and capped
  octahedron (C3v, -15.935 epsilon), relaxed with ASE's LennardJones (rc 10 sigma).
- ``ag6.extxyz``: Ag6 planar triangle (D3h) and pentagonal pyramid (C5v), built with Ag-Ag
  near 2.75 Å; ``--relax-ag6`` relaxes them with PBE/def2-SVP (alflow's default labeller;
  about an hour on a busy 2-core machine) and stores the DFT energy in ``info``.
- ``ag6_emt.extxyz``: the two lowest minima of Ag6 on ASE's EMT, octahedron (Oh) and bicapped
  tetrahedron (C2v, a trigonal bipyramid with a capped face), relaxed with EMT. EMT has no planar
  Ag6 minimum: the D3h triangle and the C5v pyramid above relax to the bicapped tetrahedron.
- ``ag6_xtb.extxyz``: Ag6 D3h triangle (state ``planar``), C2v bicapped tetrahedron and C5v
  pentagonal pyramid (state ``3d``) relaxed with GFN1-xTB (tblite, BFGS to 1e-4 eV/Å).
Each frame's ``info`` has ``state`` (the isomer's name) and ``point_group``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT
from ase.calculators.lj import LennardJones
from ase.io import write
from ase.optimize import BFGS

HERE = Path(__file__).resolve().parent
SIGMA, EPSILON = 3.405, 0.0103


def ring(n: int, radius: float, z: float = 0.0, phase: float = 0.0) -> np.ndarray:
    t = phase + 2 * np.pi * np.arange(n) / n
    return np.stack([radius * np.cos(t), radius * np.sin(t), np.full(n, z)], axis=1)


def ag6_planar(a: float = 2.75) -> Atoms:
    """D3h triangle: three corners and three edge midpoints, nearest neighbours ``a`` Å."""
    corners = ring(3, 2 * a / np.sqrt(3), phase=np.pi / 2)
    mids = ring(3, a / np.sqrt(3), phase=-np.pi / 2)
    return Atoms("Ag6", positions=np.vstack([corners, mids]))


def ag6_pyramid(a: float = 2.75, apex: float = 2.8) -> Atoms:
    """C5v pentagonal pyramid: pentagon of side ``a`` Å, apex ``apex`` Å from the ring."""
    r = a / (2 * np.sin(np.pi / 5))
    h = np.sqrt(apex**2 - r**2)
    return Atoms("Ag6", positions=np.vstack([ring(5, r), [[0, 0, h]]]))


def ag6_octahedron(a: float = 2.75) -> Atoms:
    """Oh octahedron with edge ``a`` Å."""
    r = a / np.sqrt(2)
    return Atoms("Ag6", positions=np.vstack([np.eye(3) * r, -np.eye(3) * r]))


def ag6_bicapped_tetrahedron(a: float = 2.75) -> Atoms:
    """Trigonal bipyramid (edge ``a`` Å) with one face capped (C2v)."""
    tbp = np.vstack([ring(3, a / np.sqrt(3)), [[0, 0, a * np.sqrt(2 / 3)],
                                               [0, 0, -a * np.sqrt(2 / 3)]]])
    face = tbp[[0, 1, 3]].mean(axis=0)
    cap = face + face / np.linalg.norm(face) * a * np.sqrt(2 / 3)
    return Atoms("Ag6", positions=np.vstack([tbp, [cap]]))


def lj7_bipyramid() -> Atoms:
    d = 2 ** (1 / 6) * SIGMA
    r = d / (2 * np.sin(np.pi / 5))
    h = np.sqrt(d**2 - r**2)
    return Atoms("Ar7", positions=np.vstack([ring(5, r), [[0, 0, h], [0, 0, -h]]]))


def lj7_capped_octahedron() -> Atoms:
    a = 2 ** (1 / 6) * SIGMA / np.sqrt(2)
    octa = np.array([[a, 0, 0], [-a, 0, 0], [0, a, 0], [0, -a, 0], [0, 0, a], [0, 0, -a]])
    face = octa[[0, 2, 4]].mean(axis=0)
    cap = face + face / np.linalg.norm(face) * 0.82 * 2 ** (1 / 6) * SIGMA
    return Atoms("Ar7", positions=np.vstack([octa, [cap]]))


def relax(atoms: Atoms, calc: Calculator, fmax: float) -> Atoms:
    atoms = atoms.copy()
    atoms.calc = calc
    BFGS(atoms, logfile=None).run(fmax=fmax, steps=300)
    atoms.info["energy_ev"] = float(atoms.get_potential_energy())
    atoms.positions -= atoms.get_center_of_mass()
    atoms.calc = None
    return atoms


class LabellerCalculator(Calculator):
    """Any alflow labeller as an ASE calculator (energy eV, forces eV/Å)."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, labeller):
        super().__init__()
        self.labeller = labeller

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        res = self.labeller.label(self.atoms)
        if res.status != "ok":
            raise RuntimeError(res.reason)
        self.results = {"energy": res.energy, "forces": res.forces}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--relax-ag6", action="store_true")
    args = p.parse_args()
    lj = LennardJones(sigma=SIGMA, epsilon=EPSILON, rc=10 * SIGMA, smooth=False)
    frames = []
    for atoms, state, pg in [(lj7_bipyramid(), "bipyramid", "D5h"),
                             (lj7_capped_octahedron(), "capped_octahedron", "C3v")]:
        atoms = relax(atoms, lj, fmax=1e-5)
        atoms.info.update(state=state, point_group=pg, method="ase:lj")
        print(f"lj7 {state}: {atoms.info['energy_ev'] / EPSILON:.4f} epsilon")
        frames.append(atoms)
    write(HERE / "lj7.extxyz", frames, format="extxyz")

    ag = [(ag6_planar(), "planar", "D3h"), (ag6_pyramid(), "pyramid", "C5v")]
    frames = []
    if args.relax_ag6:
        from alflow.labelling import make_labeller

        calc = LabellerCalculator(make_labeller("pyscf:pbe/def2-svp"))
    for atoms, state, pg in ag:
        if args.relax_ag6:
            atoms = relax(atoms, calc, fmax=0.01)
            atoms.info["method"] = "pyscf:pbe/def2-svp"
            print(f"ag6 {state}: {atoms.info['energy_ev']:.4f} eV")
        else:
            atoms.positions -= atoms.get_center_of_mass()
        atoms.info.update(state=state, point_group=pg)
        frames.append(atoms)
    write(HERE / "ag6.extxyz", frames, format="extxyz")

    frames = []
    for atoms, state, pg in [(ag6_octahedron(), "octahedron", "Oh"),
                             (ag6_bicapped_tetrahedron(), "bicapped_tetrahedron", "C2v")]:
        atoms = relax(atoms, EMT(), fmax=1e-5)
        atoms.info.update(state=state, point_group=pg, method="ase:emt")
        print(f"ag6 (EMT) {state}: {atoms.info['energy_ev']:.4f} eV")
        frames.append(atoms)
    write(HERE / "ag6_emt.extxyz", frames, format="extxyz")
    write_ag6_xtb()


def write_ag6_xtb() -> None:
    """``ag6_xtb.extxyz``: the D3h triangle, the C5v pyramid and the C2v bicapped tetrahedron
    (the 3D minimum the pyramid turns into at 300 K) relaxed with GFN1-xTB."""
    from alflow.labelling import make_labeller

    calc = LabellerCalculator(make_labeller("xtb:gfn1"))
    frames = []
    # the 3d state's first structure (its reference for the flows' MD) is the most populated
    # 3D minimum at 300 K
    for atoms, state, pg in [(ag6_planar(), "planar", "D3h"),
                             (ag6_bicapped_tetrahedron(), "3d", "C2v"),
                             (ag6_pyramid(), "3d", "C5v")]:
        atoms = relax(atoms, calc, fmax=1e-4)
        atoms.info.update(state=state, point_group=pg, method="xtb:gfn1")
        print(f"ag6 (GFN1-xTB) {state}: {atoms.info['energy_ev']:.4f} eV")
        frames.append(atoms)
    write(HERE / "ag6_xtb.extxyz", frames, format="extxyz")


if __name__ == "__main__":
    main()
