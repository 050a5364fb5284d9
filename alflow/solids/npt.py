"""NPT molecular dynamics of a periodic crystal through ASE's Langevin–Hoover barostat.

ASE's :class:`ase.md.langevinbaoab.LangevinBAOAB` (BAOAB for the atoms, Langevin-Hoover for
the cell: Quigley and Probert, J. Chem. Phys. 120, 11432 (2004)) fits here as it is: it works
with any ASE calculator that gives stress (ASE's EMT and LennardJones, alflow's committee,
:mod:`alflow.mlip.stress`), lets the volume alone (``hydrostatic``) or the whole cell
fluctuate, and is maintained with ASE; a batched torch barostat would only pay for many
replicas of the same cell, which a volume average does not need. Units are ASE's (Å, eV, K,
eV/Å³, ASE time); reduced Lennard-Jones maps onto them with ε = 1 eV, σ = 1 Å, m = 1 amu,
T = T*/k_B and ASE time = τ (:func:`reduced_lj_atoms`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.calculators.lj import LennardJones
from ase.md.langevinbaoab import LangevinBAOAB
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary

from alflow.solids.einstein import block_error


@dataclass
class NPTRun:
    """Volume per atom ``volume_per_atom`` ± ``err`` (Å³ or σ³), the mean cell (3, 3) and
    the sampled volumes per atom (S,)."""

    volume_per_atom: float
    err: float
    cell: np.ndarray
    volumes: np.ndarray


def reduced_lj_atoms(atoms: Atoms, cutoff: float = 2.5) -> Atoms:
    """A copy of ``atoms`` (lengths in σ) with unit masses and ASE's LennardJones(ε = σ = 1,
    r_c = ``cutoff``, shifted), so that ASE's eV, Å, amu, time are ε, σ, m, τ."""
    a = atoms.copy()
    a.set_masses(np.ones(len(a)))
    a.calc = LennardJones(sigma=1.0, epsilon=1.0, rc=cutoff, smooth=False)
    return a


def npt_volume(atoms: Atoms, temperature_k: float, pressure: float, timestep: float,
               n_steps: int, n_equil: int = 500, every: int = 5, hydrostatic: bool = True,
               calc: Calculator | None = None, t_tau: float | None = None,
               p_tau: float | None = None, seed: int = 0) -> NPTRun:
    """Average volume per atom of ``atoms`` (with its calculator, or ``calc``) at
    ``temperature_k`` K and ``pressure`` eV/Å³ after ``n_equil`` steps of ``timestep``
    (ASE time units), sampled every ``every`` steps over ``n_steps``."""
    a = atoms.copy()
    a.calc = atoms.calc if calc is None else calc
    if a.calc is None or not a.pbc.all():
        raise ValueError("NPT needs a calculator and a cell periodic in all three directions")
    rng = np.random.default_rng(seed)
    MaxwellBoltzmannDistribution(a, temperature_K=temperature_k, rng=rng)
    Stationary(a)
    dyn = LangevinBAOAB(a, timestep, temperature_K=temperature_k, externalstress=-pressure,
                        hydrostatic=hydrostatic, T_tau=t_tau, P_tau=p_tau, rng=rng)
    dyn.run(n_equil)
    vols, cells = [], []
    for _ in range(n_steps // every):
        dyn.run(every)
        vols.append(a.get_volume() / len(a))
        cells.append(a.cell.array.copy())
    v = np.array(vols)
    return NPTRun(float(v.mean()), block_error(v), np.mean(cells, 0), v)


__all__ = ["NPTRun", "npt_volume", "reduced_lj_atoms"]
