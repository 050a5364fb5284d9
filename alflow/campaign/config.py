"""The campaign configuration: one validated YAML file describes a whole campaign.

Paths in the YAML (structure files, references) are relative to the YAML file; the resolved
configuration written into the run directory holds absolute paths. Every cross-field rule is
checked by :func:`load_campaign` before any work starts, with a message naming the field:
a missing or unknown state, an executor label the site does not have, sampler temperatures
that contradict ``temperature_k``, an unreadable structure file, mixed compositions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from alflow.config import StrictModel, read_yaml, validate_model
from alflow.errors import ConfigError, InputError
from alflow.labelling import LabellerConfig, parse_method
from alflow.select import SelectionConfig

KB_EV = 8.617333262e-5  # Boltzmann constant, eV/K
STEPS = ("explore", "label", "train", "flows", "estimate")


class StateDefinition(StrictModel):
    """How a configuration is assigned to a state.

    ``basin``: it belongs to the state whose reference minimum a local minimisation (quench,
    on the current potential) reaches; ``cv``: a collective variable lies in [low, high);
    ``minimum_cv``: the CV of the minimum its quench reaches lies in [low, high) (a state of
    many minima, e.g. every planar isomer).
    """

    kind: Literal["basin", "cv", "minimum_cv"] = "basin"
    reference: str | None = Field(
        None, description="basin: file of the minimum (default: the state's first structure)")
    match_tolerance: float = Field(0.05, gt=0, description="basin: Å RMS of sorted pair "
                                                          "distances to count as this minimum")
    cv: dict[str, Any] | None = Field(
        None, description="cv: an alflow.sampling.cvs config, e.g. {kind: gyration}")
    low: float | None = None
    high: float | None = None

    @model_validator(mode="after")
    def _kind(self) -> StateDefinition:
        if self.kind != "basin" and (self.cv is None or self.low is None or self.high is None):
            raise ValueError(f"a {self.kind!r} state needs cv, low and high")
        if self.kind != "basin" and self.high <= self.low:  # type: ignore[operator]
            raise ValueError(f"high ({self.high}) must exceed low ({self.low})")
        return self


class StateConfig(StrictModel):
    """One metastable state: its starting structures and its definition."""

    structures: list[str] = Field(..., min_length=1, description="structure files (any ASE "
                                                                  "format), relative to the YAML")
    definition: StateDefinition = Field(default_factory=StateDefinition)

    @field_validator("structures", mode="before")
    @classmethod
    def _one(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v


class DeltaF(StrictModel):
    """ΔF = F(to) − F(from)."""

    from_: str = Field(..., alias="from")
    to: str

    model_config = StrictModel.model_config | {"populate_by_name": True}


class SystemConfig(StrictModel):
    states: dict[str, StateConfig] = Field(..., min_length=1)
    delta_f: DeltaF
    wall_radius: float | None = Field(
        None, gt=0, description="Å: configurations with an atom farther than this from the "
                                "centre of mass are rejected (hard wall); None: no wall")
    masses: dict[str, float] | None = Field(None, description="amu per element (default ASE's)")


class OracleConfig(StrictModel):
    """The labelling method: a shorthand (``ase:lj``, ``ase:emt``, ``pyscf:pbe/def2-svp``)
    plus any LabellerConfig field (``ase_kwargs``, ``min_distance``, ``threads``...)."""

    method: str = "pyscf:pbe/def2-svp"
    options: dict[str, Any] = Field(default_factory=dict, description="LabellerConfig fields")

    def labeller_config(self) -> LabellerConfig:
        return parse_method(self.method, **self.options)


# fields of MLIPConfig that fix the architecture: the expensive stage keeps the pretrained one
ARCHITECTURE_FIELDS = ("backend", "cutoff", "builtin", "mace", "dtype", "committee_size")


class PretrainConfig(StrictModel):
    """Multi-fidelity: a cheap oracle labels the first ``generations`` generations (many
    labels); the committee trained on them is then trained on few labels of the campaign's
    ``oracle`` (the expensive one, which decides the answer), by ``mode``: ``transfer``
    fine-tunes the pretrained weights, ``delta`` adds a committee of the difference
    (expensive − cheap) to the cheap committee (alflow.campaign.fidelity)."""

    method: str = Field(..., description="the cheap oracle's shorthand (e.g. xtb:gfn1)")
    options: dict[str, Any] = Field(default_factory=dict, description="LabellerConfig fields")
    generations: int = Field(2, ge=1, description="generations labelled by the cheap oracle")
    budget: int | None = Field(None, ge=1, description="labels selected per cheap generation "
                                                       "(default: selection.budget)")
    mode: Literal["transfer", "delta"] = "transfer"
    finetune: dict[str, Any] = Field(default_factory=dict, description="MLIPConfig fields "
                                     "for the expensive stage's training (e.g. lr, epochs)")

    def labeller_config(self) -> LabellerConfig:
        return parse_method(self.method, **self.options)

    @field_validator("finetune")
    @classmethod
    def _finetune(cls, v: dict[str, Any]) -> dict[str, Any]:
        fixed = sorted(set(v) & set(ARCHITECTURE_FIELDS))
        if fixed:
            raise ValueError(f"{fixed[0]}: the expensive stage keeps the pretrained "
                             "architecture; set it in mlip instead")
        return v


class BootstrapConfig(StrictModel):
    """Generation 0: labels around the user's structures."""

    displaced: int = Field(8, ge=0, description="random displacements per structure")
    displacement: float = Field(0.1, gt=0, description="Å, Gaussian sigma per coordinate")


class MDConfig(StrictModel):
    """Exploration MD on the committee (Langevin, alflow.sampling.langevin)."""

    enabled: bool = True
    replicas: int = Field(8, ge=1, description="replicas per state")
    steps: int = Field(2000, ge=1)
    dt_fs: float = Field(5.0, gt=0)
    friction_per_fs: float = Field(0.01, gt=0)
    record_every: int = Field(20, ge=1)
    temperature_k: float | None = Field(None, gt=0, description="K; None: the campaign's. "
                                        "May exceed it (hotter exploration), never undercut it")
    stop_at_trust_upper: bool = Field(True, description="stop a replica whose force deviation "
                                                        "exceeds selection.trust_upper")
    options: dict[str, Any] = Field(default_factory=dict, description="more run_langevin args")


class MetadConfig(StrictModel):
    """Well-tempered metadynamics along a CV during exploration (alflow.sampling.metad)."""

    enabled: bool = False
    options: dict[str, Any] = Field(default_factory=dict)


class SamplerConfig(StrictModel):
    """Flows and adaptive MCMC per state (alflow.flows, alflow.sampling.mcmc)."""

    enabled: bool = True
    temperature_k: float | None = Field(None, gt=0, description="must equal the campaign's")
    md_replicas: int = Field(16, ge=1, description="MD replicas giving the flow's samples")
    md_steps: int = Field(4000, ge=10, description="MD steps (dt and friction: exploration.md)")
    md_record_every: int = Field(20, ge=1)
    samples: int = Field(4000, ge=100, description="flow samples per state for the estimate")
    explore_samples: int = Field(200, ge=0, description="flow samples per state added to the "
                                                        "next generation's candidates")
    flow: dict[str, Any] = Field(default_factory=dict, description="alflow.flows config")
    train: dict[str, Any] = Field(default_factory=dict, description="flow training options")
    mcmc: dict[str, Any] = Field(default_factory=dict, description="adaptive_mcmc options")
    polish_steps: int = Field(0, ge=0, description="final mixed forward/reverse-KL training "
                              "steps on the committee (alflow.flows.pipeline)")
    filter_seeds: bool = Field(True, description="train only on MD seeds inside the state")
    anneal: dict[str, Any] = Field(default_factory=dict, description="annealed importance "
                                   "sampling of the estimate (alflow.flows.anneal.AnnealConfig:"
                                   " levels, mala_steps, step_size, confine)")

    @field_validator("anneal")
    @classmethod
    def _anneal(cls, v: dict[str, Any]) -> dict[str, Any]:
        from alflow.flows.anneal import AnnealConfig

        return AnnealConfig(**v).model_dump(exclude_unset=True) if v else v


class ExplorationConfig(StrictModel):
    bootstrap: BootstrapConfig = Field(default_factory=BootstrapConfig)
    md: MDConfig = Field(default_factory=MDConfig)
    metad: MetadConfig = Field(default_factory=MetadConfig)
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)


class EstimateConfig(StrictModel):
    reweight_samples: int = Field(16, ge=0, description="Boltzmann samples per state labelled "
                                                        "by the oracle to correct ΔF to it")
    bootstrap: int = Field(200, ge=10, description="bootstrap resamples for error bars")


class ConvergenceConfig(StrictModel):
    """Stop when ΔF (corrected to the oracle when measured) moved by less than ``tolerance``
    for ``generations`` generations in a row, its error bar is below ``max_error``, the oracle
    correction lies within its error bar and R-hat < ``rhat``; or at ``max_generations`` /
    ``max_labels``."""

    tolerance_kt: float = Field(0.1, gt=0, description="kT units")
    max_error_kt: float = Field(0.1, gt=0, description="kT units")
    generations: int = Field(2, ge=1, description="consecutive generations within tolerance")
    rhat: float = Field(1.01, gt=1.0)
    max_generations: int = Field(10, ge=1)
    max_labels: int = Field(2000, ge=1)
    max_move_sigma: float | None = Field(3.0, gt=0, description="ΔF may move by at most this "
                                         "many combined standard errors between generations "
                                         "(error bars that hold); null: no check")
    max_correction_bias: float | None = Field(0.25, gt=0, description="a state's estimated "
                                              "finite-sample correction bias may reach this "
                                              "fraction of its error, and its labels must "
                                              "overlap (reliable); null: no check of either")


class CampaignConfig(StrictModel):
    """A whole campaign (see docs/campaign.md for every field)."""

    name: str = "campaign"
    temperature_k: float = Field(..., gt=0, description="K")
    seed: int = 0
    system: SystemConfig
    oracle: OracleConfig = Field(default_factory=OracleConfig)
    pretrain: PretrainConfig | None = Field(None, description="a cheap oracle's stage first "
                                            "(multi-fidelity); None: one oracle")
    mlip: dict[str, Any] = Field(default_factory=dict, description="alflow.mlip MLIPConfig")
    exploration: ExplorationConfig = Field(default_factory=ExplorationConfig)
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    estimate: EstimateConfig = Field(default_factory=EstimateConfig)
    convergence: ConvergenceConfig = Field(default_factory=ConvergenceConfig)
    retries: int = Field(1, ge=0, description="extra attempts of a failed task / label")
    site: str = Field("local-threads", description="site name or YAML path")
    executors: dict[str, str] = Field(
        default_factory=lambda: {"explore": "gpu", "label": "dft", "train": "gpu",
                                 "flows": "gpu", "estimate": "cpu"},
        description="executor label per step")

    @property
    def kt_ev(self) -> float:
        return KB_EV * self.temperature_k

    @model_validator(mode="after")
    def _cross(self) -> CampaignConfig:
        states = self.system.states
        for end, name in (("from", self.system.delta_f.from_), ("to", self.system.delta_f.to)):
            if name not in states:
                raise ValueError(f"system.delta_f.{end}: state {name!r} is not defined in "
                                 f"system.states ({', '.join(states)})")
        if self.system.delta_f.from_ == self.system.delta_f.to:
            raise ValueError("system.delta_f: 'from' and 'to' must be different states")
        s = self.exploration.sampler
        if s.temperature_k is not None and abs(s.temperature_k - self.temperature_k) > 1e-9:
            raise ValueError(f"exploration.sampler.temperature_k ({s.temperature_k} K) differs "
                             f"from temperature_k ({self.temperature_k} K): flows and MCMC "
                             "sample the campaign temperature")
        md = self.exploration.md
        if md.temperature_k is not None and md.temperature_k < self.temperature_k:
            raise ValueError(f"exploration.md.temperature_k ({md.temperature_k} K) is below "
                             f"temperature_k ({self.temperature_k} K): exploration must reach "
                             "at least the campaign temperature")
        unknown = sorted(set(self.executors) - set(STEPS))
        if unknown:
            raise ValueError(f"executors: unknown step(s) {unknown}; steps are {list(STEPS)}")
        return self


def _resolve(base: Path, p: str) -> str:
    path = Path(p).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


def check_executors(cfg: CampaignConfig, labels: set[str]) -> None:
    """ConfigError if a step names an executor label the site lacks."""
    for step, label in cfg.executors.items():
        if label not in labels:
            raise ConfigError(f"executors.{step}: executor label {label!r} is not defined by "
                              f"site {cfg.site!r} (it has {', '.join(sorted(labels))})")


def site_labels(site: str) -> set[str]:
    """Executor labels of a site (built-in name or YAML), without starting anything."""
    from alflow.campaign.sites import RESOURCE_CLASSES, load_site_model

    model = load_site_model(site)
    classes = getattr(model, "classes", None)
    return set(classes) | set(RESOURCE_CLASSES) if classes is not None else set(RESOURCE_CLASSES)


def resolve_campaign(cfg: CampaignConfig, base: Path) -> CampaignConfig:
    """Absolute structure paths; every structure readable, one composition; labeller valid."""
    from alflow.labelling.validate import validate_method
    from alflow.structures import read_structures

    cfg = cfg.model_copy(deep=True)
    numbers = sample = None
    for name, st in cfg.system.states.items():
        st.structures = [_resolve(base, p) for p in st.structures]
        if st.definition.reference is not None:
            st.definition.reference = _resolve(base, st.definition.reference)
        files = list(st.structures) + ([st.definition.reference]
                                       if st.definition.reference else [])
        for i, path in enumerate(files):
            field = (f"system.states.{name}.structures[{i}]" if i < len(st.structures)
                     else f"system.states.{name}.definition.reference")
            try:
                images = read_structures(path)
            except InputError as err:
                raise ConfigError(f"{field}: {err}") from None
            for atoms in images:
                nums = tuple(atoms.numbers.tolist())
                if numbers is None:
                    numbers, sample = nums, atoms
                elif nums != numbers:
                    raise ConfigError(f"{field}: composition {atoms.get_chemical_formula()} "
                                      "differs from the other states' structures (one system "
                                      "per campaign, same atom order)")
    try:  # method, functional, basis, ECP and options against the system, before any work
        validate_method(cfg.oracle.labeller_config(), [sample] if numbers else [])
    except ConfigError as err:
        raise ConfigError(f"oracle: {err}") from None
    if cfg.pretrain is not None:
        _resolve_pretrain(cfg, [sample] if numbers else [])
    if cfg.mlip:
        _validate_optional("alflow.mlip", "MLIPConfig", cfg.mlip, "mlip")
    return cfg


def _resolve_pretrain(cfg: CampaignConfig, sample: list) -> None:
    """The cheap oracle valid for the system and distinct from the expensive one (labels are
    told apart by method name); the fine-tuning settings valid MLIPConfig fields."""
    from alflow.labelling.validate import validate_method

    pre = cfg.pretrain
    assert pre is not None
    try:
        lcfg = pre.labeller_config()
        validate_method(lcfg, sample)
    except ConfigError as err:
        raise ConfigError(f"pretrain: {err}") from None
    if lcfg.name == cfg.oracle.labeller_config().name:
        raise ConfigError(f"pretrain.method: the cheap oracle {lcfg.name!r} has the name of "
                          "oracle.method; the two oracles' labels are kept apart by method "
                          "name, so they must be different methods")
    if pre.finetune:
        _validate_optional("alflow.mlip", "MLIPConfig", {**cfg.mlip, **pre.finetune},
                           "pretrain.finetune")


def _validate_optional(module: str, model: str, data: dict, field: str) -> None:
    import importlib

    try:
        cls = getattr(importlib.import_module(module), model)
    except (ImportError, AttributeError):
        return
    validate_model(cls, data, source=f"campaign field {field}")


def load_campaign(path: str | Path, site: str | None = None) -> CampaignConfig:
    """Read, validate and resolve a campaign YAML (ConfigError naming the field if wrong)."""
    path = Path(path)
    cfg = validate_model(CampaignConfig, read_yaml(path), source=str(path))
    if site is not None:
        cfg.site = site
    cfg = resolve_campaign(cfg, path.resolve().parent)
    check_executors(cfg, site_labels(cfg.site))
    return cfg
