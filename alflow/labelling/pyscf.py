"""DFT labels with PySCF: Kohn-Sham energy (eV) and analytic forces (eV/Å), robust SCF.

Default: PBE/def2-SVP with the def2 ECP for Z >= 37 (e.g. Ag: 19 explicit electrons), density
fitting (RI-J, with the auxiliary-basis response in the forces), closed-shell RKS or UKS when
``spin > 0``. Forces include the grid-weight response (``grid_response``) so they are the exact
derivative of the reported energy, which finite differences check in the tests.

SCF ladder (``LabellerConfig.scf_ladder``), each rung ``max_cycle`` iterations, every rung from
the same initial guess (a failed rung's oscillating density is a poor start: from it the smeared
SCF of a degenerate H4 square wandered for 20 cycles, from the guess it converges in 2):

1. ``diis``: plain DIIS from the MINAO guess;
2. ``level_shift``: DIIS with the virtual orbitals shifted up by ``level_shift`` Hartree;
3. ``smearing``: Fermi-Dirac occupations of width ``smearing_sigma``; the label is then the
   Mermin free energy E - sigma*S, whose gradient the fractional-occupation forces are;
4. ``newton``: second-order (co-iterative augmented Hessian) SCF.

A configuration that fails every rung gives a failed label (reason lists each rung), never an
exception. Units: PySCF works in Hartree and Bohr; results are converted with ``ase.units``
(energies x Hartree, forces x Hartree/Bohr), the same constants ASE uses everywhere.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from typing import Any

import numpy as np
from ase import Atoms, units

from alflow.errors import ConfigError
from alflow.labelling.base import BaseLabeller, LabellerConfig, LabelResult, set_threads

log = logging.getLogger(__name__)

ECP_MIN_Z = 37  # def2 basis sets replace the core by an ECP from Rb on
HARTREE_EV = units.Hartree
HARTREE_PER_BOHR_EV_PER_A = units.Hartree / units.Bohr


def _basis_has(basis: str, symbol: str) -> bool:
    from pyscf import gto

    try:
        with contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "may be available in basis-set-exchange"
            return bool(gto.basis.load(basis, symbol))
    except Exception:  # BasisNotFoundError, KeyError, RuntimeError depending on the basis
        return False


def _ecp_has(ecp: str, symbol: str) -> bool:
    from pyscf import gto

    try:
        with contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return bool(gto.basis.load_ecp(ecp, symbol))
    except Exception:  # BasisNotFoundError, RuntimeError: unknown name or element
        return False


def ecp_for(symbols: list[str], numbers: np.ndarray, cfg: LabellerConfig) -> dict[str, str]:
    """The ECP of each heavy element (Z >= 37) per ``cfg.ecp``; {} for all-electron."""
    if cfg.ecp is None:
        return {}
    if cfg.ecp == "auto":
        if not cfg.basis.lower().startswith("def2"):
            return {}
        name = cfg.basis
    else:
        name = cfg.ecp
    return {s: name for s, z in zip(symbols, numbers, strict=True) if z >= ECP_MIN_Z}


def resolve_spin(atoms: Atoms, cfg: LabellerConfig, ecp: dict[str, str]) -> int:
    """2S from the config, or 0/1 by electron-count parity (ECP cores hold even counts)."""
    nelec = int(atoms.numbers.sum()) - cfg.charge
    if cfg.spin is None:
        return nelec % 2
    if (nelec - cfg.spin) % 2:
        raise ConfigError(f"spin: 2S={cfg.spin} is impossible with {nelec} electrons "
                          f"({atoms.get_chemical_formula()}, charge {cfg.charge}); use "
                          f"{'an odd' if nelec % 2 else 'an even'} value or leave spin unset")
    return cfg.spin


def build_mole(atoms: Atoms, cfg: LabellerConfig):
    """A ``pyscf.gto.Mole`` for ``atoms`` (Å) with the basis, ECP, charge and spin of ``cfg``.

    Raises ConfigError for periodic structures, elements the basis lacks, impossible spin."""
    from pyscf import gto

    if atoms.pbc.any():
        raise ConfigError("the PySCF labeller is molecular: the structure must not be periodic "
                          f"(pbc={atoms.pbc.tolist()})")
    symbols = atoms.get_chemical_symbols()
    missing = sorted({s for s in symbols if not _basis_has(cfg.basis, s)})
    if missing:
        raise ConfigError(f"basis: {cfg.basis!r} has no functions for element(s) "
                          f"{', '.join(missing)}; choose a basis that covers them "
                          "(e.g. def2-svp covers H-Rn)")
    ecp = ecp_for(symbols, atoms.numbers, cfg)
    if cfg.ecp not in (None, "auto"):
        bad = sorted({s for s in ecp if not _ecp_has(cfg.ecp, s)})
        if bad:
            raise ConfigError(f"ecp: {cfg.ecp!r} has no pseudopotential for element(s) "
                              f"{', '.join(bad)}; name an ECP that covers them (e.g. def2-svp, "
                              "lanl2dz), 'auto' or null (all-electron)")
    if cfg.auxbasis is not None and cfg.density_fit:
        bad = sorted({s for s in symbols if not _basis_has(cfg.auxbasis, s)})
        if bad:
            raise ConfigError(f"auxbasis: {cfg.auxbasis!r} has no functions for element(s) "
                              f"{', '.join(bad)}; name one that covers them (e.g. "
                              "def2-universal-jkfit) or null for PySCF's choice")
    spin = resolve_spin(atoms, cfg, ecp)
    try:
        return gto.M(atom=[(s, tuple(float(c) for c in p))
                           for s, p in zip(symbols, atoms.positions, strict=True)],
                     unit="Angstrom", basis=cfg.basis, ecp=ecp or None, charge=cfg.charge,
                     spin=spin, verbose=0, max_memory=cfg.max_memory_mb)
    except (RuntimeError, KeyError, ValueError) as err:
        raise ConfigError(f"PySCF cannot build the molecule ({cfg.basis}, ecp={ecp or None}): "
                          f"{err}") from None


def make_scf(mol, cfg: LabellerConfig, rung: str = "diis"):
    """The (density-fitted) RKS/UKS object of ``mol`` set up for one ladder rung; not run."""
    from pyscf import dft, scf

    mf = dft.RKS(mol) if mol.spin == 0 else dft.UKS(mol)
    mf.xc = cfg.functional
    mf.grids.level = cfg.grids_level
    mf.conv_tol = cfg.conv_tol
    mf.max_cycle = cfg.max_cycle
    mf.verbose = 0
    if cfg.density_fit:
        mf = mf.density_fit(auxbasis=cfg.auxbasis)
    if rung == "level_shift":
        mf.level_shift = cfg.level_shift
    elif rung == "smearing":
        mf = scf.addons.smearing(mf, sigma=cfg.smearing_sigma, method="fermi")
    elif rung == "newton":
        mf = mf.newton()
    return mf


def run_scf_ladder(mol, cfg: LabellerConfig, dm0: np.ndarray | None = None,
                   ) -> tuple[Any | None, str | None, list[dict]]:
    """Try the rungs of ``cfg.scf_ladder`` in order; ``(mf, rung, attempts)`` with ``mf`` the
    converged SCF (None if every rung failed) and one dict per attempt. ``dm0``: initial AO
    density matrix of every rung (e.g. a converged neighbouring geometry's, same atoms in
    the same order); None: PySCF's default guess."""
    attempts: list[dict] = []
    for rung in cfg.scf_ladder:
        mf = make_scf(mol, cfg, rung)
        cycles = [0]
        mf.callback = lambda envs, c=cycles: c.__setitem__(0, c[0] + 1)  # newton sets no .cycles
        try:
            mf.kernel(dm0=dm0)
        except Exception as err:  # linear dependencies, NaN in the density...
            attempts.append({"strategy": rung, "converged": False, "cycles": cycles[0],
                             "error": f"{type(err).__name__}: {err}"})
            continue
        attempts.append({"strategy": rung, "converged": bool(mf.converged),
                         "cycles": cycles[0], "e_tot": float(mf.e_tot)})
        if mf.converged:
            return mf, rung, attempts
    return None, None, attempts


def energy_and_forces(mf, cfg: LabellerConfig) -> tuple[float, np.ndarray]:
    """Energy (eV; the free energy for a smeared SCF) and forces (N, 3) eV/Å of a converged
    SCF."""
    smeared = getattr(mf, "sigma", None) and getattr(mf, "e_free", None) is not None
    e_h = float(mf.e_free) if smeared else float(mf.e_tot)
    g = mf.nuc_grad_method()
    g.verbose = 0
    if hasattr(g, "grid_response"):
        g.grid_response = cfg.grid_response
    grad = np.asarray(g.kernel(), dtype=np.float64)
    return e_h * HARTREE_EV, -grad * HARTREE_PER_BOHR_EV_PER_A


class PyscfLabeller(BaseLabeller):
    """Kohn-Sham DFT labels with PySCF (see the module docstring)."""

    def __init__(self, config: LabellerConfig):
        super().__init__(config)
        c = config
        self.method_info: dict[str, Any] = {
            "name": c.name, "backend": "pyscf", "functional": c.functional.lower(),
            "basis": c.basis.lower(), "ecp": c.ecp, "density_fit": c.density_fit,
            "auxbasis": c.auxbasis, "charge": c.charge, "spin": c.spin,
            "grids_level": c.grids_level, "smearing_sigma": c.smearing_sigma
            if "smearing" in c.scf_ladder else None,
        }

    def check(self, atoms: Atoms) -> None:
        """ConfigError for structures no SCF can fix: periodic, element missing from the
        basis, spin inconsistent with the electron count."""
        build_mole(atoms, self.config)

    def _compute(self, atoms: Atoms) -> LabelResult:
        from pyscf import lib

        cfg = self.config
        if cfg.threads:
            set_threads(cfg.threads)
        mol = build_mole(atoms, cfg)
        mf, rung, attempts = run_scf_ladder(mol, cfg)
        prov: dict[str, Any] = {
            "functional": cfg.functional, "basis": cfg.basis,
            "ecp_elements": sorted(mol._ecp or {}),
            "n_basis": int(mol.nao), "n_electrons": int(mol.nelectron), "spin": int(mol.spin),
            "threads": lib.num_threads(), "scf_attempts": attempts,
            "scf_iterations": sum(a["cycles"] for a in attempts),
        }
        if mf is None:
            tried = ", ".join(f"{a['strategy']} ({a.get('error') or str(a['cycles'])+' cycles'})"
                              for a in attempts)
            return LabelResult("failed", reason=f"scf: not converged after {tried}",
                               provenance=prov)
        prov["scf_strategy"] = rung
        prov["auxbasis"] = getattr(getattr(mf, "with_df", None), "auxbasis", None)
        if rung == "smearing":
            prov["e_internal_ev"] = float(mf.e_tot) * HARTREE_EV
        energy, forces = energy_and_forces(mf, cfg)
        return LabelResult("ok", energy=energy, forces=forces, provenance=prov)
