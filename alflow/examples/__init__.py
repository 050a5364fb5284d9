"""Ready-made campaigns: ``alflow example NAME DIR`` writes ``DIR/campaign.yaml`` and its
structures into ``DIR/structures/``.

- ``lj7``: the 7-atom Lennard-Jones argon cluster at 18 K (minutes on a laptop);
- ``ag6-emt``: Ag6 octahedron vs bicapped tetrahedron on ASE's EMT (a cheap stand-in oracle
  with EMT's two lowest minima; EMT has no planar Ag6 minimum);
- ``ag6-xtb``: Ag6 at 300 K on GFN1-xTB (tblite): every planar isomer vs every 3D one
  (states as classes of quench minima by planarity); a quantum-chemical oracle in milliseconds;
- ``ag6-pyscf``: Ag6 at 300 K with PBE/def2-SVP (the real one; hours on a cluster);
- ``lj-fcc-hcp``: Lennard-Jones fcc vs hcp in reduced units, ΔG(T) and ΔG(P) by
  Einstein-crystal TI and NPT flows (``kind: crystal``, minutes on 2 cores);
- ``cu-fcc-hcp``: copper fcc vs hcp on ASE's EMT (K, GPa), the same campaign.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from alflow.errors import InputError

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"

# example name -> (YAML template, data file, {DIR/structures/<file>: frame's info["state"]});
# crystal campaigns build their lattices and have no data file
EXAMPLES: dict[str, tuple[str, str | None, dict[str, str]]] = {
    "lj7": ("lj7.yaml", "lj7.extxyz", {"pbp.xyz": "bipyramid", "coh.xyz": "capped_octahedron"}),
    "ag6-emt": ("ag6-emt.yaml", "ag6_emt.extxyz",
                {"octahedron.xyz": "octahedron",
                 "bicapped_tetrahedron.xyz": "bicapped_tetrahedron"}),
    "ag6-xtb": ("ag6-xtb.yaml", "ag6_xtb.extxyz", {"planar.xyz": "planar", "3d.xyz": "3d"}),
    "ag6-pyscf": ("ag6-pyscf.yaml", "ag6.extxyz", {"planar.xyz": "planar",
                                                   "pyramid.xyz": "pyramid"}),
    "lj-fcc-hcp": ("lj-fcc-hcp.yaml", None, {}),
    "cu-fcc-hcp": ("cu-fcc-hcp.yaml", None, {}),
}


def write_example(name: str, directory: str | Path, overwrite: bool = False) -> Path:
    """Write example ``name`` into ``directory``; returns the campaign YAML path."""
    from ase.io import read, write

    if name not in EXAMPLES:
        raise InputError(f"unknown example {name!r}; choose one of {', '.join(EXAMPLES)}")
    yaml_name, data, files = EXAMPLES[name]
    out = Path(directory)
    target = out / "campaign.yaml"
    existing = [p for p in (target, *(out / "structures" / d for d in files)) if p.exists()]
    if existing and not overwrite:  # nothing is written then: no file of the user is replaced
        raise InputError(f"{', '.join(map(str, existing))} exist(s); choose an empty directory "
                         "(or --force to overwrite them)")
    out.mkdir(parents=True, exist_ok=True)
    frames = read(DATA / data, index=":") if data is not None else []
    if files:
        (out / "structures").mkdir(exist_ok=True)
    for dst, state in files.items():  # every frame of the state, in the data file's order
        images = [a.copy() for a in frames if a.info.get("state") == state]
        for atoms in images:
            atoms.info = {"state": state}
        write(out / "structures" / dst, images, format="extxyz")
    shutil.copyfile(HERE / yaml_name, target)
    return target
