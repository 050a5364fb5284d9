"""Committee machine-learned potential: built-in invariant model or MACE, trained with DDP.

Public API::

    train_committee(atoms_list, out_dir, config=None, nproc=1, init_from=None) -> Path
    load(model_dir, device="cpu") -> CommitteeCalculator  (ASE; results: energy, forces,
                                                          force_dev, energy_std)
    load_potential(model_dir, numbers, device="cpu", cell=None, pbc=None) -> CommitteePotential

See docs/mlip.md.
"""

from __future__ import annotations

from pathlib import Path

from alflow.mlip.calculator import CommitteeCalculator, CommitteePotential
from alflow.mlip.committee import Committee, committee_stats
from alflow.mlip.config import BuiltinModelConfig, MaceModelConfig, MLIPConfig
from alflow.mlip.train import TrainingDiverged, train_committee


def load(model_dir: str | Path, device: str = "cpu") -> CommitteeCalculator:
    """The committee in ``model_dir`` as an ASE calculator."""
    return CommitteeCalculator(Committee.load(model_dir, device))


def load_potential(model_dir: str | Path, numbers, device: str = "cpu", cell=None,
                   pbc=None) -> CommitteePotential:
    """The committee in ``model_dir`` as a batched Potential for atomic ``numbers`` (N,)."""
    return CommitteePotential(Committee.load(model_dir, device), numbers, cell=cell, pbc=pbc)


__all__ = ["BuiltinModelConfig", "Committee", "CommitteeCalculator", "CommitteePotential",
           "MLIPConfig", "MaceModelConfig", "TrainingDiverged", "committee_stats", "load",
           "load_potential", "train_committee"]
