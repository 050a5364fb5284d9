"""The ``alflow refine`` configuration: system, potential, MD settings, targets, optimiser.

Units: Å, eV, fs, amu, K. Every model is strict (an unknown field is an error naming it);
:func:`load_config` reads the YAML with ``safe_load``, resolves target files relative to the
YAML file and checks everything that can be checked before any MD runs (files readable, the
cutoff and the g(r) range within half the box).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from alflow.config import StrictModel, load_yaml_model
from alflow.errors import ConfigError

LJParameter = Literal["epsilon_ev", "sigma_a"]


class SystemConfig(StrictModel):
    """A periodic cubic box of one element at a number density and temperature."""

    element: str = Field(min_length=1, max_length=3)
    mass_amu: float = Field(gt=0)
    n_atoms: int = Field(ge=2)
    number_density_per_A3: float = Field(gt=0)
    temperature_k: float = Field(gt=0)

    @property
    def box_a(self) -> float:
        """Edge of the cubic box, Å."""
        return (self.n_atoms / self.number_density_per_A3) ** (1.0 / 3.0)


class LJPotentialConfig(StrictModel):
    """Lennard-Jones 4ε[(σ/r)¹² − (σ/r)⁶] for r < cutoff (no shift, no tail correction)."""

    kind: Literal["lj"]
    epsilon_ev: float = Field(gt=0)
    sigma_a: float = Field(gt=0)
    cutoff_a: float = Field(gt=0)
    trainable: list[LJParameter] = Field(min_length=1)

    @field_validator("trainable")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"each parameter at most once, got {v}")
        return v


class MLIPPotentialConfig(StrictModel):
    """The built-in committee MLIP in ``model_dir`` (trained by ``alflow.mlip``), every
    weight trainable; the anchor term ``label_weight`` × (the members' training loss on the
    labelled configurations in ``labels``, an ASE-readable file with energies and forces)
    keeps it close to its reference labels. Paths are relative to the YAML file."""

    kind: Literal["mlip"]
    model_dir: Path
    labels: Path
    label_weight: float = Field(1.0, ge=0)


class RefineMDConfig(StrictModel):
    """MD settings: NVT Langevin equilibration and sampling, NVE production segments.

    ``segment_steps`` NVE steps per replica from equilibrated starts give the time
    correlations (self-diffusion); the gradient goes through the last ``gradient_steps`` of
    each segment (gradient truncation), by the adjoint (reversible velocity Verlet, memory
    independent of the length) or by direct back-propagation.
    """

    dt_fs: float = Field(gt=0, le=50)
    friction_per_fs: float = Field(0.01, gt=0, description="NVT Langevin friction")
    replicas: int = Field(8, ge=2, description="independent replicas (error bars)")
    equilibration_steps: int = Field(2000, ge=0, description="NVT from the lattice start")
    reequilibration_steps: int = Field(200, ge=0, description="NVT after a parameter change")
    sample_steps: int = Field(2000, ge=1, description="NVT sampling for static averages")
    sample_every: int = Field(20, ge=1)
    segment_steps: int = Field(400, ge=2, description="NVE steps per production segment")
    record_every: int = Field(5, ge=1, description="NVE frames for MSD and VACF")
    gradient_steps: int = Field(100, ge=1, description="truncation length K")
    gradient: Literal["adjoint", "direct"] = "adjoint"
    skin_a: float = Field(1.0, ge=0, description="Verlet-list skin")
    seed: int = 0

    @model_validator(mode="after")
    def _fits(self) -> RefineMDConfig:
        if self.gradient_steps > self.segment_steps:
            raise ValueError(f"gradient_steps ({self.gradient_steps}) must not exceed "
                             f"segment_steps ({self.segment_steps})")
        if self.segment_steps // self.record_every < 4:
            raise ValueError("segment_steps / record_every must give at least 4 frames")
        return self


class FileTarget(StrictModel):
    """A tabulated target (CSV with a header line); ``file`` is relative to the YAML file."""

    file: Path
    weight: float = Field(1.0, gt=0)


class RdfTarget(FileTarget):
    """g(r) of all pairs, columns ``r_angstrom,g``; ``width_a`` is the Gaussian smoothing of
    the computed histogram (Å)."""

    width_a: float = Field(0.05, gt=0)


class VdosTarget(FileTarget):
    """Vibrational density of states, columns ``frequency_thz,vdos`` (normalised here to unit
    area over the file's range)."""


class TargetsConfig(StrictModel):
    """What MD should reproduce; at least one target."""

    rdf: RdfTarget | None = None
    diffusion_coefficient_A2_per_ps: float | None = Field(None, gt=0)
    diffusion_weight: float = Field(1.0, gt=0)
    vdos: VdosTarget | None = None
    potential_energy_ev_per_atom: float | None = Field(
        None, description="NVT mean potential energy per atom, eV (the configurational "
        "energy: minus the heat of vaporisation plus kT for an ideal vapour)")
    potential_energy_weight: float = Field(1.0, gt=0)

    @model_validator(mode="after")
    def _some(self) -> TargetsConfig:
        if self.rdf is None and self.diffusion_coefficient_A2_per_ps is None \
                and self.vdos is None and self.potential_energy_ev_per_atom is None:
            raise ValueError("give at least one target: rdf, "
                             "diffusion_coefficient_A2_per_ps, vdos or "
                             "potential_energy_ev_per_atom")
        if self.potential_energy_ev_per_atom == 0:
            raise ValueError("potential_energy_ev_per_atom must not be 0 (its loss is "
                             "relative to it)")
        return self

    @property
    def dynamical(self) -> bool:
        """Whether a target needs NVE trajectories (gradients through the dynamics)."""
        return self.diffusion_coefficient_A2_per_ps is not None or self.vdos is not None


class OptimiserConfig(StrictModel):
    """The optimiser, on the logarithms of the trainable parameters (they stay positive):
    Adam on the loss's gradient, or Gauss–Newton (Levenberg–Marquardt) on the residuals'
    Jacobian, which follows the narrow ε–σ valley of g(r) in a few iterations."""

    method: Literal["adam", "gauss-newton"] = "adam"
    iterations: int = Field(40, ge=1)
    max_step: float = Field(0.05, gt=0, description="Gauss–Newton: largest change of a "
                            "log-parameter per iteration")
    learning_rate: float = Field(0.03, gt=0, description="first step in log(parameter)")
    final_learning_rate: float = Field(0.003, gt=0, description="the step at the last "
                                       "iteration (exponential decay from learning_rate)")
    beta1: float = Field(0.5, ge=0, lt=1, description="Adam's momentum (first-moment decay)")
    average_last: int = Field(0, ge=0, description="fitted parameters: the geometric mean "
                              "of the last this many iterates (0: the last iterate); their "
                              "spread is reported")
    min_ess_fraction: float = Field(0.5, gt=0, le=1, description="resimulate when the "
                                    "reweighting's effective sample size falls below this "
                                    "fraction of the samples")


class RefineConfig(StrictModel):
    """The whole ``alflow refine`` YAML."""

    system: SystemConfig
    potential: LJPotentialConfig | MLIPPotentialConfig = Field(discriminator="kind")
    md: RefineMDConfig
    targets: TargetsConfig
    optimiser: OptimiserConfig = OptimiserConfig()

    @model_validator(mode="after")
    def _cutoff(self) -> RefineConfig:
        if self.optimiser.average_last > self.optimiser.iterations:
            raise ValueError(f"optimiser.average_last ({self.optimiser.average_last}) exceeds "
                             f"optimiser.iterations ({self.optimiser.iterations})")
        if self.optimiser.method == "gauss-newton" and self.targets.vdos is not None:
            raise ValueError("optimiser.method gauss-newton fits rdf, "
                             "potential_energy_ev_per_atom and "
                             "diffusion_coefficient_A2_per_ps; use adam with a vdos target")
        half = self.system.box_a / 2
        if self.potential.kind == "mlip":
            if self.optimiser.method == "gauss-newton" or self.optimiser.average_last:
                raise ValueError("potential.kind mlip: use optimiser.method adam without "
                                 "average_last (the weights are many; see docs/refine.md)")
        elif self.potential.cutoff_a > half:
            raise ValueError(f"potential.cutoff_a ({self.potential.cutoff_a} Å) exceeds half "
                             f"the box ({half:.3f} Å for {self.system.n_atoms} atoms at this "
                             "density): use more atoms or a smaller cutoff")
        return self


def load_config(path: str | Path) -> RefineConfig:
    """Read and validate ``path``; target files become absolute paths relative to it and must
    exist. Raises ConfigError naming the file and field."""
    path = Path(path)
    cfg = load_yaml_model(RefineConfig, path)
    base = path.resolve().parent
    if cfg.potential.kind == "mlip":
        from alflow.refine.mlip import check_model_dir

        pot = cfg.potential
        pot.model_dir = (base / pot.model_dir).resolve()
        pot.labels = (base / pot.labels).resolve()
        check_model_dir(pot.model_dir, cfg.system.box_a / 2, f"{path}: potential.model_dir")
        if not pot.labels.is_file():
            raise ConfigError(f"{path}: potential.labels: no such file {pot.labels}")
    for name in ("rdf", "vdos"):
        target = getattr(cfg.targets, name)
        if target is None:
            continue
        target.file = (base / target.file).resolve()
        if not target.file.is_file():
            raise ConfigError(f"{path}: targets.{name}.file: no such file {target.file}")
    return cfg
