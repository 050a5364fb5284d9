"""Ready-made campaigns: ``alflow example NAME DIR`` writes ``DIR/campaign.yaml`` and its
structures into ``DIR/structures/``.

- ``lj7``: the 7-atom Lennard-Jones argon cluster at 18 K (minutes on a laptop);
- ``ag6-emt``: Ag6 planar vs 3D on ASE's EMT (a cheap stand-in oracle);
- ``ag6-pyscf``: Ag6 at 300 K with PBE/def2-SVP (the real one; hours on a cluster).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from alflow.errors import InputError

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"

# example name -> (YAML template, {structure file name in DIR/structures: file in data/})
EXAMPLES: dict[str, tuple[str, dict[str, str]]] = {
    "lj7": ("lj7.yaml", {"pbp.xyz": "lj7_pbp.xyz", "coh.xyz": "lj7_coh.xyz"}),
    "ag6-emt": ("ag6-emt.yaml", {"planar.xyz": "ag6_planar.xyz",
                                 "pyramid.xyz": "ag6_pyramid.xyz"}),
    "ag6-pyscf": ("ag6-pyscf.yaml", {"planar.xyz": "ag6_planar.xyz",
                                     "pyramid.xyz": "ag6_pyramid.xyz"}),
}


def write_example(name: str, directory: str | Path, overwrite: bool = False) -> Path:
    """Write example ``name`` into ``directory``; returns the campaign YAML path."""
    if name not in EXAMPLES:
        raise InputError(f"unknown example {name!r}; choose one of {', '.join(EXAMPLES)}")
    yaml_name, files = EXAMPLES[name]
    out = Path(directory)
    target = out / "campaign.yaml"
    if target.exists() and not overwrite:
        raise InputError(f"{target} exists; choose an empty directory")
    (out / "structures").mkdir(parents=True, exist_ok=True)
    for dst, src in files.items():
        shutil.copyfile(DATA / src, out / "structures" / dst)
    shutil.copyfile(HERE / yaml_name, target)
    return target
