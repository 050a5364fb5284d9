"""Parsl apps: train a flow, run adaptive MCMC, ΔF from two states' F (executor ``gpu``).

Thin wrappers: each app imports alflow inside (workers need only alflow installed) and passes
paths, arrays and plain dicts (validated configs) — nothing that needs a driver-side object.
Potentials are rebuilt on the worker from a model directory (alflow.mlip) or passed picklable
(``alflow.potential.LennardJones``). Arrays: positions (B, N, 3) Å; energies eV; K.
"""

from __future__ import annotations

from typing import Any

from parsl import python_app


@python_app(executors=["gpu"])
def train_flow_app(flow_dir: str, samples: Any, config: dict[str, Any] | None = None,
                   nproc: int = 1, device: str = "cpu") -> dict[str, Any]:
    """(Re)train the generator saved in ``flow_dir`` on samples by forward KL; ``nproc`` > 1
    runs DDP (gloo on CPU, nccl on CUDA). Returns the training history."""
    import numpy as np

    from alflow.flows import BoltzmannGenerator, train_flow, train_flow_distributed
    from alflow.threads import size_thread_pools

    size_thread_pools()

    bg = BoltzmannGenerator.load(flow_dir)
    if nproc > 1:
        _, hist = train_flow_distributed(bg, flow_dir, nproc, np.asarray(samples),
                                         config=config, device=device)
        return hist
    hist = train_flow(bg, np.asarray(samples), config=config)
    bg.save(flow_dir)
    return hist


@python_app(executors=["gpu"])
def mcmc_app(potential: Any, numbers: Any, flow_dir: str | None, x0: Any, temperature_k: float,
             config: dict[str, Any] | None = None, wall_radius: float | None = None,
             masses: Any = None) -> dict[str, Any]:
    """Adaptive MCMC from walkers x0 (``potential``: a Potential or an MLIP model directory
    for atoms ``numbers``); returns the summary and the production positions/energies."""
    import numpy as np

    from alflow.flows import BoltzmannGenerator, train_flow
    from alflow.sampling.mcmc import adaptive_mcmc
    from alflow.states import wall
    from alflow.threads import size_thread_pools

    size_thread_pools()

    if isinstance(potential, str):
        from alflow.mlip import load_potential

        potential = load_potential(potential, np.asarray(numbers))
    bg = BoltzmannGenerator.load(flow_dir) if flow_dir else None
    res = adaptive_mcmc(potential, bg, np.asarray(x0), temperature_k, config,
                        restrict=wall(wall_radius, masses) if wall_radius else None,
                        retrain=lambda d, c: train_flow(bg, d, config=c))
    if bg is not None and flow_dir:
        bg.save(flow_dir)
    return {**res.summary(), "positions": res.positions, "energy": res.energy}


@python_app(executors=["cpu"])
def delta_f_app(from_state: dict[str, Any], to_state: dict[str, Any]) -> dict[str, Any]:
    """ΔF = F(to) − F(from) from two ``free_energy`` dicts (FreeEnergy.to_dict)."""
    from alflow.estimate import FreeEnergy, delta_f

    return delta_f(FreeEnergy(**from_state), FreeEnergy(**to_state)).to_dict()
