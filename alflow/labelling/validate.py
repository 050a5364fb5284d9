"""Validate a labelling method against the structures it will label, before any work.

:func:`validate_method` is the one check every entry point runs (``alflow label``, the MPI
driver, :func:`~alflow.labelling.label_many`, ``alflow spectrum``, a campaign's ``oracle``
at load time): the config's fields (pydantic), the backend's own names (a PySCF functional
through libxc's parser; the basis, the ECP and the auxiliary basis loaded for each element
of the structures; an ASE calculator class and its keyword arguments) and each composition
(spin against the electron count, elements a calculator or an xTB method knows). Nothing
runs an SCF; a problem raises :class:`~alflow.errors.ConfigError` naming the field.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

from ase import Atoms

from alflow.errors import ConfigError
from alflow.labelling.base import Labeller, LabellerConfig


def check_functional(functional: str) -> None:
    """ConfigError unless libxc (through PySCF's parser) knows ``functional``."""
    from pyscf.dft import libxc

    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(
                io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            libxc.parse_xc(functional)
    except Exception as err:  # KeyError for unknown names, ValueError for bad syntax
        raise ConfigError(f"functional: {functional!r} is not a functional libxc knows "
                          f"({str(err).strip(chr(34))}); e.g. pbe, b3lyp, pbe0, r2scan") from None


def distinct_compositions(atoms_list: Iterable[Atoms]) -> list[Atoms]:
    """One structure per distinct composition (element counts) of ``atoms_list``."""
    seen: dict[tuple[int, ...], Atoms] = {}
    for atoms in atoms_list:
        seen.setdefault(tuple(sorted(atoms.numbers.tolist())), atoms)
    return list(seen.values())


def validate_labeller(labeller: Labeller, atoms_list: Iterable[Atoms] = ()) -> None:
    """ConfigError (naming the field) if ``labeller`` cannot label ``atoms_list`` at all."""
    if labeller.config.backend == "pyscf":
        check_functional(labeller.config.functional)
    for atoms in distinct_compositions(atoms_list):
        labeller.check(atoms)


def validate_method(method: str | LabellerConfig | Mapping[str, Any],
                    atoms_list: Iterable[Atoms] = (), **overrides: Any) -> Labeller:
    """The labeller of ``method`` (shorthand, config or mapping; ``overrides`` set further
    fields), checked against ``atoms_list``; ConfigError naming the field otherwise."""
    from alflow.labelling import make_labeller

    labeller = make_labeller(method, **overrides)
    validate_labeller(labeller, atoms_list)
    return labeller
