"""G(T, P) per atom of one crystal phase at one state point, by Einstein-crystal TI and by
an NPT flow: the two computations a polymorph campaign runs per (phase, state point).

Potentials (:class:`Potential`): ``lj``, Lennard-Jones in reduced units (ε = σ = m = k_B = 1;
T* = k_BT/ε, P* = Pσ³/ε; truncated at ``cutoff`` σ and shifted to zero there), and ``emt``,
ASE's EMT of one element in eV, Å, K and GPa. Both methods evaluate the same energy (the TI
on :mod:`alflow.solids.models`, the flow on :mod:`alflow.solids.crystal_energy`) on the same
crystal of ``n_atoms`` (:func:`alflow.solids.crystals.crystal`, at the static lattice's
density at P). Energies per atom are in ε (``lj``) or eV (``emt``).

The absolute G of the two methods follow different conventions (the TI takes the thermal
wavelength Λ = 1 length unit with the centre of mass freed; the flow is configurational, with
the box measure of :mod:`alflow.solids.flows`): compare ΔG between phases of the same N, not
G itself.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Literal

from ase import units

from alflow.solids.crystals import crystal
from alflow.solids.einstein import gibbs, static_density
from alflow.solids.models import CrystalModel, emt_model, lj_model


@dataclass(frozen=True)
class Potential:
    """``kind`` "lj" (reduced units, r_c = ``cutoff`` σ, shifted) or "emt" (``element``)."""

    kind: Literal["lj", "emt"] = "lj"
    cutoff: float = 2.5
    element: str = "Cu"

    @property
    def energy_unit(self) -> str:
        return "epsilon" if self.kind == "lj" else "eV"

    def kt(self, temperature: float) -> float:
        """k_BT in energy units of ``temperature`` (T* for lj, K for emt)."""
        return float(temperature) if self.kind == "lj" else units.kB * float(temperature)

    def pressure(self, pressure: float) -> float:
        """P in energy per volume of ``pressure`` (P* for lj, GPa for emt: eV/Å³)."""
        return float(pressure) if self.kind == "lj" else float(pressure) * units.GPa

    def model(self) -> CrystalModel:
        return lj_model(self.cutoff) if self.kind == "lj" else emt_model(self.element)

    def symbol(self) -> str:
        return "Ar" if self.kind == "lj" else self.element

    def crystal_energy(self, atoms):
        """The flow's periodic energy on the reference crystal ``atoms`` (ASE Atoms)."""
        from alflow.solids.crystal_energy import CrystalEMT, CrystalLennardJones

        if self.kind == "lj":
            return CrystalLennardJones(atoms.numbers, atoms.positions, atoms.cell[:],
                                       epsilon=1.0, sigma=1.0, cutoff=self.cutoff, shift=True)
        return CrystalEMT(atoms.numbers, atoms.positions, atoms.cell[:])


@dataclass(frozen=True)
class TISettings:
    """Frenkel–Ladd run per phase and state point (:func:`alflow.solids.einstein.gibbs`):
    ``steps`` per λ node × ``copies`` replicas, ``n_lambda`` Gauss–Legendre nodes,
    ``equil`` equilibration steps."""

    steps: int = 600
    copies: int = 2
    n_lambda: int = 8
    equil: int = 400


@dataclass(frozen=True)
class FlowSettings:
    """NPT flow per phase and state point (:mod:`alflow.solids.flows`): ``box`` the cell's
    degrees of freedom, the coupling flow's ``layers`` × ``hidden``, ``train_steps``
    reverse-KL steps of ``batch`` samples (0: the harmonic start), ``samples`` for the
    importance-sampling estimate."""

    box: Literal["isotropic", "triangular"] = "isotropic"
    layers: int = 4
    hidden: int = 32
    train_steps: int = 0
    batch: int = 64
    lr: float = 1e-3
    samples: int = 2000


@dataclass
class PhasePoint:
    """G/N ± ``err`` of one phase at (``kt``, ``pressure``) in the potential's energy units;
    ``volume_per_atom`` (σ³ or Å³); ``method`` "ti" or "flow"; ``extra``: the method's
    diagnostics (flow: ESS fraction, Pareto k̂, ...; TI: spring, lattice energy, ...);
    ``seconds`` wall time."""

    method: str
    structure: str
    n_atoms: int
    kt: float
    pressure: float
    g_per_atom: float
    err: float
    volume_per_atom: float
    units: str
    seconds: float
    extra: dict

    def to_dict(self) -> dict:
        return asdict(self)


def ti_point(potential: Potential, structure: str, n_atoms: int, temperature: float,
             pressure: float, settings: TISettings = TISettings(), seed: int = 0
             ) -> PhasePoint:
    """G/N of ``structure`` at ``temperature``, ``pressure`` (the potential's units) by
    Einstein-crystal integration at the volume where the NVT pressure is P."""
    t0 = time.perf_counter()
    kt, p = potential.kt(temperature), potential.pressure(pressure)
    g = gibbs(potential.model(), structure, n_atoms, kt, p, seed=seed, n_steps=settings.steps,
              copies=settings.copies, n_lambda=settings.n_lambda, n_equil=settings.equil)
    extra = {"spring": g.ti.spring, "lattice_energy_per_atom": g.ti.lattice_energy_per_atom,
             "einstein_per_atom": g.ti.einstein_per_atom,
             "integral_per_atom": g.ti.integral_per_atom,
             "pressure_fit": [list(f) for f in g.pressure_fit]}
    return PhasePoint("ti", structure, n_atoms, kt, p, g.g_per_atom, g.err, g.volume_per_atom,
                      potential.energy_unit, time.perf_counter() - t0, extra)


def flow_point(potential: Potential, structure: str, n_atoms: int, temperature: float,
               pressure: float, settings: FlowSettings = FlowSettings(), seed: int = 0
               ) -> PhasePoint:
    """G/N of ``structure`` at ``temperature``, ``pressure`` (the potential's units) from an
    NPT flow: whitened by the harmonic crystal with its quasi-harmonic cell, trained by
    reverse KL on the enthalpy (``settings.train_steps``), importance sampling with a
    bootstrap error."""
    from alflow.flows import FlowConfig, train_flow
    from alflow.solids.flows import CrystalFlow, Enthalpy, crystal_free_energy

    t0 = time.perf_counter()
    kt, p = potential.kt(temperature), potential.pressure(pressure)
    model = potential.model()
    rho = static_density(structure, p, n_atoms=n_atoms, model=model)
    atoms = crystal(structure, n_atoms, rho, symbol=potential.symbol())
    target = Enthalpy(potential.crystal_energy(atoms), p)
    temperature_k = kt / units.kB  # lj: ε = 1 eV numerically
    cf = CrystalFlow.build(atoms.positions, atoms.cell[:], target, temperature_k,
                           box=settings.box, cfg=FlowConfig(layers=settings.layers,
                                                            hidden=settings.hidden, seed=seed))
    train_s = 0.0
    if settings.train_steps:
        hist = train_flow(cf, potential=target, temperature_k=temperature_k,
                          config=dict(forward_weight=0.0, steps=settings.train_steps,
                                      reverse_batch=settings.batch, lr=settings.lr,
                                      lr_final=settings.lr / 100, seed=seed))
        train_s = float(hist["seconds"])
    fe = crystal_free_energy(cf, target, temperature_k, n=settings.samples, seed=seed + 1)
    extra = {"ess_fraction": fe.total.ess_fraction, "pareto_k": fe.total.extra.get("pareto_k"),
             "inside_fraction": fe.total.extra.get("inside_fraction"),
             "train_seconds": train_s, "box": settings.box}
    return PhasePoint("flow", structure, n_atoms, kt, p, fe.per_atom, fe.err_per_atom,
                      fe.total.extra["mean_volume"] / n_atoms, potential.energy_unit,
                      time.perf_counter() - t0, extra)


__all__ = ["FlowSettings", "PhasePoint", "Potential", "TISettings", "flow_point", "ti_point"]
