"""Coupling layers that see each atom's lattice neighbours: the local, pairwise anharmonicity
of a crystal that coupling layers on whitened (globally mixed) coordinates learn slowly.

After the whitened flow (:class:`alflow.solids.cell_flow.CrystalCouplingFlow`, the harmonic
crystal at initialisation) the sample is mapped back to the raw lattice coordinates
y = μ + Cz (:class:`alflow.solids.flows.CrystalCoordinates`: displacements ρ (N − 1, 3) of
atoms 1.. relative to atom 0, and the cell coordinates c), transformed there by
:class:`LocalCoupling` layers, and whitened again, z' = C⁻¹(y' − μ); the linear maps' log-
determinants cancel, so the density of z' is exact and the coordinates' interface unchanged.

Each :class:`LocalCoupling` splits the 3(N − 1) displacement entries (atom, Cartesian
component) in two by a fixed random mask, over whole atoms (a neighbour's displacement is then
seen whole) or over single entries (an atom's other components seen too); the next layer
takes the complement, and ``split: both`` alternates the two kinds by pairs. It moves the
hidden entries of atom i by a monotonic rational-quadratic spline (identity tails; zuko's
``MonotonicRQSTransform``) in units of their harmonic spread s, whose parameters come from a
message-passing conditioner over i's lattice neighbours j (the first shell of the reference
lattice, periodic images included): a message MLP of the visible parts of ρ_j and ρ_i, the
masks, the bond direction b̂_ij and the visible bond stretch (ρ_j − ρ_i)·b̂_ij, averaged over
the neighbours, then a node MLP with i's own visible entries and the cell coordinates. The
weights are shared by all atoms and the neighbours enter through a mean, so the conditioner
is permutation-equivariant over the lattice (Wirnsberger et al., "Normalizing flows for
atomic solids", Mach. Learn.: Sci. Technol. 3, 025009 (2022), with a graph in place of their
transformer). Atom 0 sits on its site (ρ₀ = 0) and is a visible neighbour of the others.
The last layer of each node MLP starts at zero: the untrained layers are the identity.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn
from zuko.transforms import MonotonicRQSTransform

from alflow.config import StrictModel
from alflow.errors import InputError
from alflow.rng import drawing_from


class LocalFlowConfig(StrictModel):
    """Neighbour-aware coupling layers after the whitened flow (0 layers: none)."""

    layers: int = Field(4, ge=0, description="local coupling layers (pairs of complementary "
                                             "masks for an even number)")
    hidden: int = Field(32, ge=4, description="width of the message and node MLPs")
    bins: int = Field(8, ge=2, description="spline bins")
    bound: float = Field(4.0, gt=0, description="spline interval, in harmonic spreads s")
    shell: float = Field(1.2, gt=1.0, description="neighbours: sites within this factor of "
                                                   "the nearest-neighbour distance")
    split: Literal["atoms", "components", "both"] = Field(
        "both", description="masks over whole atoms, single entries, or pairs of each in turn")
    seed: int = Field(0, description="seed of the masks and initial weights")


def lattice_neighbours(frac0: np.ndarray, cell0: np.ndarray, shell: float = 1.2
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Neighbours of every site (N, 3 fractional) of the lattice ``cell0`` (3, 3) Å within
    ``shell`` times the nearest-neighbour distance, periodic images included: indices (N, K)
    (padded with the site itself), bond vectors b_ij = site_j − site_i (N, K, 3) Å and a mask
    (N, K) of the real entries."""
    n = len(frac0)
    d = frac0[None, :, :] - frac0[:, None, :]
    d = d - np.round(d)
    shifts = np.array([[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)])
    vec = (d[:, :, None, :] + shifts[None, None]) @ cell0  # (N, N, 27, 3)
    dist = np.linalg.norm(vec, axis=-1)
    dist[np.arange(n), np.arange(n)] = np.inf  # no bonds to oneself (nor own images)
    r_nn = dist.min()
    near = dist < shell * r_nn
    k = int(near.sum((1, 2)).max())
    idx = np.tile(np.arange(n)[:, None], (1, k))
    bonds = np.zeros((n, k, 3))
    mask = np.zeros((n, k), bool)
    for i in range(n):
        j, s = np.nonzero(near[i])
        idx[i, :len(j)], bonds[i, :len(j)], mask[i, :len(j)] = j, vec[i, j, s], True
    return idx, bonds, mask


class LocalCoupling(nn.Module):
    """One coupling layer on y (B, n_disp + n_cell): the hidden displacement entries (``keep``
    False, (N − 1, 3)) by splines conditioned on the visible ones through the lattice graph."""

    def __init__(self, keep: torch.Tensor, graph: dict[str, torch.Tensor], n_cell: int,
                 cfg: LocalFlowConfig):
        super().__init__()
        self.cfg, self.n_cell = cfg, n_cell
        full = torch.cat([torch.ones(1, 3, dtype=torch.bool), keep])  # atom 0: on its site
        self.register_buffer("vis", full.double())
        self.register_buffer("trans", ~keep)
        for name, t in graph.items():
            self.register_buffer(name, t)
        h, k = cfg.hidden, cfg.bins
        self.n_par = 3 * k - 1
        self.msg = nn.Sequential(nn.Linear(16, h), nn.SiLU(), nn.Linear(h, h), nn.SiLU())
        self.node = nn.Sequential(nn.Linear(h + 6 + n_cell, h), nn.SiLU(),
                                  nn.Linear(h, 3 * self.n_par))
        nn.init.zeros_(self.node[-1].weight)
        nn.init.zeros_(self.node[-1].bias)

    def _params(self, u: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Spline parameters (B, N − 1, 3, n_par) from the visible part of the scaled
        displacements u (B, N, 3; row 0 atom 0) and normalised cell coordinates c."""
        b, n = u.shape[0], u.shape[1]
        uv = u * self.vis
        vis = self.vis.expand(b, n, 3)
        uj, vj = uv[:, self.nbr], vis[:, self.nbr]  # (B, N, K, 3)
        ui = uv[:, :, None].expand_as(uj)
        vi = vis[:, :, None].expand_as(uj)
        bhat = self.bhat.expand_as(uj)
        stretch = ((uj - ui) * vi * vj * bhat).sum(-1, keepdim=True)
        feats = torch.cat([uj, vj, ui, vi, bhat, stretch], -1)
        m = self.msg(feats) * self.emask[..., None]
        agg = m.sum(2) / self.emask.sum(-1, keepdim=True)[None]  # (B, N, H)
        node_in = [agg, uv, vis]
        if self.n_cell:
            node_in.append(c[:, None, :].expand(b, n, self.n_cell))
        p = self.node(torch.cat(node_in, -1))[:, 1:]
        return p.view(b, n - 1, 3, self.n_par)

    def transform(self, y: torch.Tensor, inverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """y' and log |det ∂y'/∂y| (B,) of the layer (``inverse``: of its inverse)."""
        b = y.shape[0]
        nd = self.scale.numel()
        rho = y[:, :nd].view(b, -1, 3)
        u = torch.cat([rho.new_zeros(b, 1, 3), rho / self.scale], 1)
        c = (y[:, nd:] - self.c_loc) / self.c_scale
        p = self._params(u, c)
        k = self.cfg.bins
        t = MonotonicRQSTransform(p[..., :k], p[..., k:2 * k], p[..., 2 * k:],
                                  bound=self.cfg.bound)
        x = u[:, 1:]
        if inverse:
            out = t.inv(x)
            la = -t.log_abs_det_jacobian(out, x)
        else:
            out, la = t.call_and_ladj(x)
        out = torch.where(self.trans, out, x)
        ladj = torch.where(self.trans, la, torch.zeros_like(la)).sum((1, 2))
        return torch.cat([(out * self.scale).reshape(b, nd), y[:, nd:]], -1), ladj


class LocalCrystalFlow(nn.Module):
    """q(z) of a :class:`~alflow.solids.cell_flow.CrystalCouplingFlow` (``base``) followed by
    :class:`LocalCoupling` layers in the raw coordinates of ``coords`` (see module doc); the
    interface of the base flow (``log_prob``, ``rsample``, ``sample``, ``fit_normalisation``)."""

    def __init__(self, base: nn.Module, coords, cfg: LocalFlowConfig):
        super().__init__()
        if coords.n_atoms < 2:
            raise InputError("LocalCrystalFlow: needs at least two atoms")
        self.base, self.cfg = base, cfg
        self.__dict__["coords"] = coords  # its whitening is read live (recentre_cell moves it)
        nd, n = coords.n_disp, coords.n_atoms
        frac0 = (coords.frac_rel0 + coords.frac_site0).numpy()
        idx, bonds, emask = lattice_neighbours(frac0, coords.cell0.numpy(), cfg.shell)
        bhat = bonds / np.maximum(np.linalg.norm(bonds, axis=-1, keepdims=True), 1e-12)
        sigma = coords.chol @ coords.chol.T
        sd = torch.sqrt(torch.diagonal(sigma))
        graph = {"nbr": torch.as_tensor(idx), "bhat": torch.as_tensor(bhat),
                 "emask": torch.as_tensor(emask, dtype=torch.float64),
                 "scale": sd[:nd].view(n - 1, 3).clone(),
                 "c_loc": coords.mean[nd:].clone(), "c_scale": sd[nd:].clone()}
        g = torch.Generator().manual_seed(cfg.seed)
        weights = torch.Generator().manual_seed(cfg.seed)
        layers = []
        for i in range(cfg.layers):
            if i % 2 == 0:
                atoms = cfg.split == "atoms" or (cfg.split == "both" and i % 4 == 0)
                m = n - 1 if atoms else nd
                pick = torch.zeros(m, dtype=torch.bool)
                pick[torch.randperm(m, generator=g)[: m // 2]] = True
                keep = pick.repeat_interleave(3) if atoms else pick
            else:
                keep = ~keep
            with drawing_from(weights):
                layers.append(LocalCoupling(keep.view(n - 1, 3), graph, coords.n_cell, cfg))
        self.layers = nn.ModuleList(layers).double()

    def _raw(self, z: torch.Tensor) -> torch.Tensor:
        return self.coords.to_raw(z)

    def _white(self, y: torch.Tensor) -> torch.Tensor:
        c = self.coords
        return torch.linalg.solve_triangular(c.chol.to(y), (y - c.mean.to(y)).T,
                                             upper=c.upper).T

    def _pull_back(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The base flow's z and log |det| of the local layers' inverse (B,)."""
        y = self._raw(z)
        ladj = torch.zeros(z.shape[0], dtype=z.dtype)
        for layer in reversed(self.layers):
            y, la = layer.transform(y, inverse=True)
            ladj = ladj + la
        return self._white(y), ladj

    def fit_normalisation(self, z: torch.Tensor) -> None:
        """The base flow's normalisation from samples z (B, dim) pulled back through the
        local layers."""
        with torch.no_grad():
            z0, _ = self._pull_back(z.double())
        self.base.fit_normalisation(z0)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        z0, ladj = self._pull_back(z)
        return self.base.log_prob(z0) + ladj

    def rsample(self, n: int, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        z0, logq = self.base.rsample(n, generator)
        y = self._raw(z0)
        for layer in self.layers:
            y, la = layer.transform(y, inverse=False)
            logq = logq - la
        return self._white(y), logq

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.rsample(n, generator)

    def config(self) -> dict[str, Any]:
        return {**self.base.config(), "local": self.cfg.model_dump()}


__all__ = ["LocalCoupling", "LocalCrystalFlow", "LocalFlowConfig", "lattice_neighbours"]
