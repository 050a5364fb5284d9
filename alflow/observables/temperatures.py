"""Free energies at temperatures other than the campaign's, by reweighting the flows' samples.

A flow q trained at the campaign temperature T is an importance-sampling proposal at any T':
with samples x_i ~ q kept inside the state (and the wall), the estimator of
:mod:`alflow.flows.estimate` at T' is

    F_S(T') = −kT' [ ln mean_i exp(−U(x_i)/kT' − ln q(x_i)) + ln(8π²/σ_S) ]

(eV; U eV, ln q of the flow's density in Å⁻³ᴺ; −inf weight outside the state). It is exact
in expectation for every T'; what degrades away from T is the overlap, measured by the Kish
effective sample size (ESS) of the weights at T'. A point is flagged ``poor_overlap`` when the
ESS of a state falls below ``min_ess`` (its bootstrap error bar is then not to be trusted).
These values are on the potential the flows were sampled with (the final MLIP committee).
Where the campaign labelled Boltzmann samples of each state with the oracle, each point also
carries ΔF corrected to the oracle at T': the labelled samples reweighted from T to T' and
exponentially averaged at T' (:mod:`alflow.observables.oracle_samples`), with the ESS of each
state's labelled weights; ``dft_poor_overlap`` when that ESS is below ``min_ess_oracle`` or
the flow overlap is poor.

Per-sample energies, ln q and membership (:class:`StateSamples`, npz, no pickle) are those the
campaign's flows step stored as ``flows/genNNN/STATE/is_samples.npz`` (its estimate's own
draw: F at T equals the stored ``f_ev``); :func:`alflow.campaign.flow_samples.campaign_samples`
reads them from a run directory.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ase.units import kB

from alflow.errors import InputError
from alflow.estimate import FreeEnergy, delta_f, is_free_energy, populations
from alflow.flows.coordinates import LOG_8PI2
from alflow.flows.estimate import FlowSamples
from alflow.observables.oracle_samples import MIN_ESS_ORACLE, LabelledSamples

MIN_ESS = 50.0  # default overlap threshold (effective samples per state)
_FIELDS = ("energy_ev", "log_q", "inside", "symmetry_number", "temperature_k", "state",
           "generation")


@dataclass
class StateSamples:
    """Flow samples of one state: ``energy_ev`` (n,) eV (inf where undefined), ``log_q`` (n,)
    (ln of the flow density; with annealing the effective one, −U/kT − log_w), ``inside``
    (n,) bool (in the state and the wall); σ_S the rotational symmetry number;
    ``temperature_k`` K the temperature the flow sampled; ``log_w`` (n,) the estimate's own
    log weights at that temperature, when known (then F at T' uses
    log_w − (1/kT' − 1/kT) U, bit for bit the estimate's weights at T' = T)."""

    state: str
    energy_ev: np.ndarray
    log_q: np.ndarray
    inside: np.ndarray
    symmetry_number: int
    temperature_k: float
    generation: int = -1
    log_w: np.ndarray | None = None

    @classmethod
    def from_flow_samples(cls, state: str, s: FlowSamples, symmetry_number: int,
                          temperature_k: float, generation: int = -1) -> StateSamples:
        return cls(state, np.asarray(s.energy, float), np.asarray(s.log_q, float),
                   np.asarray(s.inside, bool), int(symmetry_number), float(temperature_k),
                   generation, np.asarray(s.log_w, float))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, energy_ev=self.energy_ev, log_q=self.log_q, inside=self.inside,
                 symmetry_number=self.symmetry_number, temperature_k=self.temperature_k,
                 state=np.str_(self.state), generation=self.generation,
                 **({} if self.log_w is None else {"log_w": self.log_w}))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> StateSamples:
        try:
            with np.load(path, allow_pickle=False) as z:
                missing = [f for f in _FIELDS if f not in z.files]
                if missing:
                    raise InputError(f"{path}: missing field(s) {missing}")
                return cls(str(z["state"]), z["energy_ev"], z["log_q"], z["inside"].astype(bool),
                           int(z["symmetry_number"]), float(z["temperature_k"]),
                           int(z["generation"]), z["log_w"] if "log_w" in z.files else None)
        except (OSError, ValueError) as err:
            raise InputError(f"cannot read flow samples {path}: {err}") from None

    def free_energy(self, temperature_k: float, n_bootstrap: int = 200,
                    seed: int = 0) -> FreeEnergy:
        """F_S(T') (eV) with its bootstrap error and the ESS of the weights at T'."""
        if temperature_k <= 0:
            raise InputError(f"temperature {temperature_k} K: must be positive")
        kt = kB * temperature_k
        if self.log_w is not None:
            ok = self.inside & np.isfinite(self.energy_ev) & np.isfinite(self.log_w)
            dbeta = 1.0 / kt - 1.0 / (kB * self.temperature_k)
            lw = np.where(ok, self.log_w - dbeta * np.where(ok, self.energy_ev, 0.0), -np.inf)
        else:
            ok = self.inside & np.isfinite(self.energy_ev) & np.isfinite(self.log_q)
            lw = np.where(ok, -np.where(ok, self.energy_ev, 0.0) / kt - self.log_q, -np.inf)
        shift = float(np.max(lw)) if ok.any() else 0.0
        return is_free_energy(lw - shift, temperature_k, n_bootstrap, seed,
                              offset=shift + LOG_8PI2 - math.log(self.symmetry_number),
                              label=f"state {self.state}")


@dataclass
class TemperaturePoint:
    """ΔF = F(to) − F(from) (eV, ± 1σ) at one temperature (K), the ESS of each state at that
    temperature, the populations of all states (state -> (p, σ)) and the overlap flag; where
    oracle labels exist, the same corrected to the oracle (``dft_*``; ``correction_ev`` =
    dft − MLIP value, ``dft_ess`` the ESS of each state's labelled weights at T')."""

    temperature_k: float
    state: str
    reference: str
    delta_f_ev: float
    error_ev: float
    ess: dict[str, float]
    poor_overlap: bool
    populations: dict[str, tuple[float, float]]
    dft_delta_f_ev: float | None = None
    dft_error_ev: float | None = None
    correction_ev: float | None = None
    correction_error_ev: float | None = None
    dft_ess: dict[str, float] = field(default_factory=dict)
    dft_poor_overlap: bool | None = None
    dft_populations: dict[str, tuple[float, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = {k: _finite(v) for k, v in self.__dict__.items()}
        for k in ("ess", "dft_ess"):
            d[k] = {s: _finite(v) for s, v in getattr(self, k).items()}
        for k in ("populations", "dft_populations"):
            d[k] = {s: [_finite(x) for x in v] for s, v in getattr(self, k).items()}
        return d


def _finite(v: Any) -> Any:
    """JSON-safe: a non-finite float becomes None."""
    return None if isinstance(v, float) and not math.isfinite(v) else v


def delta_f_vs_temperature(samples: Mapping[str, StateSamples], from_: str, to: str,
                           temperatures: Sequence[float], min_ess: float = MIN_ESS,
                           n_bootstrap: int = 200, seed: int = 0,
                           labelled: Mapping[str, LabelledSamples] | None = None,
                           min_ess_oracle: float = MIN_ESS_ORACLE) -> list[TemperaturePoint]:
    """ΔF(T') = F_to(T') − F_from(T') for each T' (K) by reweighting the states' flow samples
    (module doc); ``poor_overlap`` when a state's ESS at T' is below ``min_ess``. With
    ``labelled`` samples of both states, also ΔF corrected to the oracle at T' (errors added in
    quadrature), flagged ``dft_poor_overlap`` when a labelled ESS is below ``min_ess_oracle``
    or ``poor_overlap``; oracle populations when every state has labels."""
    for s in (from_, to):
        if s not in samples:
            raise InputError(f"no flow samples for state {s!r} (have {sorted(samples)})")
    labelled = labelled or {}
    out = []
    for t in temperatures:
        fe = {s: v.free_energy(float(t), n_bootstrap, seed) for s, v in samples.items()}
        d = delta_f(fe[from_], fe[to])
        ess = {s: f.ess for s, f in fe.items()}
        finite = {s: f for s, f in fe.items() if np.isfinite(f.f_ev)}
        pops = populations(finite, seed=seed) if finite else {}
        p = TemperaturePoint(float(t), to, from_, d.value_ev, d.error_ev, ess,
                             bool(min(ess[from_], ess[to]) < min_ess
                                  or not np.isfinite(d.value_ev)), pops)
        corr = {s: v.correction(float(t), n_bootstrap, seed, min_ess_oracle)
                for s, v in labelled.items() if s in fe}
        if from_ in corr and to in corr:
            p.correction_ev = corr[to].correction_ev - corr[from_].correction_ev
            p.correction_error_ev = math.hypot(corr[to].error_ev, corr[from_].error_ev)
            p.dft_delta_f_ev = d.value_ev + p.correction_ev
            p.dft_error_ev = math.hypot(d.error_ev, p.correction_error_ev)
            p.dft_ess = {s: c.ess for s, c in corr.items()}
            p.dft_poor_overlap = bool(p.poor_overlap or not corr[from_].reliable
                                      or not corr[to].reliable
                                      or not np.isfinite(p.dft_delta_f_ev))
            dft = {s: FreeEnergy(f.f_ev + corr[s].correction_ev,
                                 math.hypot(f.err_ev, corr[s].error_ev), f.temperature_k)
                   for s, f in finite.items() if s in corr}
            if len(dft) == len(samples):
                p.dft_populations = populations(dft, seed=seed)
        out.append(p)
    return out


def default_temperatures(temperature_k: float) -> list[float]:
    """T × (0.8, 0.9, 1, 1.1, 1.25), rounded to 0.1 K."""
    return [round(temperature_k * f, 1) for f in (0.8, 0.9, 1.0, 1.1, 1.25)]


__all__ = ["MIN_ESS", "StateSamples", "TemperaturePoint", "default_temperatures",
           "delta_f_vs_temperature"]
