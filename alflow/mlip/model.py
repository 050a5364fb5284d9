"""The built-in invariant message-passing potential, and the energy wrapper both backends share.

Built-in model (a compact relative of SchNet/PaiNN/ACE, written for small clusters):

* edge (i -> j), vector r_ij = x_j - x_i (+ cell shift), length r, unit vector u;
* radial basis: ``n_rbf`` Bessel functions sin(k pi r / rc) / r; the radial filter MLP's
  output is multiplied by a smooth polynomial envelope (DimeNet) that vanishes with its
  derivatives at the cutoff rc;
* node features h_i (``features`` channels) start as element embeddings;
* each layer: filters W(r_ij) (linear maps of radial features shared by all layers:
  SiLU(Linear(Bessel)) times the envelope) times a linear map of h_j give messages m_ij;
  per atom the scalar sum s_i = sum_j m_ij and the angular moments
  A_i^(l) = sum_j m_ij Y_l(u_ij) for l = 1 (u) and l = 2 (u u^T) are formed, and the
  rotation invariants |A^(1)|^2, |A^(2)|^2 (three-body: sum_jk m_j m_k cos^l theta_jk) join
  s_i in an MLP update h_i += MLP([s, |A1|^2, |A2|^2]);
* per-atom energy: readout MLP of h_i, times ``scale`` plus ``shift``, plus a fitted
  per-element reference energy e0[Z_i] (kept in float64).

Invariance is by construction (only lengths, dot products and sums enter); forces are
``-dE/dx`` by autograd. Two layouts share one code path through :class:`_Pairs`: dense
(B, N, N) all-pairs tensors for batches of same-size clusters (fast, no neighbour list) and a
flattened edge list for periodic cells or mixed sizes.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from alflow.mlip.config import BuiltinModelConfig, MLIPConfig
from alflow.mlip.graph import DenseBatch, GraphBatch
from alflow.rng import drawing_from


def envelope(x: torch.Tensor, p: int) -> torch.Tensor:
    """Smooth cutoff polynomial of x = r / rc: 1 at 0, 0 with p-th order smoothness at 1."""
    a = (p + 1) * (p + 2) / 2
    b = p * (p + 2)
    c = p * (p + 1) / 2
    xc = x.clamp(max=1.0)  # the polynomial is exactly 0 at 1, and clamp stops the gradient
    return 1 + xc**p * (xc * (b - c * xc) - a)


class BesselBasis(nn.Module):
    """Bessel radial basis (n_rbf,) times the envelope; input r (...) Å -> (..., n_rbf)."""

    def __init__(self, cutoff: float, n_rbf: int, p: int):
        super().__init__()
        self.cutoff = cutoff
        self.p = p
        self.register_buffer("freq", torch.arange(1, n_rbf + 1) * math.pi / cutoff)
        self.norm = math.sqrt(2.0 / cutoff)

    def forward(self, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Basis (..., n_rbf) and envelope (...) of lengths r (...)."""
        env = envelope(r / self.cutoff, self.p)
        rbf = torch.sin(r[..., None] * self.freq) * (self.norm / r)[..., None]
        return rbf, env


def _angular(u: torch.Tensor, max_l: int) -> torch.Tensor:
    """Angular functions of unit vectors u (..., 3) -> (..., 3) or (..., 9): l=1 components,
    then the 6 independent components of u u^T scaled so their squared sum is |u u^T|_F^2."""
    if max_l == 1:
        return u
    x, y, z = u.unbind(-1)
    s2 = math.sqrt(2.0)
    q = torch.stack([x * x, y * y, z * z, s2 * x * y, s2 * x * z, s2 * y * z], dim=-1)
    return torch.cat([u, q], dim=-1)


@functools.lru_cache(maxsize=64)
def _dense_index(n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Index buffers of the dense layout of N atoms (cached per N and device).

    ``radial`` (P + 1,): flat (i * N + j) indices of the P = N(N-1)/2 pairs i < j, then of
    (0, 0), a stand-in for the diagonal whose filters are masked to zero; ``mask`` (P + 1,)
    is 1 for the pairs, 0 for the stand-in; ``expand`` (N * N,): for each ordered (i, j) the
    row of its unordered pair (P on the diagonal)."""
    iu, ju = torch.triu_indices(n, n, 1)
    p = len(iu)
    expand = torch.full((n, n), p, dtype=torch.long)
    expand[iu, ju] = torch.arange(p)
    expand[ju, iu] = torch.arange(p)
    radial = torch.cat([iu * n + ju, torch.zeros(1, dtype=torch.long)])
    mask = torch.cat([torch.ones(p), torch.zeros(1)])
    return radial.to(device), mask.to(device), expand.reshape(-1).to(device)


class _Pairs:
    """Pair geometry and the aggregation ops in either layout.

    Radial filters depend on |r_ij| only, so they are computed on ``r`` (``radial pairs``)
    and mapped to the directed pairs of the messages by :meth:`expand`.
    Dense: radial pairs (B, P + 1) are the unordered pairs i < j once each (and a masked
    stand-in for the diagonal); pair tensors (B, N, N, ...), node tensors (B, N, ...).
    Graph: radial pairs and pair tensors are the edges (E, ...), node tensors (Ntot, ...).
    """

    def __init__(self, batch: DenseBatch | GraphBatch):
        x = batch.positions
        if isinstance(batch, DenseBatch):
            b, n = x.shape[:2]
            sel, mask, self.expand_index = _dense_index(n, x.device)
            vec = x[:, None, :, :] - x[:, :, None, :]  # [b, i, j] = x_j - x_i
            eye = torch.eye(n, dtype=x.dtype, device=x.device)
            r = torch.sqrt((vec * vec).sum(-1) + eye)  # diagonal set to 1 (masked)
            self.r = r.reshape(b, n * n).index_select(1, sel)
            self.mask = mask.to(x.dtype)
            self.shape = (b, n, n)
            self.dense = True
        else:
            vec = x[batch.edge_j] - x[batch.edge_i] + batch.shifts
            r = self.r = torch.sqrt((vec * vec).sum(-1))
            self.mask = None
            self.dense = False
            self.edge_i = batch.edge_i
            self.edge_j = batch.edge_j
            self.n_nodes = x.shape[0]
        self.u = vec / r[..., None]

    def expand(self, w: torch.Tensor) -> torch.Tensor:
        """Filters of the radial pairs (..., F) -> of the directed pairs (..pairs.., F)."""
        if not self.dense:
            return w
        return w.index_select(1, self.expand_index).reshape(*self.shape, w.shape[-1])

    def gather_j(self, h: torch.Tensor) -> torch.Tensor:
        return h[:, None, :, :] if self.dense else h[self.edge_j]

    def sum_j(self, m: torch.Tensor) -> torch.Tensor:
        """Sum pair tensors over neighbours j: (..pairs.., F) -> (..nodes.., F)."""
        if self.dense:
            return m.sum(2)
        out = m.new_zeros((self.n_nodes, *m.shape[1:]))
        return out.index_add_(0, self.edge_i, m)

    def moments(self, ang: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """sum_j ang_ij[a] m_ij[f] -> (..nodes.., A, F)."""
        if self.dense:
            return torch.einsum("bija,bijf->biaf", ang, m)
        out = m.new_zeros((self.n_nodes, ang.shape[-1], m.shape[-1]))
        return out.index_add_(0, self.edge_i, ang[:, :, None] * m[:, None, :])


def _mlp(n_in: int, n_hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, n_hidden), nn.SiLU(), nn.Linear(n_hidden, n_out))


class Interaction(nn.Module):
    """One message-passing layer: scalar sum and angular invariants of filtered messages.

    The filters (scalar ``ws`` and angular ``wv``, F channels per pair) are linear maps of
    the radial features shared by all layers (the hidden layer of one radial MLP, already
    multiplied by the cutoff envelope, so filters vanish smoothly at the cutoff)."""

    def __init__(self, cfg: BuiltinModelConfig):
        super().__init__()
        f = cfg.features
        self.max_l = cfg.max_l
        self.lin = nn.Linear(f, 2 * f, bias=False)
        self.filter_s = nn.Linear(cfg.radial_hidden, f, bias=False)
        self.filter_v = nn.Linear(cfg.radial_hidden, f, bias=False)
        self.update = _mlp((1 + cfg.max_l) * f, f, f)

    def forward(self, h: torch.Tensor, radial: torch.Tensor, ang: torch.Tensor,
                pairs: _Pairs, inv_neigh: float) -> torch.Tensor:
        ws = pairs.expand(self.filter_s(radial))
        wv = pairs.expand(self.filter_v(radial))
        # 1/<neighbours> on the node features, the smallest tensor it can multiply
        xs, xv = F.linear(h, self.lin.weight * inv_neigh).chunk(2, dim=-1)
        s = pairs.sum_j(ws * pairs.gather_j(xs))
        a = pairs.moments(ang, wv * pairs.gather_j(xv))
        if self.max_l >= 2:
            a1, a2 = a.split([3, 6], dim=-2)
            inv = [s, a1.square().sum(-2), a2.square().sum(-2)]
        else:
            inv = [s, a.square().sum(-2)]
        return h + self.update(torch.cat(inv, dim=-1))


class BuiltinCore(nn.Module):
    """Per-atom interaction energies (before scale/shift) of a Dense- or GraphBatch."""

    def __init__(self, cfg: BuiltinModelConfig, n_species: int, cutoff: float,
                 avg_num_neighbors: float):
        super().__init__()
        self.cutoff = cutoff
        self.max_l = cfg.max_l
        self.inv_neigh = 1.0 / max(avg_num_neighbors, 1.0)
        self.embed = nn.Embedding(n_species, cfg.features)
        self.rbf = BesselBasis(cutoff, cfg.n_rbf, cfg.envelope_p)
        self.radial = nn.Sequential(nn.Linear(cfg.n_rbf, cfg.radial_hidden), nn.SiLU())
        self.layers = nn.ModuleList(Interaction(cfg) for _ in range(cfg.layers))
        self.readout = _mlp(cfg.features, cfg.readout_hidden, 1)

    def forward(self, batch: DenseBatch | GraphBatch) -> torch.Tensor:
        pairs = _Pairs(batch)
        rbf, cut = self.rbf(pairs.r)
        if pairs.mask is not None:
            cut = cut * pairs.mask
        ang = _angular(pairs.u, self.max_l)
        species = batch.species_2d() if isinstance(batch, DenseBatch) else batch.species
        h = self.embed(species)
        radial = self.radial(rbf) * cut[..., None]
        for layer in self.layers:
            h = layer(h, radial, ang, pairs, self.inv_neigh)
        return self.readout(h).squeeze(-1)


class EnergyModel(nn.Module):
    """Total energy = sum_i (e0[Z_i] + scale * core_i + shift), for either backend's core.

    ``atomic_numbers`` (S,) lists the elements the model knows; batches carry indices into it
    (see :meth:`species_index`). ``e0`` (S,) eV is float64; ``forward`` returns the
    interaction part (B,) in the model dtype, :meth:`total_energy` adds the reference part.
    """

    def __init__(self, core: nn.Module, atomic_numbers: list[int], e0: list[float],
                 scale: float, shift: float):
        super().__init__()
        self.core = core
        self.register_buffer("atomic_numbers", torch.tensor(atomic_numbers, dtype=torch.long))
        self.register_buffer("e0", torch.tensor(e0, dtype=torch.float64))
        self.register_buffer("scale", torch.tensor(float(scale)))
        self.register_buffer("shift", torch.tensor(float(shift)))

    def _apply(self, fn, recurse=True):  # keep e0 in float64 under .to(dtype)/.float()
        e0 = self.e0
        out = super()._apply(fn, recurse)
        self.e0 = e0.to(self.scale.device)
        return out

    def species_index(self, numbers) -> torch.Tensor:
        """Atomic numbers (...,) -> indices into ``atomic_numbers``; unknown Z raises."""
        z = torch.as_tensor(numbers, dtype=torch.long, device=self.atomic_numbers.device)
        match = z[..., None] == self.atomic_numbers
        if not bool(match.any(-1).all()):
            from alflow.errors import InputError

            known = self.atomic_numbers.tolist()
            bad = sorted(set(z[~match.any(-1)].tolist()))
            raise InputError(f"atomic numbers {bad} are not in the model (trained on {known})")
        return match.long().argmax(-1)

    def forward(self, batch: DenseBatch | GraphBatch) -> torch.Tensor:
        """Interaction energy (B,) eV (without the reference energies)."""
        node = self.core(batch) * self.scale + self.shift
        if isinstance(batch, DenseBatch):
            return node.sum(-1)
        out = node.new_zeros(batch.n_graphs)
        return out.index_add_(0, batch.batch, node)

    def reference_energy(self, batch: DenseBatch | GraphBatch) -> torch.Tensor:
        """Sum of per-element reference energies (B,) eV, float64."""
        if isinstance(batch, DenseBatch):
            return self.e0[batch.species_2d()].sum(-1)
        out = self.e0.new_zeros(batch.n_graphs)
        return out.index_add_(0, batch.batch, self.e0[batch.species])

    def total_energy(self, batch: DenseBatch | GraphBatch) -> torch.Tensor:
        """Total energy (B,) eV in float64."""
        return self.forward(batch).double() + self.reference_energy(batch)


def build_model(cfg: MLIPConfig, stats: dict, init: torch.Generator | None = None
                ) -> EnergyModel:
    """An EnergyModel of ``cfg.backend`` in ``cfg.dtype`` from data statistics ``stats``
    (keys: atomic_numbers, e0 eV, scale eV, shift eV, avg_num_neighbors), its initial weights
    drawn from ``init`` (default: a generator seeded with ``cfg.seed``), never from torch's
    global generator."""
    z = [int(v) for v in stats["atomic_numbers"]]
    with drawing_from(init if init is not None else torch.Generator().manual_seed(cfg.seed)):
        if cfg.backend == "mace":
            from alflow.mlip.mace import MaceCore

            core: nn.Module = MaceCore(cfg.mace, z, cfg.cutoff, stats["avg_num_neighbors"])
        else:
            core = BuiltinCore(cfg.builtin, len(z), cfg.cutoff, stats["avg_num_neighbors"])
    model = EnergyModel(core, z, stats["e0"], stats["scale"], stats["shift"])
    return model.to(getattr(torch, cfg.dtype))


__all__ = ["BesselBasis", "BuiltinCore", "EnergyModel", "Interaction", "build_model",
           "envelope"]
