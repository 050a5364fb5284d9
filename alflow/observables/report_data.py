"""The typed data behind a campaign report: what the figures and tables show.

A loader (:mod:`alflow.campaign.report_loader`) builds :class:`ReportData` from a run
directory; figures (:mod:`alflow.observables.report`) are pure functions of it, so tests build
it by hand. Every section is optional: an empty list / None renders as "not computed".
Energies in eV, forces in eV/Å, temperatures in K, CVs in their own units. Fields named
``dft_*`` hold values from the campaign's oracle (``ReportData.oracle``: DFT, or the reference
potential of a test system such as lj7's Lennard-Jones), whatever it is.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from alflow.observables.spectra import KB_EV_PER_K, AveragedSpectrum

LOW_ESS_FRACTION = 0.01  # below: a few samples dominate the flows' importance weights


class DeltaFPoint(BaseModel):
    """ΔF = F(state) − F(reference) after one generation: on the committee MLIP (the flows'
    estimate), the correction to the oracle and the corrected value (``dft_*``)."""

    generation: int
    state: str
    reference: str
    delta_f_ev: float | None = None
    error_ev: float | None = None
    dft_delta_f_ev: float | None = None
    dft_error_ev: float | None = None
    correction_ev: float | None = None  # corrected − committee value
    correction_error_ev: float | None = None
    method: str = ""  # e.g. "IS", "BAR"
    ess: dict[str, float] = {}  # effective sample sizes per state
    ess_fraction: dict[str, float] = {}  # the same as a fraction of the flow samples
    rhat: float | None = None  # max over states of the sampler's R-hat
    overlap_warning: bool = False
    temperature_k: float | None = None
    final: bool = False  # the campaign's answer (status.json ``delta_f``)


class TemperatureDeltaF(BaseModel):
    """ΔF = F(state) − F(reference) at another temperature, reweighting the last generation's
    flow samples (alflow.observables.temperatures) on the MLIP, and (``dft_*``, where the
    campaign labelled samples with the oracle) corrected to the oracle at that temperature."""

    temperature_k: float
    state: str
    reference: str
    generation: int | None = None
    delta_f_ev: float | None = None
    error_ev: float | None = None
    ess: dict[str, float | None] = {}  # Kish ESS of each state's weights at this temperature
    poor_overlap: bool = False
    populations: dict[str, list[float | None]] = {}  # state -> [population, σ]
    dft_delta_f_ev: float | None = None
    dft_error_ev: float | None = None
    correction_ev: float | None = None  # corrected − committee (MLIP) value
    correction_error_ev: float | None = None
    dft_ess: dict[str, float | None] = {}  # Kish ESS of each state's labelled samples at T'
    dft_poor_overlap: bool | None = None  # None: no oracle labels
    dft_populations: dict[str, list[float | None]] = {}


class LabelCounts(BaseModel):
    """Oracle labels of one generation: ``selected`` configurations picked for labelling
    (generation 0: the bootstrap structures), ``labelled`` records stored ok (of which
    ``correction``: Boltzmann samples of the committee labelled for the correction of ΔF to
    the oracle, ``estimate.reweight_samples`` per state), ``failed`` records."""

    generation: int
    selected: int = 0
    labelled: int = 0
    correction: int = 0
    failed: int = 0


class Parity(BaseModel):
    """Committee vs oracle (``*_dft``) on the labels of one state (flattened force
    components)."""

    state: str
    generation: int | None = None
    energy_dft_ev: list[float] = []
    energy_model_ev: list[float] = []
    n_atoms: int = 1
    force_dft: list[float] = []
    force_model: list[float] = []

    def errors(self) -> dict[str, float]:
        """MAE and RMSE of energies per atom (meV/atom) and force components (meV/Å)."""
        out: dict[str, float] = {}
        if self.energy_dft_ev:
            de = (np.subtract(self.energy_model_ev, self.energy_dft_ev)) / self.n_atoms * 1e3
            out["energy_mae_mev_per_atom"] = float(np.mean(np.abs(de)))
            out["energy_rmse_mev_per_atom"] = float(np.sqrt(np.mean(de**2)))
        if self.force_dft:
            df = np.subtract(self.force_model, self.force_dft) * 1e3
            out["force_mae_mev_per_a"] = float(np.mean(np.abs(df)))
            out["force_rmse_mev_per_a"] = float(np.sqrt(np.mean(df**2)))
        return out


class FreeEnergySurface(BaseModel):
    """F along one or two CVs (from metadynamics bias), in eV, minimum shifted to 0."""

    label: str = ""
    cv_names: list[str]
    axes: list[list[float]]  # one grid per CV
    free_energy_ev: list[Any]  # 1-D list, or 2-D nested list indexed [i_cv0][i_cv1]
    temperature_k: float | None = None


class FlowDiagnostics(BaseModel):
    """Sampler health of one state after one generation."""

    generation: int
    state: str
    ess: float | None = None  # effective sample size (importance weights of flow samples)
    ess_fraction: float | None = None
    pareto_k: float | None = None  # Pareto k̂ of those weights (> 0.7: unreliable estimate)
    acceptance: float | None = None  # flow (IMH) acceptance rate
    rhat: float | None = None  # rank-normalised R-hat (max over observables)


class StateSpectrum(BaseModel):
    state: str
    method: str = ""
    spectrum: AveragedSpectrum


class ResourceUsage(BaseModel):
    resource_class: str
    tasks: int = 0
    wall_hours: float = 0.0
    core_hours: float = 0.0


class Provenance(BaseModel):
    run_dir: str = ""
    created: str = ""
    alflow_version: str = ""
    versions: dict[str, str] = {}
    dft_method: str = ""
    config: dict[str, Any] = {}
    resources: list[ResourceUsage] = []
    site: str = ""


class ReportData(BaseModel):
    """Everything a report shows."""

    title: str = "alflow campaign"
    system: str = ""
    oracle: str = ""  # the campaign's oracle method, e.g. "ase:lj", "pyscf:pbe/def2-svp"
    temperature_k: float | None = None
    states: list[str] = []
    status: str = ""
    generations: int = 0
    delta_f: list[DeltaFPoint] = []
    delta_f_temperature: list[TemperatureDeltaF] = []
    labels: list[LabelCounts] = []
    parity: list[Parity] = []
    fes: list[FreeEnergySurface] = []
    flow: list[FlowDiagnostics] = []
    spectra: list[StateSpectrum] = []
    provenance: Provenance | None = None
    warnings: list[str] = Field(default_factory=list)


def populations(delta_f: dict[str, tuple[float, float]], temperature_k: float,
                n_draws: int = 4000, seed: int = 0) -> dict[str, tuple[float, float]]:
    """Equilibrium populations ``p_i ∝ exp(−ΔF_i / kT)`` with errors propagated by drawing
    ΔF_i ~ N(value, error²) (reference state: ΔF = 0, no error).

    ``delta_f``: state -> (ΔF eV, σ eV). Returns state -> (population, σ)."""
    names = list(delta_f)
    mean = np.array([delta_f[s][0] for s in names], float)
    err = np.array([delta_f[s][1] or 0.0 for s in names], float)
    beta = 1.0 / (KB_EV_PER_K * temperature_k)
    rng = np.random.default_rng(seed)
    draws = mean + err * rng.standard_normal((n_draws, len(names)))
    logp = -beta * draws
    p = np.exp(logp - logp.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    p0 = np.exp(-beta * (mean - mean.min()))
    p0 /= p0.sum()
    return {s: (float(p0[i]), float(p[:, i].std())) for i, s in enumerate(names)}


def final_delta_f(data: ReportData) -> dict[str, DeltaFPoint]:
    """The campaign's answer per state: the point marked ``final``, else the last generation
    with a value."""
    last: dict[str, DeltaFPoint] = {}
    for p in sorted(data.delta_f, key=lambda p: (p.final, p.generation)):
        if p.final or p.delta_f_ev is not None or p.dft_delta_f_ev is not None:
            last[p.state] = p
    return last


def oracle_name(method: str) -> str:
    """A short name for the oracle of ``method``: ``pyscf:…`` → "DFT",
    ``ase:lj`` → "LJ", ``ase:emt`` → "EMT", ``ase:pkg.mod.Class`` → "Class"; "oracle" when
    unknown."""
    m = method.strip().lower()
    if not m:
        return "oracle"
    kind, _, rest = m.partition(":")
    if kind == "pyscf":
        return "DFT"
    if kind == "ase" and rest:
        short = {"lj": "LJ", "lennardjones": "LJ", "emt": "EMT"}
        return short.get(rest, method.split(":", 1)[1].split(".")[-1])
    return method
