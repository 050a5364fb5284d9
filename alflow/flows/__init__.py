"""Boltzmann generators: rigid-body-free coordinates, coupling flows, training.

- :mod:`alflow.flows.coordinates`: Z-matrix and three-atom-frame coordinates with exact
  log-Jacobians; permutation handling; point-group symmetry.
- :mod:`alflow.flows.model`: :class:`CouplingFlow` (RQS / affine couplings, circular splines).
- :mod:`alflow.flows.generator`: :class:`BoltzmannGenerator` (coordinates + flow, save/load).
- :mod:`alflow.flows.train`: :func:`train_flow` (forward / reverse / mixed KL, DDP).
- :mod:`alflow.flows.estimate`: :func:`flow_free_energy` (importance sampling, optionally
  annealed) and :func:`flow_bar_free_energy` (BAR against samples of the state).
- :mod:`alflow.flows.pipeline`: :func:`free_energy_difference` — from a potential, reference
  structures and seed samples to ΔF ± error in one call.
"""

from alflow.flows.generator import BoltzmannGenerator
from alflow.flows.model import CouplingFlow, FlowConfig
from alflow.flows.train import TrainConfig, train_flow, train_flow_distributed

__all__ = ["BoltzmannGenerator", "CouplingFlow", "FlowConfig", "TrainConfig", "train_flow",
           "train_flow_distributed"]
