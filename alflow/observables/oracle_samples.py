"""The correction of a state's free energy to the oracle (DFT, or a test system's reference
potential) at temperatures other than the campaign's, from the oracle-labelled Boltzmann
samples of the campaign.

The campaign labels ``estimate.reweight_samples`` configurations x_i per state, drawn from the
model's Boltzmann distribution at the campaign temperature T (flow samples resampled by their
importance weights; alflow.campaign.steps.flows). At T' they are reweighted from T to T' and the
exponential average is taken at T' (β = 1/kT, β' = 1/kT', U the model energy, E the oracle's):

    F_oracle(T') − F_model(T') = −kT' ln [ Σ_i w_i exp(−β'(E_i − U_i)) / Σ_i w_i ],
    w_i = exp(−(β' − β) U_i)

(eV). At T' = T the weights are uniform and this is the campaign's own correction
(alflow.estimate.reweight, exactly). The effective sample size is the Kish ESS of the combined
weights w_i exp(−β'(E_i − U_i)); it falls away from T (the samples stop covering the T'
ensemble) and with a poor model (a few samples dominate the exponential average).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.units import kB

from alflow.errors import InputError
from alflow.estimate import OverlapWarning, Reweighting, reweight
from alflow.runlayout import RunLayout

MIN_ESS_ORACLE = 10.0  # labelled samples: alflow.estimate.reweight's reliability threshold


@dataclass
class LabelledSamples:
    """Oracle-labelled Boltzmann samples of one state on the model at ``temperature_k`` (K):
    ``model_ev`` (m,) and ``oracle_ev`` (m,) eV, the model's and the oracle's energy of the
    same configurations."""

    state: str
    model_ev: np.ndarray
    oracle_ev: np.ndarray
    temperature_k: float

    def __post_init__(self) -> None:
        self.model_ev = np.asarray(self.model_ev, float).reshape(-1)
        self.oracle_ev = np.asarray(self.oracle_ev, float).reshape(-1)
        if len(self.model_ev) != len(self.oracle_ev):
            raise InputError(f"labelled samples of {self.state!r}: {len(self.model_ev)} model "
                             f"and {len(self.oracle_ev)} oracle energies")
        if self.temperature_k <= 0:
            raise InputError(f"labelled samples of {self.state!r}: temperature "
                             f"{self.temperature_k} K must be positive")

    def correction(self, temperature_k: float, n_bootstrap: int = 200, seed: int = 0,
                   min_ess: float = MIN_ESS_ORACLE) -> Reweighting:
        """F_oracle − F_model (eV) of the state at ``temperature_k`` K (module doc), with its
        bootstrap error, the ESS of the combined weights and ``reliable`` (ESS ≥ min_ess)."""
        if temperature_k <= 0:
            raise InputError(f"temperature {temperature_k} K: must be positive")
        if len(self.model_ev) < 2:
            raise InputError(f"labelled samples of {self.state!r}: need at least 2, have "
                             f"{len(self.model_ev)}")
        u = self.model_ev - self.model_ev.mean()  # the weights are shift-invariant
        log_w = -(1.0 / (kB * temperature_k) - 1.0 / (kB * self.temperature_k)) * u
        with warnings.catch_warnings():  # poor overlap is reported by the caller
            warnings.simplefilter("ignore", OverlapWarning)
            return reweight(self.model_ev, self.oracle_ev, temperature_k, log_w=log_w,
                            n_bootstrap=n_bootstrap, min_ess=min_ess, seed=seed)


def _flow_checkpoints(run: RunLayout, generation: int) -> dict[str, Path]:
    """State -> the arrays of the newest flows-step result of ``generation``."""
    found: dict[str, tuple[float, Path]] = {}
    for r in run.step_results("flows"):
        if r.generation != generation or r.arrays is None or r.state is None:
            continue
        t = r.path.stat().st_mtime
        if r.state not in found or t > found[r.state][0]:
            found[r.state] = (t, r.arrays)
    return {s: p for s, (_, p) in found.items()}


def campaign_labelled(run_dir: str | Path, cfg: Any, generation: int) -> dict[str, LabelledSamples]:
    """The oracle-labelled Boltzmann samples of each state of ``generation`` in a run directory
    (``cfg``: its CampaignConfig): positions and model energies from the flows step's checkpoint
    (``results/flows-*.npz``: ``reweight_positions``, ``reweight_model_energy``), oracle energies
    from ``dataset.h5`` by label key, as the campaign's correction uses them (duplicates kept).
    States with fewer than 2 ok labels are left out; an empty dict when nothing is there."""
    from alflow.dataset import LabelStore
    from alflow.labelling import make_labeller

    run = RunLayout(run_dir)
    n = cfg.estimate.reweight_samples
    if n == 0 or not run.results.is_dir() or not run.dataset.exists():
        return {}
    store = LabelStore(run.dataset, create=False)
    keys = store.keys()
    if not keys:
        return {}
    numbers = store.get(keys[0]).numbers
    keyer = make_labeller(cfg.oracle.labeller_config())
    out = {}
    for state, npz in sorted(_flow_checkpoints(run, generation).items()):
        try:
            with np.load(npz, allow_pickle=False) as z:
                x = z["reweight_positions"][:n]
                u = z["reweight_model_energy"][:n]
        except (OSError, KeyError, ValueError) as err:
            raise InputError(f"cannot read the labelled samples of {state!r} in {npz}: "
                             f"{err}") from None
        ks = [keyer.key(Atoms(numbers=numbers, positions=np.asarray(xi, float))) for xi in x]
        recs = store.get_many(set(ks))
        ok = [i for i, k in enumerate(ks) if k in recs and recs[k].status == "ok"]
        if len(ok) >= 2:
            out[state] = LabelledSamples(state, u[ok], [recs[ks[i]].energy for i in ok],
                                         float(cfg.temperature_k))
    return out


__all__ = ["MIN_ESS_ORACLE", "LabelledSamples", "campaign_labelled"]
