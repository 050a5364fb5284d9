"""The heavy steps of a generation, as functions a Parsl worker runs.

Each wraps the science modules (alflow.mlip, alflow.sampling, alflow.flows, alflow.estimate)
with the campaign's conventions: inputs are paths, configs and seeds; outputs are
``(json_dict, arrays_dict)`` that the checkpoint store keeps; ``_seconds`` is the time spent
inside the step (for the orchestration-overhead figure). Positions in Å, energies in eV.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

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


def train(dataset: str, out_dir: str, mlip: dict[str, Any], init_from: str | None, seed: int,
          generation: int, run_root: str) -> Result:
    """Train the committee of ``generation`` on its labels, warm-started from ``init_from``."""
    from alflow.mlip import MLIPConfig, train_committee

    pause_point("train", generation, run_root)
    t0 = time.perf_counter()
    store = LabelStore(dataset, create=False)
    atoms = [r.to_atoms() for r in store.records(status="ok") if in_training(r.tags, generation)]
    out = Path(out_dir)
    if out.exists():  # left by an interrupted attempt
        shutil.rmtree(out)
    config = MLIPConfig(**{"seed": seed, **mlip}) if "seed" in MLIPConfig.model_fields \
        else MLIPConfig(**mlip)
    path = train_committee(atoms, out, config, init_from=Path(init_from) if init_from else None)
    return {"model_dir": str(path), "n_train": len(atoms),
            "_seconds": time.perf_counter() - t0}, {}


def _starts(system: System, state: str, replicas: int, extra: np.ndarray | None) -> np.ndarray:
    pool = [a.positions - a.get_center_of_mass() for a in system.structures[state]]
    if extra is not None:
        pool += list(extra)
    return np.array([pool[i % len(pool)] for i in range(replicas)])


def explore(model_dir: str, flow_dir: str | None, system: System, state: str,
            exploration: ExplorationConfig, temperature_k: float, trust_upper: float,
            seed: int) -> Result:
    """Langevin MD (and flow MCMC when a flow exists) of one state on the committee; returns
    candidate positions (M, N, 3), their force deviation (M,) eV/Å, energy (M,) eV and a
    CV (radius of gyration, Å) for stratified selection."""
    from alflow.mlip import load_potential
    from alflow.sampling.langevin import run_langevin

    t0 = time.perf_counter()
    pot = with_wall(load_potential(model_dir, system.numbers), system)
    md = exploration.md
    x0 = _starts(system, state, md.replicas, None)
    traj = run_langevin(pot, x0, system.masses, md.temperature_k or temperature_k, md.dt_fs,
                        md.steps, friction_per_fs=md.friction_per_fs,
                        record_every=md.record_every,
                        trust_upper=trust_upper if md.stop_at_trust_upper else None, seed=seed,
                        **md.options)
    frames = np.asarray(traj.frames, dtype=float)
    pos = frames.reshape(-1, *frames.shape[-2:])
    fd = np.asarray(traj.force_dev, dtype=float).reshape(-1)
    en = np.asarray(traj.energies, dtype=float).reshape(-1)
    keep = np.all(np.isfinite(pos.reshape(len(pos), -1)), axis=1) & np.isfinite(fd)
    pos, fd, en = pos[keep], fd[keep], en[keep]
    return ({"state": state, "frames": int(len(pos)), "_seconds": time.perf_counter() - t0},
            {"positions": pos, "force_dev": fd, "energy": en,
             "cv": radius_of_gyration(pos, system.masses)})


def flows(model_dir: str, system: System, state: str, out_dir: str, sampler: SamplerConfig,
          temperature_k: float, n_bootstrap: int, seed: int) -> Result:
    """Train the flow of one state on the committee and estimate its free energy."""
    raise NotImplementedError("waiting for alflow.flows")


def summarise(cfg: CampaignConfig, g: int, per_state: dict[str, dict[str, Any]],
              reweight: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """ΔF = F(to) − F(from) with its error, and its correction to the oracle."""
    raise NotImplementedError("waiting for alflow.estimate")


__all__ = ["explore", "flows", "summarise", "train"]
