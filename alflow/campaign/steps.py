"""The heavy steps of a generation, as functions a Parsl worker runs.

Each wraps the science modules (alflow.mlip, alflow.sampling, alflow.flows, alflow.estimate)
with the campaign's conventions: inputs are paths, configs and seeds; outputs are
``(json_dict, arrays_dict)`` that the checkpoint store keeps; ``_t0``/``_t1`` (epoch seconds)
bound the time spent inside the step (for the orchestration-overhead figure). Positions in Å,
energies in eV.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from alflow.campaign.config import CampaignConfig, ExplorationConfig, SamplerConfig
from alflow.campaign.labels import in_training
from alflow.campaign.pause import pause_point
from alflow.campaign.system import System, with_wall
from alflow.dataset import LabelStore

log = logging.getLogger(__name__)

Result = tuple[dict[str, Any], dict[str, np.ndarray]]


def radius_of_gyration(positions: np.ndarray, masses: np.ndarray) -> np.ndarray:
    """(..., N, 3) Å -> (...,) mass-weighted radius of gyration, Å."""
    x = np.asarray(positions, dtype=float)
    com = (x * masses[:, None]).sum(-2, keepdims=True) / masses.sum()
    return np.sqrt(((x - com) ** 2).sum(-1) @ masses / masses.sum())


def _training_set(dataset: str, mlip: dict[str, Any], seed: int, generation: int):
    """The labels the committee of ``generation`` trains on (ASE Atoms) and its MLIPConfig."""
    from alflow.mlip import MLIPConfig

    store = LabelStore(dataset, create=False)
    atoms = [r.to_atoms() for r in store.records(status="ok") if in_training(r.tags, generation)]
    return atoms, MLIPConfig(**{"seed": seed, **mlip})


def train_member(dataset: str, out_dir: str, mlip: dict[str, Any], init_from: str | None,
                 seed: int, generation: int, run_root: str, member: int) -> Result:
    """Train member ``member`` of the committee of ``generation`` on its labels, warm-started
    from ``init_from``, with the threads of this worker: one task per member, so the members
    train at once on the executor's workers (:func:`train` then writes the committee)."""
    from alflow.mlip import train_committee
    from alflow.progress import track

    pause_point("train", generation, run_root)
    t0 = time.time()
    atoms, config = _training_set(dataset, mlip, seed, generation)
    # an interrupted attempt left the member's checkpoint in out_dir: train_committee resumes it
    with track(f"gen {generation}: train member {member} ({len(atoms)} labels)"):
        train_committee(atoms, Path(out_dir), config, members=[member],
                        init_from=Path(init_from) if init_from else None)
    return {"member": member, "_t0": t0, "_t1": time.time()}, {}


def train(dataset: str, out_dir: str, mlip: dict[str, Any], init_from: str | None, seed: int,
          generation: int, run_root: str) -> Result:
    """The committee of ``generation`` from its members (:func:`train_member`; a member not
    yet trained is trained here, one after the other): validation metrics and
    ``committee.json``."""
    from alflow.mlip import train_committee

    t0 = time.time()
    atoms, config = _training_set(dataset, mlip, seed, generation)
    path = train_committee(atoms, Path(out_dir), config,
                           init_from=Path(init_from) if init_from else None)
    return {"model_dir": str(path), "n_train": len(atoms),
            "_t0": t0, "_t1": time.time()}, {}


def _starts(system: System, state: str, replicas: int, extra: np.ndarray | None) -> np.ndarray:
    pool = [a.positions - a.get_center_of_mass() for a in system.structures[state]]
    if extra is not None:
        pool += list(extra)
    return np.array([pool[i % len(pool)] for i in range(replicas)])


def explore(model_dir: str, flow_dir: str | None, system: System, state: str,
            exploration: ExplorationConfig, temperature_k: float, trust_upper: float,
            seed: int, cfg_states: dict[str, Any] | None = None) -> Result:
    """Langevin MD (and flow MCMC when a flow exists) of one state on the committee; returns
    candidate positions (M, N, 3), their force deviation (M,) eV/Å, energy (M,) eV, the
    committee's energy std (M,) eV, whether each is a flow proposal (M,) bool rather than an
    MD frame, the flow's ln q of each proposal (M,) (NaN for MD frames), a CV (radius of
    gyration, Å) for stratified selection and, with the states' definitions
    ``cfg_states``, the committee's state of each MD frame (M,) (index into ``cfg_states``,
    -1 for none; -2 for flow proposals) for the boundary selection."""
    from alflow.mlip import load_potential
    from alflow.progress import track
    from alflow.sampling.explore import ExploreConfig
    from alflow.sampling.explore import explore as run_md

    t0 = time.time()
    committee = load_potential(model_dir, system.numbers)
    pot = with_wall(committee, system)
    md = exploration.md
    config = ExploreConfig(**{
        "temperature_k": md.temperature_k or temperature_k, "dt_fs": md.dt_fs,
        "steps": md.steps, "friction_per_fs": md.friction_per_fs,
        "record_every": md.record_every, "replicas": md.replicas, "seed": seed,
        "trust_upper": trust_upper if md.stop_at_trust_upper else None,
        **({"metad": exploration.metad.options} if exploration.metad.enabled else {}),
        **md.options})
    starts = [system.atoms(x) for x in _starts(system, state, md.replicas, None)]
    for a in starts:
        a.set_masses(system.masses)
    with track(f"{state}: explore MD", md.steps, "step") as bar:
        traj, _ = run_md(pot, starts, config, callback=lambda step, _active: bar.set(step))
    valid = traj.valid.reshape(-1)
    pos = np.asarray(traj.positions, dtype=float).reshape(-1, *traj.positions.shape[-2:])
    fd = np.asarray(traj.force_dev, dtype=float).reshape(-1)
    en = np.asarray(traj.energy, dtype=float).reshape(-1)
    keep = valid & np.all(np.isfinite(pos.reshape(len(pos), -1)), axis=1) & np.isfinite(fd)
    pos, fd, en = pos[keep], fd[keep], en[keep]
    from_flow = np.zeros(len(pos), dtype=bool)
    log_q = np.full(len(pos), np.nan)
    assigned = np.full(len(pos), -2, dtype=np.int64)
    if cfg_states and len(pos):
        assigned = committee_states_of(committee, system, cfg_states, pos, state)
    if flow_dir is not None and exploration.sampler.explore_samples:
        # the previous generation's flow proposes configurations MD rarely visits
        from alflow.flows.generator import BoltzmannGenerator
        from alflow.potential import evaluate

        bg = BoltzmannGenerator.load(flow_dir)
        x, lq, ok = bg.sample(exploration.sampler.explore_samples,
                              torch.Generator().manual_seed(seed))
        x, lq = x[ok].double(), lq[ok].double()
        if len(x):
            out = evaluate(pot, x)
            good = torch.isfinite(out.energy) & torch.isfinite(out.force_dev)
            pos = np.concatenate([pos, x[good].numpy()])
            fd = np.concatenate([fd, out.force_dev[good].double().numpy()])
            en = np.concatenate([en, out.energy[good].double().numpy()])
            from_flow = np.concatenate([from_flow, np.ones(int(good.sum()), dtype=bool)])
            log_q = np.concatenate([log_q, lq[good].numpy()])
            assigned = np.concatenate([assigned, np.full(int(good.sum()), -2, np.int64)])
    energy_std = (committee.stats(torch.as_tensor(pos))["energy_std"].double().numpy()
                  if len(pos) else np.zeros(0))
    return ({"state": state, "frames": int(len(pos)), "_t0": t0, "_t1": time.time()},
            {"positions": pos, "force_dev": fd, "energy": en, "energy_std": energy_std,
             "from_flow": from_flow, "log_q": log_q, "assigned": assigned,
             "cv": radius_of_gyration(pos, system.masses)})


def committee_states_of(potential, system: System, cfg_states: dict[str, Any],
                        positions: np.ndarray, state: str) -> np.ndarray:
    """The committee's state of each configuration (B,) (index into ``cfg_states``, -1 for
    none), or -2 for all when the committee's own states are not distinct (a rough committee
    quenches two states' references to one minimum): its MD frames then give no boundary
    labels, and the exploration's other candidates stand."""
    from alflow.errors import InputError

    try:
        sets = state_sets(potential, system, cfg_states)
    except InputError as err:
        log.warning("state %s: the committee's states are not distinct (%s): its MD frames get "
                    "no state this generation", state, err)
        return np.full(len(positions), -2, dtype=np.int64)
    return np.asarray(sets.assign(positions), dtype=np.int64)


def _rhat(traces: np.ndarray) -> float:
    """Rank-normalised split R-hat (alflow.sampling.diagnostics) of (draws, chains) traces;
    NaN when there are too few draws."""
    from alflow.sampling.diagnostics import split_rhat

    t = np.asarray(traces, dtype=float)
    return split_rhat(t.T) if t.ndim == 2 and t.shape[0] >= 4 else float("nan")


def state_sets(potential, system: System, cfg_states: dict[str, Any]):
    """The state definition (alflow.states) for every state: basin, CV region or CV class of
    minima."""
    from alflow.states import BasinStates, CVStates

    kinds = {d.definition.kind for d in cfg_states.values()}
    if kinds == {"basin"}:
        refs = {}
        for s, st in cfg_states.items():
            if st.definition.reference:
                from alflow.structures import read_structures

                a = read_structures(st.definition.reference)[0]
            else:
                a = system.structures[s][0]
            refs[s] = a.positions - a.get_center_of_mass()
        tol = max(st.definition.match_tolerance for st in cfg_states.values())
        # a full quench (fmax 5e-4 eV/Å): one stopped at 1e-2 eV/Å and matched within 0.2 Å
        # left 11 % (pbp) and 20 % (coh) of lj7's 18 K basin frames in no state, which moved
        # ΔF by +0.3 kT (tests/test_campaign_config.py::test_campaign_basins_are_full_quench_basins)
        return BasinStates(potential, refs, tolerance=tol)
    if kinds in ({"cv"}, {"minimum_cv"}):
        from pydantic import TypeAdapter

        from alflow.sampling.cvs import CVConfig, make_cv
        from alflow.states import MinimumCVStates

        n = len(system.numbers)
        cv = TypeAdapter(CVConfig)
        regions = {s: (make_cv(cv.validate_python(st.definition.cv), n), st.definition.low,
                       st.definition.high) for s, st in cfg_states.items()}
        if kinds == {"cv"}:
            return CVStates(regions)
        refs = {s: system.structures[s][0].positions for s in cfg_states}
        return MinimumCVStates(potential, regions, refs)
    raise ValueError("states must all be basins, all CV regions or all CV classes of minima")


def _pipeline_config(sampler: SamplerConfig, n_bootstrap: int) -> dict[str, Any]:
    """The alflow.flows.pipeline.StateSamplerConfig of the campaign's sampler section:
    ``sampler.mcmc`` holds ``enabled``, ``walkers``, ``retrain_steps``, ``estimator`` and the
    alflow.sampling.mcmc.MCMCConfig options; without a ``mcmc`` section (or with
    ``enabled: false``) the flow is trained on the MD seeds alone (no MCMC)."""
    mc = dict(sampler.mcmc)
    out: dict[str, Any] = {"flow": sampler.flow, "train": sampler.train,
                           "samples": sampler.samples, "bootstrap": n_bootstrap,
                           "mcmc": bool(mc.pop("enabled", bool(mc))),
                           "polish_steps": sampler.polish_steps,
                           "filter_seeds": sampler.filter_seeds, "anneal": sampler.anneal}
    for k in ("walkers", "retrain_steps", "estimator", "bar_holdout"):
        if k in mc:
            out[k] = mc.pop(k)
    out["mcmc_config"] = mc
    return out


def seed_md_config(cfg: CampaignConfig) -> dict[str, Any]:
    """The flows step's seed MD (:func:`_seed_md`) of a campaign: the sampler's replicas,
    steps and recording interval, exploration.md's time step (fs) and friction (1/fs)."""
    sp, md = cfg.exploration.sampler, cfg.exploration.md
    return {"replicas": sp.md_replicas, "steps": sp.md_steps, "record_every": sp.md_record_every,
            "dt_fs": md.dt_fs, "friction_per_fs": md.friction_per_fs}


def _seed_md(potential, system: System, reference: np.ndarray, md_cfg: dict[str, Any],
             temperature_k: float, seed: int, state: str) -> tuple[np.ndarray, float, int]:
    """Langevin MD from the state's minimum on ``potential`` (with the wall): the flow's seed
    samples (B, N, 3) Å after a 20 % burn-in, the energy R-hat of the replicas and the number
    of frames recorded."""
    from alflow.progress import track
    from alflow.sampling.langevin import run_langevin

    x0 = np.repeat(np.asarray(reference)[None], md_cfg["replicas"], 0)
    with track(f"{state}: seed MD", md_cfg["steps"], "step") as bar:
        traj = run_langevin(with_wall(potential, system), x0, system.masses, temperature_k,
                            md_cfg["dt_fs"], md_cfg["steps"], md_cfg["friction_per_fs"],
                            record_every=md_cfg["record_every"], seed=seed,
                            callback=lambda step, _active: bar.set(step))
    burn = traj.n_frames // 5
    frames = np.asarray(traj.positions[burn:])  # (F, R, N, 3)
    data = frames.reshape(-1, *frames.shape[2:])
    data = data[np.isfinite(data.reshape(len(data), -1)).all(1)]
    if len(data) < 10:
        raise RuntimeError(f"state {state}: only {len(data)} usable MD frames")
    return data, _rhat(np.asarray(traj.energy[burn:])), int(frames.shape[0] * frames.shape[1])


def flows(model_dir: str, system: System, state: str, out_dir: str, sampler: SamplerConfig,
          md_cfg: dict[str, Any], temperature_k: float, cfg_states: dict[str, Any],
          n_reweight: int, n_bootstrap: int, seed: int, init_flow: str | None = None
          ) -> Result:
    """For one state on the committee of this generation: MD from the state's minimum gives
    seed samples (:func:`_seed_md`); :func:`alflow.flows.pipeline.state_free_energy` trains a
    flow on them, runs adaptive MCMC with it (unless ``sampler.mcmc`` is off) and estimates
    the state's free energy. ``n_reweight`` Boltzmann samples of the potential in the state
    (:func:`_boltzmann_picks`) go to the correction to the oracle. ``init_flow``: a flow of
    this state whose weights the training starts from (a cheap oracle's stage's)."""
    from alflow.flows.pipeline import StateSamplerConfig, state_free_energy
    from alflow.mlip import load_potential

    t0 = time.time()
    pot = load_potential(model_dir, system.numbers)
    states = state_sets(pot, system, cfg_states)
    k = states.names.index(state)
    ref = np.asarray(states.minima[k] if hasattr(states, "minima") else
                     system.structures[state][0].positions)
    data, md_rhat, md_frames = _seed_md(pot, system, ref, md_cfg, temperature_k, seed, state)
    t_md = time.time() - t0
    # MD seeds may leave the basin: the MCMC's flow moves and the estimate keep to the state
    cfg = StateSamplerConfig(**_pipeline_config(sampler, n_bootstrap))
    res = state_free_energy(pot, state, states, ref, system.numbers, temperature_k, data, cfg,
                            wall_radius=system.wall_radius, masses=system.masses,
                            out_dir=out_dir, seed=seed, init_flow=init_flow)
    fe, mcmc = res.free_energy, res.mcmc
    _save_flow_samples(res.samples, state, out_dir, res.generator.symmetry_number,
                       temperature_k)
    rhat, mcmc_rhat = md_rhat, None
    if mcmc is not None:
        vals = [v for v in mcmc.rhat.values() if v is not None and np.isfinite(v)]
        mcmc_rhat = max(vals) if vals else None
        rhat = mcmc_rhat if mcmc_rhat is not None else md_rhat
    rw_x, rw_e = _boltzmann_picks(res.samples, mcmc, n_reweight, np.random.default_rng(seed))
    return ({"state": state, "flow_dir": str(out_dir), "f_ev": fe.f_ev, "err_ev": fe.err_ev,
             "ess_fraction": fe.ess_fraction, **fe.extra, "rhat": rhat, "md_rhat": md_rhat,
             "mcmc_rhat": mcmc_rhat, "acceptance": mcmc.global_acceptance if mcmc else None,
             "local_acceptance": mcmc.local_acceptance if mcmc else None,
             "md_frames_used": int(len(data)), "md_frames": md_frames,
             "train_seconds": res.train_seconds, "md_seconds": t_md,
             "mcmc_seconds": mcmc.seconds - mcmc.train_seconds if mcmc else None,
             "estimate_seconds": res.extra.get("estimate_seconds"),
             **({"init_flow": res.extra["init_flow"]} if "init_flow" in res.extra else {}),
             "_t0": t0, "_t1": time.time()},
            {"reweight_positions": rw_x, "reweight_model_energy": rw_e, "md_samples": data})


def _boltzmann_picks(smp, mcmc, n: int, rng: np.random.Generator
                     ) -> tuple[np.ndarray, np.ndarray]:
    """``n`` Boltzmann samples of the potential in the state (positions (n, N, 3) Å, energies
    (n,) eV) for the oracle correction: production draws of the MCMC walkers, chosen at random
    without replacement (exact samples of the state, whatever the flow's overlap); without
    MCMC, flow samples drawn in proportion to their importance weights (with a poor flow a
    few samples repeat)."""
    if mcmc is not None and mcmc.energy.size >= n:
        flat = rng.choice(mcmc.energy.size, size=n, replace=False)
        t, w = np.unravel_index(flat, mcmc.energy.shape)
        return mcmc.positions[t, w], mcmc.energy[t, w]
    lw = smp.log_w
    if not n or not np.isfinite(lw).any():
        return smp.positions[:0], smp.energy[:0]
    w = np.exp(lw - lw[np.isfinite(lw)].max())
    pick = rng.choice(len(w), size=n, p=w / w.sum())
    return smp.positions[pick], smp.energy[pick]


def _save_flow_samples(smp, state: str, out_dir: str, symmetry_number: int,
                       temperature_k: float) -> None:
    """Keep the importance-sampling draw of the estimate (energy eV, ln q, in-state mask; no
    positions) as ``out_dir/is_samples.npz`` (alflow.observables.temperatures.StateSamples),
    so the report reweights it to other temperatures without drawing again."""
    from alflow.observables.temperatures import StateSamples
    from alflow.runlayout import FLOW_SAMPLES_FILE, parse_generation

    d = Path(out_dir)
    gen = parse_generation(d.parent.name)  # out_dir is flows/genNNN/<state> in a run directory
    StateSamples.from_flow_samples(state, smp, symmetry_number, temperature_k,
                                   -1 if gen is None else gen).save(d / FLOW_SAMPLES_FILE)


def summarise(cfg: CampaignConfig, g: int, per_state: dict[str, dict[str, Any]],
              reweight: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """ΔF = F(to) − F(from) with its error, and its correction to the oracle
    (alflow.estimate.reweight: the bias-corrected exponential average of oracle − model
    energies over Boltzmann samples of each state; alflow.estimate.corrected_delta_f)."""
    import warnings

    from alflow.estimate import FreeEnergy, committee_spread, corrected_delta_f, delta_f
    from alflow.estimate import reweight as rw

    a, b = cfg.system.delta_f.from_, cfg.system.delta_f.to
    out: dict[str, Any] = {"generation": g, "value_ev": None, "error_ev": None,
                           "correction_ev": None, "correction_error_ev": None,
                           "corrected_ev": None, "corrected_error_ev": None,
                           "states": per_state}
    rh = [v.get("rhat") for v in per_state.values() if v.get("rhat") is not None]
    out["rhat"] = max(rh) if rh else None
    if a not in per_state or b not in per_state:
        return out
    def num(x: Any) -> float:  # stored results hold null for a non-finite value
        return float("nan") if x is None else float(x)

    fe = {s: FreeEnergy(num(per_state[s]["f_ev"]), num(per_state[s]["err_ev"]),
                        cfg.temperature_k) for s in (a, b)}
    d = delta_f(fe[a], fe[b])
    if not (np.isfinite(d.value_ev) and np.isfinite(d.error_ev)):
        return out  # a state without samples inside it: no estimate this generation
    # the committee's spread: the potential's own uncertainty, part of its ΔF's error (the
    # corrected ΔF measures the potential's error against the oracle instead)
    spread = committee_spread(per_state[a].get("member_shift_ev"),
                              per_state[b].get("member_shift_ev"))
    out["committee_ev"] = spread
    out["value_ev"], out["error_ev"] = d.value_ev, float(np.hypot(d.error_ev, spread))
    corr = {}
    for s in (a, b):
        r = reweight.get(s)
        if not r or len(r["oracle_ev"]) < 2:
            return out
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            corr[s] = rw(np.asarray(r["model_ev"]), np.asarray(r["oracle_ev"]),
                         cfg.temperature_k, seed=cfg.seed + g)
        out["states"][s]["correction"] = corr[s].to_dict()
    out.update(corrected_delta_f(fe[a], fe[b], corr[a], corr[b]))
    out["error_ev"] = float(np.hypot(out["error_ev"], spread))
    return out


__all__ = ["explore", "flows", "seed_md_config", "summarise", "train", "train_member"]
