"""The labeller interface: a validated config, a result type and the common label() wrapper.

A labeller turns one configuration (ASE Atoms, Å) into energy (eV) and forces (eV/Å).
``label`` never raises for a failed calculation (non-converged SCF, rejected geometry, any
error inside the backend): it returns ``LabelResult(status="failed", reason=...)``. Bad *input*
that no retry can fix (unknown method, an element the basis set lacks, inconsistent spin)
raises :class:`~alflow.errors.ConfigError` from :meth:`BaseLabeller.check`, which the batch
drivers call once per composition before spending any compute.
"""

from __future__ import annotations

import ast
import functools
import logging
import platform
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
from ase import Atoms
from ase.data import covalent_radii
from pydantic import Field, field_validator

from alflow.config import StrictModel
from alflow.errors import AlflowError, ConfigError
from alflow.structures import config_key, min_distance

log = logging.getLogger(__name__)

Rung = Literal["diis", "level_shift", "smearing", "newton"]
XtbRung = Literal["scf", "iterations", "guess", "temperature"]


class LabellerConfig(StrictModel):
    """How to label: backend and its settings (units: Å, Hartree where stated)."""

    backend: Literal["pyscf", "ase", "xtb"] = Field(
        "pyscf", description="pyscf (DFT), ase or xtb (GFN-xTB through tblite)")
    # -- PySCF DFT
    functional: str = Field("pbe", description="exchange-correlation functional (libxc name)")
    basis: str = Field("def2-svp", description="orbital basis set (PySCF name)")
    ecp: str | None = Field(
        "auto", description="'auto': the basis' own ECP for Z >= 37 (def2-*); a name: that ECP "
                            "for Z >= 37; None: all-electron")
    density_fit: bool = Field(True, description="density fitting (RI-J) for SCF and gradients")
    auxbasis: str | None = Field(None, description="auxiliary basis; None: PySCF's choice "
                                                   "(def2-universal-jfit for a pure functional)")
    charge: int = Field(0, description="total charge (e)")
    spin: int | None = Field(None, ge=0, description="2S = N_alpha - N_beta; None: 0 or 1 by "
                                                     "electron-count parity")
    grids_level: int = Field(3, ge=0, le=9, description="DFT integration grid level")
    grid_response: bool = Field(True, description="include the grid-weight derivative in the "
                                                  "forces (forces = exact gradient of E)")
    conv_tol: float = Field(1e-9, gt=0, description="SCF energy convergence, Hartree")
    max_cycle: int = Field(100, ge=1, description="SCF iterations per ladder rung (PySCF, xTB)")
    scf_ladder: list[Rung] = Field(
        ["diis", "level_shift", "smearing", "newton"],
        description="SCF strategies tried in order until one converges")
    level_shift: float = Field(0.2, gt=0, description="virtual-orbital level shift, Hartree")
    smearing_sigma: float = Field(0.005, gt=0, description="Fermi smearing width, Hartree "
                                                           "(the label is then the free energy)")
    max_memory_mb: int = Field(2000, ge=100, description="PySCF memory limit per process, MB")
    # -- ASE calculator
    calculator: str = Field("emt", description="ASE calculator: emt, lj, morse, or a dotted "
                                               "import path 'package.module.Class'")
    ase_kwargs: dict[str, Any] = Field({}, description="keyword arguments of the calculator")
    # -- GFN-xTB (tblite)
    xtb_method: Literal["gfn1", "gfn2"] = Field("gfn1", description="GFN1-xTB or GFN2-xTB")
    electronic_temperature: float = Field(300.0, gt=0, description="Fermi smearing "
                                          "temperature of the xTB SCF, K")
    accuracy: float = Field(1.0, gt=0, description="tblite accuracy (smaller: tighter)")
    xtb_ladder: list[XtbRung] = Field(
        ["scf", "iterations", "guess", "temperature"],
        description="xTB SCF retries in order: scf (max_cycle iterations), iterations "
                    "(4 x max_cycle), guess (EEQ charges instead of SAD), temperature "
                    "(retry_temperature)")
    retry_temperature: float = Field(3000.0, gt=0, description="electronic temperature of "
                                     "the 'temperature' rung, K (the label is then that "
                                     "temperature's free energy)")
    # -- common
    min_distance: float = Field(0.5, ge=0, description="reject configurations with two atoms "
                                                       "closer than this, Å")
    min_covalent_fraction: float = Field(
        0.5, ge=0, description="reject if a pair is closer than this fraction of the sum of "
                               "covalent radii")
    threads: int | None = Field(None, ge=1, description="OpenMP threads for one label; None: "
                                                        "OMP_NUM_THREADS / PySCF default")

    @field_validator("scf_ladder", "xtb_ladder")
    @classmethod
    def _ladder(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("needs at least one strategy")
        if len(set(v)) != len(v):
            raise ValueError("strategies must not repeat")
        return v

    @property
    def name(self) -> str:
        """Short method name, e.g. ``pyscf:pbe/def2-svp`` or ``ase:emt``."""
        if self.backend == "pyscf":
            return f"pyscf:{self.functional.lower()}/{self.basis.lower()}"
        if self.backend == "xtb":
            return f"xtb:{self.xtb_method}"
        args = ", ".join(f"{k}={v!r}" for k, v in sorted(self.ase_kwargs.items()))
        return f"ase:{self.calculator}({args})" if args else f"ase:{self.calculator}"


@dataclass
class LabelResult:
    """Outcome of one label: energy (eV), forces (N, 3) eV/Å, or a failure with its reason."""

    status: Literal["ok", "failed"]
    energy: float | None = None
    forces: np.ndarray | None = None
    reason: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Labeller(Protocol):
    """What the batch drivers need from a labeller."""

    config: LabellerConfig
    method_info: dict[str, Any]

    def check(self, atoms: Atoms) -> None: ...

    def key(self, atoms: Atoms) -> str: ...

    def label(self, atoms: Atoms) -> LabelResult: ...


def versions() -> dict[str, str]:
    """Versions of the codes a label depends on."""
    return dict(_versions())


@functools.cache
def _versions() -> dict[str, str]:
    # read once per process: the metadata look-ups take milliseconds, an xTB label about ten
    from importlib.metadata import PackageNotFoundError, version

    import ase

    try:
        alflow_version = version("alflow")
    except PackageNotFoundError:  # running from a source tree
        alflow_version = "?"
    out = {"alflow": alflow_version, "ase": ase.__version__,
           "numpy": np.__version__, "python": platform.python_version()}
    try:
        import pyscf

        out["pyscf"] = pyscf.__version__
    except ImportError:  # pragma: no cover - pyscf is a dependency
        pass
    try:
        out["tblite"] = version("tblite")
    except PackageNotFoundError:  # pragma: no cover - tblite is a dependency
        pass
    return out


def set_threads(n: int) -> None:
    """Use ``n`` threads in this thread: OpenMP (PySCF's C code), BLAS (numpy) and the
    environment of child processes."""
    import os

    os.environ["OMP_NUM_THREADS"] = str(n)
    try:
        from pyscf import lib

        lib.num_threads(n)
    except ImportError:  # pragma: no cover - pyscf is a dependency
        pass
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=n)
    except ImportError:
        log.debug("threadpoolctl not installed: BLAS threads follow OMP_NUM_THREADS at start")


def geometry_problem(atoms: Atoms, cfg: LabellerConfig) -> str | None:
    """Why ``atoms`` should not be labelled (non-finite positions, atoms too close), or None."""
    if not np.all(np.isfinite(atoms.positions)):
        return "non-finite positions"
    if len(atoms) < 2:
        return None
    d = min_distance(atoms)
    if d < cfg.min_distance:
        return f"atoms closer than {cfg.min_distance:.3f} Å (minimum distance {d:.3f} Å)"
    if cfg.min_covalent_fraction > 0:
        dist = atoms.get_all_distances(mic=bool(atoms.pbc.any()))
        r = covalent_radii[atoms.numbers]
        ratio = dist / (r[:, None] + r[None, :])
        np.fill_diagonal(ratio, np.inf)
        i, j = np.unravel_index(np.argmin(ratio), ratio.shape)
        if ratio[i, j] < cfg.min_covalent_fraction:
            return (f"atoms {i} and {j} ({atoms[i].symbol}-{atoms[j].symbol}) at "
                    f"{dist[i, j]:.3f} Å, below {cfg.min_covalent_fraction:g} x the sum of "
                    "covalent radii")
    return None


class BaseLabeller:
    """Common behaviour: key, geometry rejection, timing, provenance, failure capture.

    Subclasses set ``method_info`` and implement ``_compute(atoms) -> LabelResult`` (which may
    raise; any exception other than ConfigError becomes a failed result) and ``check``.
    """

    def __init__(self, config: LabellerConfig):
        self.config = config
        self.method_info: dict[str, Any] = {}

    @property
    def name(self) -> str:
        return self.config.name

    def key(self, atoms: Atoms) -> str:
        """Content key of (configuration, method settings)."""
        return config_key(atoms, self.method_info)

    def check(self, atoms: Atoms) -> None:
        """Raise ConfigError if this labeller cannot handle ``atoms`` at all."""

    def _compute(self, atoms: Atoms) -> LabelResult:  # pragma: no cover - abstract
        raise NotImplementedError

    def label(self, atoms: Atoms) -> LabelResult:
        """Energy (eV) and forces (eV/Å) of ``atoms``; failures are returned, not raised."""
        t0 = time.perf_counter()
        prov: dict[str, Any] = {"method": self.method_info, "versions": versions(),
                                "host": socket.gethostname()}
        problem = geometry_problem(atoms, self.config)
        if problem is not None:
            res = LabelResult("failed", reason=f"rejected: {problem}")
        else:
            try:
                res = self._compute(atoms)
            except AlflowError:
                raise
            except Exception as err:  # a failed calculation must not stop a batch
                log.warning("%s failed: %s: %s", self.name, type(err).__name__, err)
                res = LabelResult("failed", reason=f"error: {type(err).__name__}: {err}")
        if res.status == "ok" and not (np.isfinite(res.energy)
                                       and np.all(np.isfinite(res.forces))):
            res = LabelResult("failed", reason="error: non-finite energy or forces",
                              provenance=res.provenance)
        prov.update(res.provenance)
        prov["wall_time_s"] = time.perf_counter() - t0
        res.provenance = prov
        return res


ASE_SHORTHANDS = ("emt", "lj", "morse")


def _parse_kwargs(text: str, method: str) -> dict[str, Any]:
    """``a=1, b='x'`` -> dict, values as Python literals."""
    out: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep or not name.strip().isidentifier():
            raise ConfigError(f"method {method!r}: expected name=value arguments, got {part!r}")
        try:
            out[name.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            raise ConfigError(f"method {method!r}: value of {name.strip()!r} must be a number "
                              f"or quoted string, got {value.strip()!r}") from None
    return out


METHOD_HELP = ("methods are written 'pyscf:XC/BASIS' (e.g. pyscf:pbe/def2-svp), "
               "'xtb:gfn1', 'xtb:gfn2(charge=0, multiplicity=1, electronic_temperature=300)', "
               "'ase:emt', "
               "'ase:lj(sigma=3.405, epsilon=0.0103, rc=34.05)', 'ase:morse' or "
               "'ase:package.module.Class(arg=value)'")


XTB_ARGS = {"charge": "charge", "multiplicity": "spin",
            "electronic_temperature": "electronic_temperature", "accuracy": "accuracy",
            "max_iterations": "max_cycle", "threads": "threads"}


def xtb_shorthand_fields(args: dict[str, Any], method: str) -> dict[str, Any]:
    """LabellerConfig fields of the arguments of ``xtb:gfnN(...)``: ``multiplicity`` M gives
    ``spin`` = M - 1, ``max_iterations`` gives ``max_cycle``; others keep their names."""
    out: dict[str, Any] = {}
    for name, value in args.items():
        if name not in XTB_ARGS:
            raise ConfigError(f"method {method!r}: {name}: unknown xTB option; expected one "
                              f"of {', '.join(XTB_ARGS)}")
        if name == "multiplicity":
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"method {method!r}: multiplicity: expected an integer "
                                  f">= 1 (2S + 1), got {value!r}")
            value -= 1
        out[XTB_ARGS[name]] = value
    return out


def parse_method(method: str, **overrides: Any) -> LabellerConfig:
    """A LabellerConfig from a shorthand such as ``pyscf:pbe/def2-svp`` or ``ase:emt``;
    ``overrides`` set further fields (e.g. ``threads``)."""
    text = method.strip()
    backend, sep, rest = text.partition(":")
    backend = backend.lower().strip()
    rest = rest.strip()
    fields: dict[str, Any] = {}
    if backend == "pyscf":
        if sep and rest:
            xc, slash, basis = rest.partition("/")
            if not slash or not xc.strip() or not basis.strip():
                raise ConfigError(f"method {method!r}: PySCF methods are 'pyscf:XC/BASIS', "
                                  "e.g. pyscf:pbe/def2-svp")
            fields.update(functional=xc.strip(), basis=basis.strip())
        fields["backend"] = "pyscf"
    elif backend == "ase" and rest:
        name, paren, args = rest.partition("(")
        if paren:
            if not args.endswith(")"):
                raise ConfigError(f"method {method!r}: unbalanced parenthesis")
            fields["ase_kwargs"] = _parse_kwargs(args[:-1], method)
        fields.update(backend="ase", calculator=name.strip())
    elif backend == "xtb" and rest:
        name, paren, args = rest.partition("(")
        if paren and not args.endswith(")"):
            raise ConfigError(f"method {method!r}: unbalanced parenthesis")
        fields.update(backend="xtb", xtb_method=name.strip().lower())
        fields.update(xtb_shorthand_fields(_parse_kwargs(args[:-1], method) if paren else {},
                                           method))
    else:
        raise ConfigError(f"unknown labelling method {method!r}: {METHOD_HELP}")
    fields.update(overrides)
    from alflow.config import validate_model

    return validate_model(LabellerConfig, fields, source=f"method {method!r}")
