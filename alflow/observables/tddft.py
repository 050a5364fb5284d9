"""Linear-response TDDFT with PySCF: excitation energies (eV) and oscillator strengths.

One function does the work, :func:`run_tddft(atoms, config) -> TDDFTResult`; it never raises
for a failed SCF or an unconverged Davidson solve (the result then has ``status="failed"`` and
a ``reason``), so one bad configuration never loses a batch. Bad *input* (unknown method,
wrong field) raises :class:`~alflow.errors.ConfigError`.

Defaults follow the labelling method of a campaign: PBE/def2-SVP with the def2 ECP on
elements beyond Kr, density fitting, closed-shell RKS (open shells: UKS). ``tda=False`` solves
the full Casida problem (for pure functionals PySCF's ``CasidaTDDFT``, a symmetric eigenproblem
of half the size); ``tda=True`` the Tamm–Dancoff approximation. Oscillator strengths are in the
length gauge.

The molecule and the ground-state SCF come from the labeller (:mod:`alflow.labelling.pyscf`:
``build_mole``, ``run_scf_ladder``), so a spectrum is computed on exactly the electronic
structure that labels the configuration, with one difference: the SCF ladder here has no
Fermi-smearing rung (TDDFT needs integer occupations).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from typing import Any, Literal

import numpy as np
from ase import Atoms
from pydantic import Field

from alflow.config import StrictModel
from alflow.errors import ConfigError
from alflow.structures import config_key

log = logging.getLogger(__name__)

HARTREE_EV = 27.211386245988  # CODATA 2018, as pyscf.data.nist.HARTREE2EV
SCF_LADDER = ("diis", "level_shift", "newton")  # no smearing: TDDFT needs integer occupations


class TDDFTConfig(StrictModel):
    """Settings of one TDDFT calculation (energies in eV where not stated)."""

    xc: str = Field("pbe", description="exchange-correlation functional (libxc name)")
    basis: str = Field("def2-svp", description="orbital basis set")
    ecp: str | None = Field(
        "auto", description="'auto': the def2 ECP for Z >= 37 with def2 bases; a name: that ECP "
                            "for Z >= 37; None: all-electron"
    )
    density_fit: bool = Field(True, description="density fitting (RI-J) in SCF and TDDFT")
    auxbasis: str | None = Field(None, description="auxiliary basis; None: PySCF's default")
    nstates: int = Field(20, ge=1, description="number of lowest excited states")
    tda: bool = Field(False, description="Tamm-Dancoff approximation instead of full Casida")
    singlet: bool = Field(True, description="singlet (True) or triplet excitations (closed shell)")
    charge: int = 0
    spin: int | None = Field(None, ge=0, description="2S; None: 0 or 1 by electron parity")
    conv_tol: float = Field(1e-9, gt=0, description="SCF energy convergence (Hartree)")
    max_cycle: int = Field(100, ge=1, description="SCF iterations per attempt")
    td_conv_tol: float = Field(1e-5, gt=0, description="Davidson residual tolerance")
    grids_level: int = Field(3, ge=0, le=9)
    td_grids_level: int | None = Field(
        None, ge=0, le=9, description="grid level of the response XC kernel (most of the TDDFT "
                                      "time); None: the SCF's grids_level")
    max_memory_mb: int = Field(2000, ge=100)
    threads: int | None = Field(None, ge=1, description="OpenMP threads; None: PySCF's default")

    @classmethod
    def from_method(cls, method: str, **overrides: Any) -> TDDFTConfig:
        """Parse a labelling shorthand ``pyscf:XC/BASIS`` (e.g. ``pyscf:pbe/def2-svp``)."""
        text = method.strip()
        prefix, sep, rest = text.partition(":")
        if not sep or prefix.lower() != "pyscf" or rest.count("/") != 1:
            raise ConfigError(
                f"method {method!r}: TDDFT needs a PySCF method written 'pyscf:XC/BASIS', "
                "e.g. 'pyscf:pbe/def2-svp'"
            )
        xc, basis = (s.strip() for s in rest.split("/"))
        if not xc or not basis:
            raise ConfigError(f"method {method!r}: both XC and BASIS are needed ('pyscf:XC/BASIS')")
        return cls(xc=xc, basis=basis, **overrides)

    @classmethod
    def from_labeller(cls, labeller: Any, **overrides: Any) -> TDDFTConfig:
        """The TDDFT settings matching a PySCF :class:`~alflow.labelling.LabellerConfig`
        (functional, basis, ECP, density fitting, charge, spin, grid, memory, threads)."""
        if getattr(labeller, "backend", "pyscf") != "pyscf":
            raise ConfigError(f"TDDFT needs a PySCF labelling method, the campaign labels with "
                              f"{getattr(labeller, 'name', labeller)!r}; give --method "
                              "pyscf:XC/BASIS")
        fields = {"xc": labeller.functional, "basis": labeller.basis, "ecp": labeller.ecp,
                  "density_fit": labeller.density_fit, "auxbasis": labeller.auxbasis,
                  "charge": labeller.charge, "spin": labeller.spin,
                  "grids_level": labeller.grids_level, "max_memory_mb": labeller.max_memory_mb,
                  "threads": labeller.threads}
        fields.update(overrides)
        return cls(**fields)

    def labeller_config(self):
        """The :class:`~alflow.labelling.LabellerConfig` of the ground state: same molecule
        and SCF as the labeller, but an SCF ladder without Fermi smearing (TDDFT needs integer
        occupations)."""
        from alflow.labelling.base import LabellerConfig

        return LabellerConfig(
            backend="pyscf", functional=self.xc, basis=self.basis, ecp=self.ecp,
            density_fit=self.density_fit, auxbasis=self.auxbasis, charge=self.charge,
            spin=self.spin, grids_level=self.grids_level, conv_tol=self.conv_tol,
            max_cycle=self.max_cycle, scf_ladder=list(SCF_LADDER),
            max_memory_mb=self.max_memory_mb, threads=self.threads)

    def method_info(self) -> dict[str, Any]:
        """The settings that change the result (hashed into a configuration's key)."""
        keep = ("xc", "basis", "ecp", "density_fit", "auxbasis", "nstates", "tda", "singlet",
                "charge", "spin", "grids_level")
        info = {k: getattr(self, k) for k in keep}
        if self.td_grids_level is not None:  # absent by default: keys of older results hold
            info["td_grids_level"] = self.td_grids_level
        info["kind"] = "pyscf-tddft"
        info["xc"] = self.xc.lower()
        info["basis"] = self.basis.lower()
        return info

    @property
    def method_label(self) -> str:
        """Short readable name, e.g. ``tddft:pbe/def2-svp`` or ``tda:pbe/def2-svp``."""
        return f"{'tda' if self.tda else 'tddft'}:{self.xc.lower()}/{self.basis.lower()}"


class TDDFTResult(StrictModel):
    """Excitations of one configuration, with provenance."""

    key: str
    status: Literal["ok", "failed"]
    reason: str = ""
    excitation_energies_ev: list[float] = []
    oscillator_strengths: list[float] = []
    transition_dipoles_au: list[list[float]] = []
    scf_energy_ev: float | None = None
    provenance: dict[str, Any] = {}


def spectrum_key(atoms: Atoms, config: TDDFTConfig) -> str:
    """Content key of (configuration, TDDFT settings): equal keys are never computed twice."""
    return config_key(atoms, config.method_info())


def make_td(mf, config: TDDFTConfig):
    """The PySCF TD object (TDA or full TDDFT/Casida) for a converged ``mf``; with
    ``td_grids_level`` the response XC kernel is integrated on that grid instead of the SCF's
    (the ground state is unchanged)."""
    if config.td_grids_level is not None and config.td_grids_level != config.grids_level:
        from pyscf import dft

        mf = mf.copy()
        mf.grids = dft.gen_grid.Grids(mf.mol)
        mf.grids.level = config.td_grids_level
        mf.grids.build()
    td = mf.TDA() if config.tda else mf.TDDFT()
    td.nstates = config.nstates
    td.conv_tol = config.td_conv_tol
    if mf.mol.spin == 0:
        td.singlet = config.singlet
    td.verbose = 0
    return td


def _versions() -> dict[str, str]:
    import pyscf

    return {"pyscf": pyscf.__version__, "numpy": np.__version__}


def _guess_id(atoms: Atoms, config: TDDFTConfig) -> str:
    return json.dumps([atoms.numbers.tolist(), config.method_info()], sort_keys=True)


def run_tddft(atoms: Atoms, config: TDDFTConfig | None = None,
              scf_guess: dict[str, Any] | None = None) -> TDDFTResult:
    """Lowest ``config.nstates`` excitations of ``atoms`` (positions in Å).

    Returns energies in eV sorted ascending, length-gauge oscillator strengths (dimensionless)
    and transition dipoles (a.u.); a failed SCF or Davidson solve gives ``status="failed"``.

    ``scf_guess`` (in/out, optional): a dict that carries the converged SCF density from one
    call to the next. If it holds one for the same elements in the same order and the same
    method, the SCF starts from it instead of PySCF's default guess (for thermally displaced
    samples of one structure about half the iterations; the result is the same to the SCF
    tolerance; provenance ``scf_guess``); the new converged density is written back.
    """
    from pyscf import lib

    from alflow.labelling.pyscf import build_mole, run_scf_ladder

    config = config or TDDFTConfig()
    key = spectrum_key(atoms, config)
    prov: dict[str, Any] = {
        "method": config.method_info(),
        "method_label": config.method_label,
        "versions": _versions(),
        "host": platform.node(),
        "pid": os.getpid(),
    }
    t0 = time.perf_counter()
    c0 = time.process_time()
    scf_cfg = config.labeller_config()
    mol = build_mole(atoms, scf_cfg)
    prov.update(nao=int(mol.nao), nelectron=int(mol.nelectron))
    threads_before = lib.num_threads()
    if config.threads is not None:
        lib.num_threads(config.threads)
    prov["threads"] = int(lib.num_threads())
    try:
        nocc = mol.nelectron // 2
        nvir = mol.nao - nocc
        if config.nstates > nocc * nvir:
            raise ConfigError(
                f"nstates={config.nstates} exceeds the {nocc * nvir} single excitations of "
                f"this molecule in {config.basis}"
            )
        guess_id = _guess_id(atoms, config)
        dm0 = (scf_guess["dm"] if scf_guess is not None and scf_guess.get("id") == guess_id
               else None)
        prov["scf_guess"] = "previous density" if dm0 is not None else "default"
        mf, _, attempts = run_scf_ladder(mol, scf_cfg, dm0=dm0)
        prov["scf_attempts"] = attempts
        prov["scf_seconds"] = time.perf_counter() - t0
        if mf is None:
            tried = ", ".join(a["strategy"] for a in attempts)
            return TDDFTResult(key=key, status="failed", provenance=prov,
                               reason=f"SCF did not converge ({tried})")
        if scf_guess is not None:
            scf_guess.update(id=guess_id, dm=mf.make_rdm1())
        t1 = time.perf_counter()
        td = make_td(mf, config)
        try:
            td.kernel()
            if not np.all(td.converged):  # retry with spare roots and more iterations
                prov["td_retry"] = True
                td = make_td(mf, config)
                td.nstates = config.nstates + 5
                td.max_cycle = 2 * td.max_cycle
                td.kernel()
        except Exception as err:
            return TDDFTResult(key=key, status="failed", reason=f"TDDFT error: {err}",
                               scf_energy_ev=float(mf.e_tot) * HARTREE_EV, provenance=prov)
        prov["td_seconds"] = time.perf_counter() - t1
        prov["wall_seconds"] = time.perf_counter() - t0
        prov["cpu_seconds"] = time.process_time() - c0  # all threads of this process
        converged = np.atleast_1d(np.asarray(td.converged, dtype=bool))[: config.nstates]
        if not converged.all():
            bad = np.flatnonzero(~converged).tolist()
            return TDDFTResult(key=key, status="failed", provenance=prov,
                               scf_energy_ev=float(mf.e_tot) * HARTREE_EV,
                               reason=f"Davidson did not converge roots {bad}")
        e_ev = np.asarray(td.e, dtype=float) * HARTREE_EV
        f = np.asarray(td.oscillator_strength(gauge="length"), dtype=float)
        dip = np.asarray(td.transition_dipole(), dtype=float).reshape(len(e_ev), 3)
        order = np.argsort(e_ev, kind="stable")[: config.nstates]
        if e_ev.size and e_ev[order[0]] <= 0:
            return TDDFTResult(key=key, status="failed", provenance=prov,
                               scf_energy_ev=float(mf.e_tot) * HARTREE_EV,
                               reason="non-positive excitation energy (unstable ground state)")
        return TDDFTResult(
            key=key,
            status="ok",
            excitation_energies_ev=e_ev[order].tolist(),
            oscillator_strengths=f[order].tolist(),
            transition_dipoles_au=dip[order].tolist(),
            scf_energy_ev=float(mf.e_tot) * HARTREE_EV,
            provenance=prov,
        )
    finally:
        lib.num_threads(threads_before)

