"""The density of a crystal flow over whitened lattice coordinates z = (z_ρ, z_c): alflow's
coupling flow followed by a layer that scales the displacements with the cell.

A crystal's vibrations soften as it expands: the displacements' spread depends on the
volume and shape of the cell (Grüneisen), which a Gaussian over (ρ, c) cannot hold and
coupling layers with random splits learn slowly. :class:`CellScale` is an affine map of
the displacements conditioned on the cell coordinates alone,

    z_ρ = u_ρ · e^{a(z_c)} + b(z_c),     z_c = u_c,

a(·), b(·) (n_disp,) from a small MLP of z_c (zero at initialisation: the identity). With
the upper-triangular whitening of :func:`alflow.solids.flows.gaussian_fit`, z_c is a
coordinate of the cell itself. :class:`CrystalCouplingFlow` is
:class:`alflow.flows.model.CouplingFlow` then :class:`CellScale`, with the CouplingFlow's
interface (``log_prob``, ``rsample``, ``sample``, ``fit_normalisation``), so
:func:`alflow.flows.train.train_flow` trains both. Log-determinants are exact (tested
against autograd in tests/test_solids_flows.py).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from alflow.flows.model import CouplingFlow, FlowConfig
from alflow.rng import drawing_from


class CellScale(nn.Module):
    """u (B, n_disp + n_cell) -> z: displacements scaled and shifted by functions of the cell
    part (the last ``n_cell`` entries, unchanged); ``log_scale`` bounded to ±``bound``."""

    def __init__(self, n_disp: int, n_cell: int, hidden: int = 32, bound: float = 1.0):
        super().__init__()
        self.n_disp, self.n_cell, self.bound = n_disp, n_cell, bound
        self.net = nn.Sequential(nn.Linear(max(n_cell, 1), hidden), nn.SiLU(),
                                 nn.Linear(hidden, 2 * n_disp))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def _params(self, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.n_cell == 0:
            c = c.new_zeros(c.shape[0], 1)
        p = self.net(c)
        log_s = self.bound * torch.tanh(p[:, :self.n_disp] / self.bound)
        return log_s, p[:, self.n_disp:]

    def forward(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z and log |det ∂z/∂u| (B,)."""
        log_s, shift = self._params(u[:, self.n_disp:])
        z = torch.cat([u[:, :self.n_disp] * torch.exp(log_s) + shift, u[:, self.n_disp:]], -1)
        return z, log_s.sum(-1)

    def inverse(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """u and log |det ∂u/∂z| (B,)."""
        log_s, shift = self._params(z[:, self.n_disp:])
        u = torch.cat([(z[:, :self.n_disp] - shift) * torch.exp(-log_s), z[:, self.n_disp:]],
                      -1)
        return u, -log_s.sum(-1)


class CrystalCouplingFlow(nn.Module):
    """q(z) on ℝ^{n_disp + n_cell}: a :class:`CouplingFlow` (``inner``) then a
    :class:`CellScale` (``cell``); the interface of :class:`CouplingFlow`."""

    def __init__(self, n_disp: int, n_cell: int, cfg: FlowConfig | None = None,
                 cell_hidden: int = 32, init: torch.Generator | None = None):
        super().__init__()
        self.cfg = cfg or FlowConfig(transform="spline")
        dim = n_disp + n_cell
        self.dim = dim
        init = init if init is not None else torch.Generator().manual_seed(self.cfg.seed)
        self.inner = CouplingFlow(dim, torch.zeros(dim, dtype=torch.bool), self.cfg, init)
        with drawing_from(init):
            self.cell = CellScale(n_disp, n_cell, cell_hidden)

    def fit_normalisation(self, z: torch.Tensor) -> None:
        """The inner flow's per-dimension mean and scale from samples z (B, dim)."""
        with torch.no_grad():
            u, _ = self.cell.inverse(z.to(self.inner.loc))
        self.inner.fit_normalisation(u)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        u, ladj = self.cell.inverse(z)
        return self.inner.log_prob(u) + ladj

    def rsample(self, n: int, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        u, logq = self.inner.rsample(n, generator)
        z, ladj = self.cell(u)
        return z, logq - ladj

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.rsample(n, generator)

    def config(self) -> dict[str, Any]:
        return {**self.inner.config(), "cell_scale": self.cell.net[0].out_features}


__all__ = ["CellScale", "CrystalCouplingFlow"]
