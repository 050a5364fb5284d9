"""One exploration MD run from a validated config: potential + start structures -> frames.

:func:`explore` runs Langevin MD (optionally well-tempered metadynamics) of a
:class:`~alflow.potential.Potential`; :mod:`alflow.exploration` resolves a potential named by a
spec (model directory, ``ase:<calculator>``, ``torch:lj``, ``torch:emt``) and writes the
frames, for ``alflow md`` and the Parsl app :mod:`apps.sampling`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from ase import Atoms
from pydantic import Field

from alflow.errors import InputError
from alflow.potential import Potential
from alflow.sampling.cvs import CVConfig, make_cv
from alflow.sampling.langevin import MDConfig, Trajectory, run_langevin
from alflow.sampling.metad import FES, MetadConfig, WellTemperedMetad

log = logging.getLogger(__name__)


class ExploreConfig(MDConfig):
    """MD settings (see :class:`~alflow.sampling.langevin.MDConfig`) plus CVs to record and
    optional well-tempered metadynamics."""

    cvs: list[CVConfig] = Field([], description="extra CVs recorded per frame")
    metad: MetadConfig | None = None


def start_positions(structures: Sequence[Atoms], replicas: int) -> np.ndarray:
    """(R, N, 3) start positions: the structures cycled over the replicas."""
    if not structures:
        raise InputError("no start structures given")
    numbers = structures[0].numbers
    for k, a in enumerate(structures):
        if not np.array_equal(a.numbers, numbers):
            raise InputError(f"start structure {k} has different atoms "
                             f"({a.get_chemical_formula()} vs "
                             f"{structures[0].get_chemical_formula()}); one system per run")
    return np.stack([structures[r % len(structures)].positions for r in range(replicas)])


def explore(potential: Potential, structures: Sequence[Atoms], config: ExploreConfig,
            bias_in: str | Path | None = None,
            callback: Callable[[int, int], None] | None = None,
            velocities=None) -> tuple[Trajectory, WellTemperedMetad | None]:
    """Run the MD of ``config`` from ``structures`` (cycled over ``config.replicas``); with
    ``config.metad`` (or a saved bias ``bias_in`` to continue) the replicas are walkers of one
    shared bias. Returns the trajectory and the bias (None without metadynamics)."""
    x0 = start_positions(structures, config.replicas)
    n = x0.shape[1]
    dtype = config.torch_dtype()
    metad = None
    if bias_in is not None:
        metad = WellTemperedMetad.load(bias_in, config.device, dtype, natoms=n)
        if abs(metad.temperature_k - config.temperature_k) > 1e-9:
            raise InputError(f"{bias_in}: bias built at {metad.temperature_k} K, MD at "
                             f"{config.temperature_k} K")
    elif config.metad is not None:
        metad = WellTemperedMetad.from_config(config.metad, config.temperature_k, n,
                                              config.device, dtype)
    biases = config.static_biases() + ([metad] if metad is not None else [])
    cvs = [make_cv(c, n) for c in config.cvs]
    traj = run_langevin(potential, x0, structures[0].get_masses(), config.temperature_k,
                        config.dt_fs, config.steps, config.friction_per_fs, biases,
                        config.record_every, config.trust_upper, config.seed, cvs=cvs,
                        velocities=velocities, device=config.device, dtype=dtype,
                        callback=callback)
    return traj, metad


def write_trajectory(traj: Trajectory, path: str | Path) -> Path:
    """Write to extxyz (``.xyz``/``.extxyz``, valid frames) or HDF5 (``.h5``/``.hdf5``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix in (".h5", ".hdf5"):
        traj.write_hdf5(path)
    elif path.suffix in (".xyz", ".extxyz"):
        traj.write_extxyz(path)
    else:
        raise InputError(f"{path}: output must end in .extxyz, .xyz, .h5 or .hdf5")
    return path


def write_fes(fes: FES, path: str | Path) -> None:
    Path(path).write_text(json.dumps(fes.to_dict(), indent=1))
