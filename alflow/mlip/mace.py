"""MACE backend: a small ScaleShiftMACE (mace-torch) behind the same per-atom-energy interface.

The MACE model is built from code (no MACE CLI) with zero atomic energies, scale 1 and
shift 0; the shared :class:`~alflow.mlip.model.EnergyModel` adds the fitted reference
energies, scale and shift, so both backends train, save and evaluate the same way.
Forces come from autograd of the energy (MACE is called with ``compute_force=False``).
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

from alflow.errors import ConfigError
from alflow.mlip.config import MaceModelConfig
from alflow.mlip.graph import DenseBatch, GraphBatch, dense_to_graph

_NO_WEIGHTS_ONLY = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"


class MaceCore(nn.Module):
    """Per-atom MACE interaction energies of a Dense- (B, N) or GraphBatch (Ntot,)."""

    def __init__(self, cfg: MaceModelConfig, atomic_numbers: list[int], cutoff: float,
                 avg_num_neighbors: float):
        super().__init__()
        import importlib

        # mace first: it makes e3nn's bundled constants loadable under torch>=2.6's
        # torch.load(weights_only=True) default (importing e3nn.o3 first fails) by setting
        # TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD for the whole process; that switch is put back once
        # e3nn has read its own constants, so no later load (nor a subprocess) inherits it.
        before = os.environ.get(_NO_WEIGHTS_ONLY)
        from mace import modules

        o3 = importlib.import_module("e3nn.o3")
        if before is None:
            os.environ.pop(_NO_WEIGHTS_ONLY, None)
        else:
            os.environ[_NO_WEIGHTS_ONLY] = before

        self.n_species = len(atomic_numbers)
        try:
            hidden = o3.Irreps(cfg.hidden_irreps)
            mlp = o3.Irreps(cfg.mlp_irreps)
        except (ValueError, AssertionError) as err:
            raise ConfigError(f"mlip.mace: bad irreps string: {err}") from None
        self.mace = modules.ScaleShiftMACE(
            atomic_inter_scale=1.0, atomic_inter_shift=0.0,
            r_max=cutoff, num_bessel=cfg.num_bessel,
            num_polynomial_cutoff=cfg.num_polynomial_cutoff, max_ell=cfg.max_ell,
            interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
            interaction_cls_first=modules.interaction_classes["RealAgnosticInteractionBlock"],
            num_interactions=cfg.num_interactions, num_elements=self.n_species,
            hidden_irreps=hidden, MLP_irreps=mlp,
            atomic_energies=np.zeros(self.n_species), avg_num_neighbors=avg_num_neighbors,
            atomic_numbers=list(atomic_numbers), correlation=cfg.correlation,
            gate=torch.nn.functional.silu, radial_MLP=list(cfg.radial_mlp))

    def forward(self, batch: DenseBatch | GraphBatch) -> torch.Tensor:
        g = dense_to_graph(batch) if isinstance(batch, DenseBatch) else batch
        dtype = g.positions.dtype
        node_attrs = torch.nn.functional.one_hot(g.species, self.n_species).to(dtype)
        counts = torch.bincount(g.batch, minlength=g.n_graphs)
        ptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
        data = {"positions": g.positions, "node_attrs": node_attrs,
                "edge_index": torch.stack([g.edge_i, g.edge_j]), "shifts": g.shifts,
                "unit_shifts": g.unit_shifts, "cell": g.cell.reshape(-1, 3), "batch": g.batch,
                "ptr": ptr}
        out = self.mace(data, training=True, compute_force=False)
        node = out["node_energy"].to(dtype)
        if isinstance(batch, DenseBatch):
            return node.reshape(batch.positions.shape[:2])
        return node


__all__ = ["MaceCore"]
