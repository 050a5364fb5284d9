"""The configuration of a crystal-polymorph campaign (``kind: crystal``): G(T, P) of crystal
phases by Einstein-crystal TI and NPT flows over a grid of state points.

Units follow the potential: ``lj`` is reduced Lennard-Jones (temperatures T* = k_BT/ε,
pressures P* = Pσ³/ε), ``emt`` is ASE's EMT of one element (temperatures in K, pressures in
GPa). The grid is ``temperatures`` at ``pressure`` plus ``pressures`` at ``temperature``;
every (phase, state point) is one TI task and one flow task. Documented in docs/solids.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from alflow.config import StrictModel, read_yaml, validate_model
from alflow.errors import ConfigError
from alflow.solids.polymorphs import FlowSettings, Potential, TISettings

Phase = Literal["fcc", "hcp"]  # alflow.solids.crystals.STRUCTURES
EMT_METALS = ("Al", "Cu", "Ag", "Au", "Ni", "Pd", "Pt")


def is_crystal_config(data: Any) -> bool:
    """Whether a parsed campaign YAML is a crystal campaign (``kind: crystal``)."""
    return isinstance(data, dict) and data.get("kind") == "crystal"


class PotentialConfig(StrictModel):
    """``kind: lj`` (reduced units; ``cutoff`` σ, truncated and shifted) or ``kind: emt``
    (ASE's EMT of ``element``; eV, Å, K, GPa)."""

    kind: Literal["lj", "emt"]
    cutoff: float | None = Field(None, gt=1.5, description="lj: r_c in σ (default 2.5)")
    element: str | None = Field(None, description=f"emt: one of {', '.join(EMT_METALS)} "
                                                  "(default Cu)")

    @model_validator(mode="after")
    def _fields(self) -> PotentialConfig:
        if self.kind == "lj" and self.element is not None:
            raise ValueError("element applies to kind 'emt' only (lj is in reduced units)")
        if self.kind == "emt" and self.cutoff is not None:
            raise ValueError("cutoff applies to kind 'lj' only (EMT has its own cutoff)")
        if self.element is not None and self.element not in EMT_METALS:
            raise ValueError(f"element: ASE's EMT close-packed metals are "
                             f"{', '.join(EMT_METALS)} (got {self.element!r})")
        return self

    def potential(self) -> Potential:
        return Potential(self.kind, 2.5 if self.cutoff is None else self.cutoff,
                         self.element or "Cu")

    @property
    def units(self) -> dict[str, str]:
        if self.kind == "lj":
            return {"energy": "epsilon", "temperature": "T* = kT/ε",
                    "pressure": "P* = Pσ³/ε", "volume": "σ³"}
        return {"energy": "eV", "temperature": "K", "pressure": "GPa", "volume": "Å^3"}


class TIConfig(StrictModel):
    """Einstein-crystal (Frenkel–Ladd) integration per phase and state point."""

    enabled: bool = True
    steps: int = Field(600, ge=80, description="Langevin steps per λ node (half of them at "
                                               "each of the three NVT pressure points)")
    copies: int = Field(2, ge=1, description="independent replicas per λ node")
    n_lambda: int = Field(8, ge=2, description="Gauss–Legendre nodes in λ")
    equil: int = Field(400, ge=0, description="equilibration steps")

    def settings(self) -> TISettings:
        return TISettings(self.steps, self.copies, self.n_lambda, self.equil)


class FlowsConfig(StrictModel):
    """NPT flow per phase and state point (alflow.solids.flows)."""

    enabled: bool = True
    box: Literal["isotropic", "triangular"] = Field(
        "isotropic", description="the volume alone, or the full cell without rotations")
    layers: int = Field(4, ge=1)
    hidden: int = Field(32, ge=4)
    train_steps: int = Field(20, ge=0, description="reverse-KL steps (0: the harmonic start)")
    batch: int = Field(64, ge=1, description="reverse-KL samples per step")
    lr: float = Field(1e-3, gt=0)
    samples: int = Field(2000, ge=100, description="flow samples of the estimate")

    def settings(self) -> FlowSettings:
        return FlowSettings(self.box, self.layers, self.hidden, self.train_steps, self.batch,
                            self.lr, self.samples)


class CrystalCampaignConfig(StrictModel):
    """A crystal-polymorph campaign: ΔG(T) at ``pressure`` and ΔG(P) at ``temperature``,
    ΔG = G(phase) − G(``reference``) per atom, by TI and by flows."""

    kind: Literal["crystal"]
    name: str = "crystal"
    potential: PotentialConfig
    n_atoms: int = Field(..., ge=4, description="atoms per cell (fcc: 4n³; hcp: 4k)")
    phases: list[Phase] = Field(default_factory=lambda: ["fcc", "hcp"], min_length=2)
    reference: Phase = Field("fcc", description="ΔG = G(phase) − G(reference)")
    temperature: float = Field(..., gt=0, description="of the pressure scan (T* or K)")
    pressure: float = Field(0.0, description="of the temperature scan (P* or GPa)")
    temperatures: list[float] = Field(..., min_length=1, description="T* or K, each > 0")
    pressures: list[float] = Field(..., min_length=1, description="P* or GPa")
    ti: TIConfig = Field(default_factory=TIConfig)
    flows: FlowsConfig = Field(default_factory=FlowsConfig)
    seed: int = 0
    retries: int = Field(1, ge=0, description="extra attempts of a failed task")
    site: str = Field("local-threads", description="site name or YAML path")
    executor: Literal["cpu", "gpu", "dft"] = Field("cpu", description="resource class")

    @model_validator(mode="after")
    def _cross(self) -> CrystalCampaignConfig:
        if len(set(self.phases)) != len(self.phases):
            raise ValueError(f"phases: each phase once (got {self.phases})")
        if self.reference not in self.phases:
            raise ValueError(f"reference: {self.reference!r} is not one of phases "
                             f"({', '.join(self.phases)})")
        for ph in self.phases:
            if ph == "fcc" and 4 * round((self.n_atoms / 4) ** (1 / 3)) ** 3 != self.n_atoms:
                raise ValueError(f"n_atoms: fcc needs 4n³ atoms (4, 32, 108, 256), got "
                                 f"{self.n_atoms}")
            if ph == "hcp" and self.n_atoms % 4:
                raise ValueError(f"n_atoms: hcp needs a multiple of 4, got {self.n_atoms}")
        if min(self.temperatures) <= 0:
            raise ValueError(f"temperatures: each must be > 0 (got {self.temperatures})")
        if not (self.ti.enabled or self.flows.enabled):
            raise ValueError("ti.enabled and flows.enabled are both false: nothing to compute")
        return self

    def state_points(self) -> list[tuple[float, float]]:
        """(temperature, pressure) of every task, the temperature scan first, each once."""
        out: list[tuple[float, float]] = []
        for tp in [(t, self.pressure) for t in self.temperatures] + \
                  [(self.temperature, p) for p in self.pressures]:
            if tp not in out:
                out.append(tp)
        return out

    def methods(self) -> list[str]:
        return [m for m, on in (("ti", self.ti.enabled), ("flow", self.flows.enabled)) if on]


def load_crystal_campaign(path: str | Path, site: str | None = None) -> CrystalCampaignConfig:
    """Read and validate a crystal campaign YAML (ConfigError naming the field if wrong);
    the site must have the ``executor`` label."""
    from alflow.campaign.config import site_labels

    path = Path(path)
    cfg = validate_model(CrystalCampaignConfig, read_yaml(path), source=str(path))
    if site is not None:
        cfg.site = site
    labels = site_labels(cfg.site)
    if cfg.executor not in labels:
        raise ConfigError(f"{path}: executor: label {cfg.executor!r} is not defined by site "
                          f"{cfg.site!r} (it has {', '.join(sorted(labels))})")
    return cfg


__all__ = ["CrystalCampaignConfig", "FlowsConfig", "PotentialConfig", "TIConfig",
           "is_crystal_config", "load_crystal_campaign"]
