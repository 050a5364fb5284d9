"""GFN1-xTB and GFN2-xTB labels through tblite: energy (eV) and analytic forces (eV/Å).

Semi-empirical tight binding: an Ag6 energy + forces takes milliseconds, so whole campaigns
run on a quantum-chemical oracle. The label is tblite's total energy at the electronic
temperature ``electronic_temperature`` (K; Fermi smearing of the occupations, 300 K by
default, as the xtb program); its forces are the exact negative gradient.

Each label builds a fresh ``tblite.interface.Calculator`` (no wavefunction carried over from
the previous label, so a label never depends on what was labelled before) and walks the retry
ladder ``xtb_ladder``, stopping at the first rung whose SCF converges:

1. ``scf``: ``max_cycle`` iterations from the superposition-of-atomic-densities guess;
2. ``iterations``: 4 x ``max_cycle`` iterations;
3. ``guess``: the same with an EEQ-charge initial guess;
4. ``temperature``: electronic temperature ``retry_temperature`` (the label is then that
   temperature's free energy, as PySCF's smearing rung; it is hashed into the key).

Rungs 1-3 change how the SCF converges, not the converged result. A configuration that fails
every rung is a failed label listing each rung. Units: tblite works in Hartree and Bohr;
results are converted with ``ase.units``, the constants tblite's own ASE calculator uses.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from ase import Atoms, units

from alflow.errors import ConfigError
from alflow.labelling.base import BaseLabeller, LabellerConfig, LabelResult, set_threads

TBLITE_METHOD = {"gfn1": "GFN1-xTB", "gfn2": "GFN2-xTB"}
MAX_Z = 86  # GFN1/GFN2-xTB are parametrised for H-Rn
ITERATIONS_FACTOR = 4
GUESS = {"sad": 0, "eeq": 1}


def rung_settings(cfg: LabellerConfig, rung: str) -> dict[str, Any]:
    """Iterations, initial guess and electronic temperature (K) of one ladder rung."""
    out = {"max_iterations": cfg.max_cycle, "guess": "sad",
           "electronic_temperature": cfg.electronic_temperature}
    if rung in ("iterations", "guess"):
        out["max_iterations"] = ITERATIONS_FACTOR * cfg.max_cycle
    if rung == "guess":
        out["guess"] = "eeq"
    if rung == "temperature":
        out["electronic_temperature"] = cfg.retry_temperature
    return out


def singlepoint(atoms: Atoms, cfg: LabellerConfig, max_iterations: int, guess: str,
                electronic_temperature: float) -> tuple[float, np.ndarray]:
    """Energy (eV) and forces (N, 3) eV/Å from one tblite SCF; raises if it does not
    converge (tblite's RuntimeError)."""
    from tblite.interface import Calculator

    lattice = atoms.cell.array / units.Bohr if atoms.pbc.any() else None
    calc = Calculator(TBLITE_METHOD[cfg.xtb_method], atoms.numbers,
                      atoms.positions / units.Bohr, charge=float(cfg.charge),
                      uhf=unpaired(atoms, cfg), lattice=lattice,
                      periodic=atoms.pbc if atoms.pbc.any() else None)
    calc.set("verbosity", 0)
    calc.set("accuracy", cfg.accuracy)
    calc.set("temperature", electronic_temperature * units.kB / units.Hartree)
    calc.set("max-iter", max_iterations)
    calc.set("guess", GUESS[guess])
    res = calc.singlepoint()
    energy = float(res["energy"]) * units.Hartree
    forces = -np.asarray(res["gradient"], dtype=np.float64) * units.Hartree / units.Bohr
    return energy, forces


def unpaired(atoms: Atoms, cfg: LabellerConfig) -> int:
    """Unpaired electrons 2S: ``cfg.spin``, or 0/1 by the parity of the electron count (core
    shells hold even counts, so parity follows the total electron count)."""
    nelec = int(atoms.numbers.sum()) - cfg.charge
    return nelec % 2 if cfg.spin is None else cfg.spin


class XtbLabeller(BaseLabeller):
    """GFN-xTB labels with tblite (see the module docstring)."""

    def __init__(self, config: LabellerConfig):
        super().__init__(config)
        c = config
        self.method_info: dict[str, Any] = {
            "name": c.name, "backend": "xtb", "method": TBLITE_METHOD[c.xtb_method],
            "charge": c.charge, "multiplicity": None if c.spin is None else c.spin + 1,
            "electronic_temperature": c.electronic_temperature, "accuracy": c.accuracy,
            "retry_temperature": c.retry_temperature if "temperature" in c.xtb_ladder
            else None,
        }
        self._threads = threading.local()  # threads set once per calling thread

    def check(self, atoms: Atoms) -> None:
        """ConfigError for elements beyond Rn and a multiplicity the electron count cannot
        have."""
        heavy = sorted({a.symbol for a in atoms if a.number > MAX_Z})
        if heavy:
            raise ConfigError(f"xtb_method: {self.name} has no parameters for "
                              f"{', '.join(heavy)} (it covers H-Rn)")
        nelec = int(atoms.numbers.sum()) - self.config.charge
        uhf = unpaired(atoms, self.config)
        if nelec < 0 or uhf > nelec or (nelec - uhf) % 2:
            raise ConfigError(f"spin: multiplicity {uhf + 1} is impossible with {nelec} "
                              f"electrons ({atoms.get_chemical_formula()}, charge "
                              f"{self.config.charge}); use {'an even' if nelec % 2 else 'an odd'}"
                              " multiplicity")

    def _compute(self, atoms: Atoms) -> LabelResult:
        cfg = self.config
        if cfg.threads and getattr(self._threads, "n", None) != cfg.threads:
            set_threads(cfg.threads)  # threadpoolctl takes milliseconds: once per thread
            self._threads.n = cfg.threads
        attempts: list[dict[str, Any]] = []
        for rung in cfg.xtb_ladder:
            settings = rung_settings(cfg, rung)
            try:
                energy, forces = singlepoint(atoms, cfg, **settings)
            except RuntimeError as err:  # "SCF not converged in N cycles", bad geometry
                attempts.append({"strategy": rung, "converged": False, **settings,
                                 "error": str(err).strip()})
                continue
            attempts.append({"strategy": rung, "converged": True, **settings})
            prov = {"xtb_method": TBLITE_METHOD[cfg.xtb_method], "scf_strategy": rung,
                    "scf_attempts": attempts,
                    "electronic_temperature_k": settings["electronic_temperature"]}
            return LabelResult("ok", energy=energy, forces=forces, provenance=prov)
        tried = ", ".join(f"{a['strategy']} ({a['error']})" for a in attempts)
        return LabelResult("failed", reason=f"scf: not converged after {tried}",
                           provenance={"scf_attempts": attempts})
