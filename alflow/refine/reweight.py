"""Reweighting of static averages to new parameters (DiffTRe), with its effective sample size.

NVT samples x_s drawn at reference parameters θ₀ give averages at nearby θ by
``⟨A⟩_θ = Σ_s w_s A(x_s)``, ``w_s ∝ exp(−[U_θ(x_s) − U_θ₀(x_s)] / kT)``. The weights are
differentiable in θ, so ∂⟨A⟩/∂θ needs no trajectory gradient. The estimate degrades as θ
moves away: :func:`ess_fraction` (Kish's effective sample size over the number of samples)
tells when to simulate anew.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from alflow.periodic import PairList, pair_distances, pair_list
from alflow.refine.potential import TrainableLJ


@dataclass
class Ensemble:
    """S = F·R NVT samples of R replicas stored as what the energy needs: pair distances
    ``r`` (P,) Å within the cutoff and their configuration ``batch`` (P,); ``replica`` (S,);
    ``u_ref`` (S,) eV at the reference parameters; ``kt`` eV; ``values`` holds per-sample
    observables, e.g. ``values["rdf"]`` (S, M); ``frames`` (S, N, 3) Å, ``cell``
    (S, 3, 3) Å and the pair lists of each chunk of frames (first, end, pairs) are kept
    for potentials that need whole configurations."""

    r: torch.Tensor
    batch: torch.Tensor
    replica: torch.Tensor
    n_replicas: int
    u_ref: torch.Tensor
    kt: float
    values: dict[str, torch.Tensor]
    n_atoms: int = 1
    frames: torch.Tensor | None = None
    cell: torch.Tensor | None = None
    chunks: list[tuple[int, int, PairList]] | None = None

    @property
    def n_samples(self) -> int:
        return self.replica.shape[0]


def make_ensemble(model: TrainableLJ, frames: torch.Tensor, cell: torch.Tensor, kt: float,
                  values: dict[str, torch.Tensor], chunk: int = 64) -> Ensemble:
    """An :class:`Ensemble` of NVT frames (F, R, N, 3) Å in one cell (3, 3) Å at the model's
    current parameters; ``values`` are per-sample observables with leading axis F·R."""
    f, r = frames.shape[:2]
    x = frames.reshape(f * r, *frames.shape[2:])
    cells = cell.expand(x.shape[0], 3, 3)
    ds, bs, chunks = [], [], []
    with torch.no_grad():
        for lo in range(0, x.shape[0], chunk):
            pairs = pair_list(x[lo:lo + chunk], cells[lo:lo + chunk], model.cutoff)
            ds.append(pair_distances(x[lo:lo + chunk], cells[lo:lo + chunk], pairs))
            bs.append(pairs.batch + lo)
            chunks.append((lo, min(lo + chunk, x.shape[0]), pairs))
    replica = torch.arange(r).repeat(f)
    ens = Ensemble(torch.cat(ds), torch.cat(bs), replica, r, torch.zeros(0), kt, values,
                   frames.shape[2], x, cells, chunks)
    with torch.no_grad():
        ens.u_ref = model.sample_energies(ens).detach()
    return ens


def log_weights(model: TrainableLJ, ens: Ensemble, u: torch.Tensor | None = None
                ) -> torch.Tensor:
    """Normalised log-weights (S,) of the samples at the model's current parameters
    (differentiable in them); ``u``: the samples' energies (S,) eV if already computed."""
    u = model.sample_energies(ens) if u is None else u
    lw = -(u - ens.u_ref) / ens.kt
    return lw - torch.logsumexp(lw, 0)


def ess_fraction(logw: torch.Tensor) -> float:
    """Kish effective sample size (Σw)²/Σw² divided by the number of samples, in (0, 1]."""
    lw = logw.detach()
    return float(torch.exp(2 * torch.logsumexp(lw, 0) - torch.logsumexp(2 * lw, 0))
                 / lw.shape[0])


def energy_per_atom(model: TrainableLJ, ens: Ensemble, u: torch.Tensor | None = None
                    ) -> torch.Tensor:
    """Potential energy per atom (S,) eV of the samples at the model's current parameters
    (differentiable in them); ``u`` as in :func:`log_weights`."""
    return (model.sample_energies(ens) if u is None else u) / ens.n_atoms


def weighted_average(ens: Ensemble, values: str | torch.Tensor, logw: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Reweighted mean of ``ens.values[values]`` or of per-sample ``values`` (S, ...) (both
    differentiable) and its standard error from the spread of the R replicas' own reweighted
    means (std / √R)."""
    a = ens.values[values] if isinstance(values, str) else values
    scalar = a.dim() == 1
    a = a[:, None] if scalar else a
    w = logw.exp()
    mean = (w[:, None] * a).sum(0)
    with torch.no_grad():
        per = []
        for k in range(ens.n_replicas):
            sel = ens.replica == k
            wk = torch.softmax(logw.detach()[sel], 0)
            per.append((wk[:, None] * a[sel].detach()).sum(0))
        err = torch.stack(per).std(0) / math.sqrt(ens.n_replicas)
    return (mean[0], err[0]) if scalar else (mean, err)
