"""From a potential, reference minima and seed samples to per-state F and ΔF ± error.

Per state: drop seed samples outside the state (``filter_seeds``), build a
:class:`BoltzmannGenerator` on the state's reference, train it (forward KL) on the seeds (MD,
previous MCMC), optionally run adaptive MCMC with it (which retrains the flow on the seeds +
walkers), optionally retrain on seeds + walkers and polish with a forward/reverse-KL mixture
(``polish_steps``), then estimate F_S by importance sampling of fresh flow samples — annealed
toward the target when ``anneal.levels > 0`` (:mod:`alflow.flows.anneal`) — restricted to the
state (quench basin or CV region) and the wall, with a bootstrap error (and BAR against the
MCMC walkers when asked: all of them, or with ``bar_holdout`` the half the final retraining
did not see).
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field

from alflow.config import StrictModel
from alflow.errors import InputError
from alflow.estimate import DeltaF, FreeEnergy, OverlapWarning, delta_f
from alflow.flows.anneal import AnnealConfig
from alflow.flows.estimate import FlowSamples, flow_bar_free_energy, flow_free_energy
from alflow.flows.generator import BoltzmannGenerator
from alflow.flows.model import FlowConfig
from alflow.flows.train import TrainConfig, train_flow
from alflow.potential import Potential
from alflow.progress import track
from alflow.sampling.mcmc import MCMCConfig, MCMCResult, adaptive_mcmc
from alflow.seeds import flow_estimate_seed, flow_stage_seed
from alflow.states import BasinStates, CVStates, wall

log = logging.getLogger(__name__)


class StateSamplerConfig(StrictModel):
    """Everything one state's flow + MCMC + estimate needs (defaults suit lj7/Ag6)."""

    flow: FlowConfig = Field(default_factory=FlowConfig)
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(steps=600))
    mcmc: bool = Field(True, description="run adaptive MCMC after the first training")
    mcmc_config: MCMCConfig = Field(default_factory=MCMCConfig)
    walkers: int = Field(64, ge=1)
    retrain_steps: int = Field(300, ge=0, description="final training on seeds + walkers")
    polish_steps: int = Field(0, ge=0, description="then a mixture of forward KL (seeds + "
                              "walkers) and reverse KL on the potential, this many steps")
    polish_forward_weight: float = Field(0.2, ge=0, lt=1, description="forward-KL weight of "
                                         "the polish")
    filter_seeds: bool = Field(True, description="drop seed samples outside the state (MD "
                               "may leave a shallow basin) before training")
    anneal: AnnealConfig = Field(default_factory=AnnealConfig, description="annealed "
                                 "importance sampling of the estimate (levels 0: plain IS)")
    samples: int = Field(4000, ge=10, description="flow samples for the estimate")
    bootstrap: int = Field(200, ge=10)
    estimator: Literal["is", "bar"] = "is"
    bar_holdout: bool = Field(False, description="BAR on the odd walkers, the final "
                              "retraining and polish on the seeds + even walkers (BAR then "
                              "never compares the flow with samples it was fitted to; on lj7 "
                              "the reuse moved ΔF by 0.003-0.009 kT, less than the halved "
                              "walkers cost in precision)")


@dataclass
class StateResult:
    """One state's estimate, generator, MCMC run, flow samples and timing (s)."""

    name: str
    free_energy: FreeEnergy
    generator: BoltzmannGenerator
    mcmc: MCMCResult | None
    samples: FlowSamples
    train_seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        fe = self.free_energy
        return {"f_ev": fe.f_ev, "err_ev": fe.err_ev, "ess_fraction": fe.ess_fraction,
                "imh_acceptance": (self.mcmc.global_acceptance if self.mcmc else None),
                "local_acceptance": (self.mcmc.local_acceptance if self.mcmc else None),
                "rhat": (self.mcmc.rhat if self.mcmc else {}),
                "train_seconds": self.train_seconds, **fe.extra, **self.extra}


@contextlib.contextmanager
def _is_diagnostics(quiet: bool) -> Iterator[None]:
    """Silence the importance-sampling estimate's warnings (Pareto k̂, low ESS) when
    ``quiet``."""
    if not quiet:
        yield
        return
    est = logging.getLogger("alflow.estimate")
    level = est.level
    est.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OverlapWarning)
            yield
    finally:
        est.setLevel(level)


def state_free_energy(potential: Potential, name: str, states: BasinStates | CVStates,
                      reference: np.ndarray | None, numbers: np.ndarray, temperature_k: float,
                      seed_samples: np.ndarray,
                      config: StateSamplerConfig | dict[str, Any] | None = None,
                      wall_radius: float | None = None, masses: np.ndarray | None = None,
                      out_dir: str | Path | None = None, seed: int = 0,
                      init_flow: str | Path | None = None) -> StateResult:
    """Train the flow of state ``name`` and estimate its free energy (eV, module doc).

    reference (N, 3) Å: the state's minimum (None with BasinStates: its quenched minimum on
    ``potential``); seed_samples (B, N, 3) Å: configurations of the
    state at ``temperature_k`` K; wall_radius Å (hard wall about the centre of mass, masses
    amu); out_dir: where the generator is saved (flow.pt + flow.json); init_flow: a saved
    flow of this state whose weights the training starts from (BoltzmannGenerator.warm_start).
    """
    cfg = config if isinstance(config, StateSamplerConfig) else \
        StateSamplerConfig(**(config or {}))
    if reference is None:
        if not isinstance(states, BasinStates):
            raise InputError(f"state {name!r}: a reference structure is needed for CV states")
        reference = states.minima[states.names.index(name)]
    seeds = np.asarray(seed_samples, dtype=float)
    if seeds.ndim != 3 or seeds.shape[1:] != np.shape(reference):
        raise InputError(f"seed samples of state {name!r} must have shape (B, "
                         f"{np.shape(reference)[0]}, 3), got {seeds.shape}")
    restrict = wall(wall_radius, masses) if wall_radius is not None else None
    member = states.member(name)
    extra: dict[str, Any] = {"seeds": len(seeds)}
    if cfg.filter_seeds:
        inside = np.asarray(member(torch.as_tensor(seeds)), dtype=bool)
        if restrict is not None:
            inside &= np.asarray(restrict(torch.as_tensor(seeds)), dtype=bool)
        extra["seeds_inside_fraction"] = float(inside.mean())
        if inside.sum() >= 10:
            seeds = seeds[inside]
        else:
            log.warning("state %s: only %d of %d seed samples inside the state; keeping all",
                        name, int(inside.sum()), len(seeds))
    bg = BoltzmannGenerator.build(reference, numbers, cfg.flow, samples=seeds,
                                  init=torch.Generator().manual_seed(seed))
    if init_flow is not None:
        extra["init_flow"] = str(init_flow) if bg.warm_start(init_flow) else None
    t0 = time.perf_counter()
    train_flow(bg, seeds, config=cfg.train.model_copy(update={"seed": seed}))
    train_s = time.perf_counter() - t0
    result_mcmc = None
    target = fit = None
    if cfg.mcmc:
        rng = np.random.default_rng(seed)
        x0 = seeds[rng.choice(len(seeds), cfg.walkers, replace=len(seeds) < cfg.walkers)]
        if restrict is not None:
            x0 = x0[restrict(torch.as_tensor(x0)).numpy()]
        mc = cfg.mcmc_config.model_copy(update={"seed": seed})
        # quench-basin states answer the walkers' checks during the next MALA steps
        check = states.checker(name) if hasattr(states, "checker") else \
            (lambda y: torch.as_tensor(member(y)))
        result_mcmc = adaptive_mcmc(potential, bg, x0, temperature_k, mc, restrict=restrict,
                                    member=check, train_samples=seeds,
                                    retrain=lambda d, c: train_flow(bg, d, config=c),
                                    label=f"{name}: MCMC ({len(x0)} walkers)")
        train_s += result_mcmc.train_seconds
        target = fit = result_mcmc.positions  # (T, W, N, 3)
        if cfg.estimator == "bar" and cfg.bar_holdout and target.shape[1] >= 4 \
                and (cfg.retrain_steps or cfg.polish_steps):
            fit, target = target[:, 0::2], target[:, 1::2]
            extra["bar_walkers"] = target.shape[1]
        if cfg.retrain_steps and target.size:
            t0 = time.perf_counter()
            data = np.concatenate([seeds, fit.reshape(-1, *seeds.shape[1:])])
            tc = cfg.train.model_copy(update={"steps": cfg.retrain_steps,
                                              "seed": flow_stage_seed(seed, "retrain"),
                                              "lr": cfg.train.lr / 4})
            train_flow(bg, data, config=tc)
            train_s += time.perf_counter() - t0
    if cfg.polish_steps:
        t0 = time.perf_counter()
        data = seeds if target is None else np.concatenate(
            [seeds, fit.reshape(-1, *seeds.shape[1:])])
        tc = cfg.train.model_copy(update={"steps": cfg.polish_steps,
                                          "seed": flow_stage_seed(seed, "polish"),
                                          "lr": cfg.train.lr / 2,
                                          "forward_weight": cfg.polish_forward_weight})
        train_flow(bg, data, potential, temperature_k, config=tc)
        train_s += time.perf_counter() - t0
    t0 = time.perf_counter()
    bar_estimate = cfg.estimator == "bar" and target is not None and target.size > 0
    with track(f"{name}: estimate F ({cfg.estimator})"):
        # with BAR the estimate, the flow-only importance sampling is a diagnostic (its
        # ESS and k̂ are stored): its heavy-tail warnings would only alarm
        with _is_diagnostics(quiet=bar_estimate):
            fe, samples = flow_free_energy(bg, potential, temperature_k, cfg.samples,
                                           member=member, restrict=restrict,
                                           seed=flow_estimate_seed(seed, cfg.mcmc),
                                           n_bootstrap=cfg.bootstrap, return_samples=True,
                                           anneal=cfg.anneal, label=f"state {name}")
        fe.extra.setdefault("flow_ess_fraction", fe.ess_fraction)
        if bar_estimate:
            fb = flow_bar_free_energy(bg, potential, temperature_k, target, cfg.samples,
                                      member=member, restrict=restrict,
                                      seed=flow_stage_seed(seed, "bar"),
                                      n_bootstrap=cfg.bootstrap,
                                      samples=None if cfg.anneal.levels else samples)
            fb.extra = {**fe.extra, **fb.extra, "is_f_ev": fe.f_ev, "is_err_ev": fe.err_ev}
            fb.ess_fraction, fb.ess = fe.ess_fraction, fe.ess
            fe = fb
    extra["estimate_seconds"] = time.perf_counter() - t0
    if out_dir is not None:
        bg.save(out_dir)
    return StateResult(name, fe, bg, result_mcmc, samples, train_s, extra)


def free_energy_difference(potential: Potential, references: Mapping[str, np.ndarray],
                           numbers: np.ndarray, temperature_k: float,
                           seed_samples: Mapping[str, np.ndarray], from_: str, to: str,
                           config: StateSamplerConfig | dict[str, Any] | None = None,
                           wall_radius: float | None = None, masses: np.ndarray | None = None,
                           states: BasinStates | CVStates | None = None,
                           out_dir: str | Path | None = None,
                           seed: int = 0) -> tuple[DeltaF, dict[str, StateResult]]:
    """ΔF = F(to) − F(from) (eV) with its error, and each state's result.

    references: state name -> minimum (N, 3) Å; states: membership (default: quench basins
    of the references on ``potential``); seed_samples: name -> (B, N, 3) Å.
    """
    for n in (from_, to):
        if n not in references or n not in seed_samples:
            raise InputError(f"state {n!r} needs a reference structure and seed samples")
    states = states or BasinStates(potential, references)
    results = {}
    for k, n in enumerate(references):
        if n not in seed_samples:
            continue
        results[n] = state_free_energy(
            potential, n, states, references[n], numbers, temperature_k, seed_samples[n],
            config, wall_radius, masses, Path(out_dir) / n if out_dir else None, seed + 100 * k)
    return delta_f(results[from_].free_energy, results[to].free_energy), results


__all__ = ["StateResult", "StateSamplerConfig", "free_energy_difference", "state_free_energy"]
