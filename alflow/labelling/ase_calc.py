"""Labels from any ASE calculator (EMT, LennardJones, Morse, ...): cheap oracles for tests,
examples and method development.

The calculator is named in ``LabellerConfig.calculator`` (``emt``, ``lj``, ``morse`` or a
dotted import path ``package.module.Class``) with keyword arguments ``ase_kwargs``; both are
hashed into the configuration keys. The argon cluster of the ``lj7`` example uses
``ase:lj(sigma=3.405, epsilon=0.0103, rc=34.05)`` (ASE's ``smooth=False`` default).
"""

from __future__ import annotations

import inspect
import threading
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator

from alflow.errors import ConfigError
from alflow.labelling.base import BaseLabeller, LabellerConfig, LabelResult
from alflow.usercode import import_named

EMT_ELEMENTS = frozenset({"H", "C", "N", "O", "Al", "Ni", "Cu", "Pd", "Ag", "Pt", "Au"})


def calculator_class(name: str) -> type[Calculator]:
    """The ASE calculator class for a shorthand or dotted path; ConfigError if unknown."""
    short = {"emt": "ase.calculators.emt.EMT", "lj": "ase.calculators.lj.LennardJones",
             "morse": "ase.calculators.morse.MorsePotential"}
    path = short.get(name.lower(), name)
    module, dot, cls = path.rpartition(".")
    if not dot:
        raise ConfigError(f"calculator: unknown ASE calculator {name!r}; expected one of "
                          f"{sorted(short)} or a dotted path 'package.module.Class'")
    obj = import_named(module, cls, "calculator", want_class=True)  # (runs that module)
    if not (isinstance(obj, type) and issubclass(obj, Calculator)):
        raise ConfigError(f"calculator: {path!r} is not an ASE Calculator class")
    return obj


class AseLabeller(BaseLabeller):
    """Energy and forces from an ASE calculator (one instance per thread, reused)."""

    def __init__(self, config: LabellerConfig):
        super().__init__(config)
        cls = calculator_class(config.calculator)
        known = set(getattr(cls, "default_parameters", {}) or {})
        known |= set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs"}
        unknown = sorted(set(config.ase_kwargs) - known)
        if unknown and getattr(cls, "default_parameters", None):
            raise ConfigError(f"ase_kwargs: {config.calculator} does not accept {unknown}; "
                              f"it knows {sorted(known)}")
        try:
            cls(**config.ase_kwargs)
        except TypeError as err:
            raise ConfigError(f"ase_kwargs: {config.calculator} does not accept "
                              f"{config.ase_kwargs}: {err}") from None
        self._cls = cls
        self._local = threading.local()  # ASE calculators keep state: one per thread
        self.method_info: dict[str, Any] = {
            "name": config.name, "backend": "ase", "calculator": f"{cls.__module__}."
            f"{cls.__name__}", "kwargs": dict(config.ase_kwargs)}

    def check(self, atoms: Atoms) -> None:
        if self.config.calculator.lower() == "emt":
            bad = sorted(set(atoms.get_chemical_symbols()) - EMT_ELEMENTS)
            if bad:
                raise ConfigError(f"EMT has no parameters for {', '.join(bad)} (it knows "
                                  f"{', '.join(sorted(EMT_ELEMENTS))})")

    def _compute(self, atoms: Atoms) -> LabelResult:
        calc = getattr(self._local, "calc", None)
        if calc is None:
            calc = self._local.calc = self._cls(**self.config.ase_kwargs)
        work = atoms.copy()
        work.calc = calc
        energy = float(work.get_potential_energy())
        forces = np.array(work.get_forces(), dtype=np.float64)
        return LabelResult("ok", energy=energy, forces=forces,
                           provenance={"calculator": self.method_info["calculator"]})
