"""The flow samples of a campaign run directory, for ΔF at other temperatures
(:mod:`alflow.observables.temperatures`): those the flows step stored, else drawn again from
the saved flow and committee exactly as the step drew them (same restriction to the state and
the wall, same seed: :mod:`alflow.seeds`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alflow.errors import InputError
from alflow.observables.temperatures import StateSamples
from alflow.runlayout import RunLayout
from alflow.seeds import flow_estimate_seed, step_seed


def _last_generation(run: RunLayout, states: Sequence[str]) -> int | None:
    """The last generation with a flow for every state and a committee."""
    for g in reversed(run.flow_generations()):
        if all((run.flows(g, s) / "flow.json").exists() for s in states) and \
                run.models(g).is_dir():
            return g
    return None


def campaign_samples(run_dir: str | Path, generation: int | None = None,
                     n: int | None = None) -> tuple[dict[str, StateSamples], dict[str, Any]]:
    """The flow samples of every state of a campaign run directory (docs/campaign.md) for
    ``generation`` (default: the last one with flows for all states and a committee): those
    the flows step stored (``flows/genNNN/STATE/is_samples.npz``), else drawn once and cached
    as ``RUN_DIR/temperatures/genNNN-STATE.npz``; ``n`` samples per state (default: the
    stored ones, or the campaign's ``exploration.sampler.samples``). Returns (samples, info)
    with info holding the campaign temperature, ``from``/``to`` states, the generation and
    the validated campaign ``config``."""
    from alflow.campaign.config import CampaignConfig
    from alflow.config import read_yaml, validate_model

    run = RunLayout(run_dir)
    cfg_path = run.config
    if not cfg_path.exists():
        raise InputError(f"{cfg_path}: not a campaign run directory (no campaign.yaml)")
    cfg = validate_model(CampaignConfig, read_yaml(cfg_path), source=str(cfg_path))
    names = list(cfg.system.states)
    g = _last_generation(run, names) if generation is None else generation
    if g is None:
        raise InputError(f"{run.root}: no generation has flows for all states {names} yet")
    info = {"generation": g, "temperature_k": cfg.temperature_k,
            "from": cfg.system.delta_f.from_, "to": cfg.system.delta_f.to, "config": cfg}
    out: dict[str, StateSamples] = {}
    for s in names:
        path = run.flow_samples(g, s)
        if path.exists():
            got = StateSamples.load(path)
            if n is None or len(got.energy_ev) == n:
                out[s] = got
    if len(out) == len(names):
        return out, info
    n = n or cfg.exploration.sampler.samples
    cache = {s: run.temperature_cache(g, s) for s in names}
    for s, path in cache.items():
        if s not in out and path.exists():
            got = StateSamples.load(path)
            if len(got.energy_ev) == n:
                out[s] = got
    if len(out) == len(names):
        return out, info
    drawn = _draw(run, cfg, g, [s for s in names if s not in out], n)
    for s, v in drawn.items():
        v.save(cache[s])
    return {**out, **drawn}, info


def _draw(run: RunLayout, cfg: Any, g: int, todo: list[str], n: int) -> dict[str, StateSamples]:
    """Sample the saved flows of ``todo`` states on the generation's committee, as the
    campaign's flows step does (same restriction to the state and the wall, same seed)."""
    from alflow.campaign.steps import state_sets
    from alflow.campaign.system import build_system
    from alflow.flows.estimate import sample_flow
    from alflow.flows.generator import BoltzmannGenerator
    from alflow.mlip import load_potential
    from alflow.states import wall

    system = build_system(cfg)
    pot = load_potential(run.models(g), system.numbers)
    states = state_sets(pot, system, cfg.system.states)
    restrict = wall(system.wall_radius, system.masses) if system.wall_radius else None
    names = list(cfg.system.states)
    mcmc = cfg.exploration.sampler.mcmc  # as alflow.campaign.steps reads it
    uses_mcmc = bool(mcmc.get("enabled", bool(mcmc)))
    out = {}
    for s in todo:
        seed = flow_estimate_seed(step_seed(cfg.seed, "flows", g, names.index(s)), uses_mcmc)
        bg = BoltzmannGenerator.load(run.flows(g, s))
        smp = sample_flow(bg, pot, cfg.temperature_k, n, member=states.member(s),
                          restrict=restrict, seed=seed)
        out[s] = StateSamples.from_flow_samples(s, smp, bg.symmetry_number, cfg.temperature_k,
                                                g)
    return out


__all__ = ["campaign_samples"]
