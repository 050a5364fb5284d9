"""Annealed importance sampling from a Boltzmann generator to the Boltzmann distribution.

Flow samples are carried to exp(−U/kT) through ``levels`` intermediate densities
π_k ∝ q_x^{1−t_k} · exp(−t_k U/kT), t_k = k/K, each followed by ``mala_steps`` MALA steps that
leave π_k invariant (Neal 2001; with a flow as the start: stochastic normalizing flows, Wu,
Köhler & Noé 2020; annealed flow transport, Arbel et al. 2021). With ℓ(x) = −U(x)/kT − log q_x(x),

    log w = Σ_{k=1..K} (t_k − t_{k−1}) ℓ(x_{k−1}),    E[w f(x_K)] = ∫ e^{−U/kT} f   exactly,

so ``f = 1_S`` gives the state's partition function whatever the flow's quality; the moves only
lower the variance of w (a higher ESS). With ``confine`` the densities are restricted to the
state, π_k·1_S: a level's MALA steps are one composite move, undone when it ends outside S
(reversible w.r.t. π_k·1_S because the m-step MALA kernel is reversible w.r.t. π_k). Without
it walkers that wander out of a shallow basin are lost at the end, which biases Z_S low by
about the fraction lost. Every walker is also kept in the flow's own labelling cell, with or
without ``confine`` (a cheap vectorised check, no quench): its optimal assignment of like
atoms to the reference must be one of the σ labellings the flow was trained on. F_S
integrates over one labelled copy of the state, and the quench basin of a state holds all
its permutational copies, some of them one low saddle away (lj7's coh copies
at 18 K). A walker that crosses into another copy meets q_x ≈ 0 there and carries an
enormous weight (measured: one of 6000 walkers of 100 levels × 4 MALA steps held 58 % of the
weight, ESS 0.0005, F 0.85 kT low). ``levels = 0`` is plain importance sampling
(log w = ℓ(x₀)). The moves are Cartesian MALA steps on all 3N coordinates: both densities are
rigid-body invariant, so the marginal on the 3N−6 internal coordinates is the annealed one.
Proposals outside ``restrict`` (the hard wall) or the coordinates' domain are rejected.
The step size (Å) adapts between levels toward ``target_accept`` from the population's
acceptance, as in adaptive sequential Monte Carlo.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from pydantic import Field

from alflow.config import StrictModel
from alflow.flows.coordinates import canonical_permutation
from alflow.potential import Potential, evaluate

Predicate = Callable[[torch.Tensor], torch.Tensor]


class AnnealConfig(StrictModel):
    """Annealing from the flow to the Boltzmann distribution (0 levels: plain IS)."""

    levels: int = Field(0, ge=0, description="intermediate densities (0: none)")
    mala_steps: int = Field(2, ge=1, description="MALA steps per level")
    step_size: float = Field(0.02, gt=0, description="initial MALA step (Å)")
    target_accept: float = Field(0.6, gt=0, lt=1)
    confine: bool = Field(True, description="keep walkers in the state: after each level's "
                          "MALA steps a walker outside it returns to where the level began "
                          "(one state check per level, e.g. a quench); walkers are always "
                          "kept in the flow's labelling cell")


def own_cell(bg, x: torch.Tensor) -> torch.Tensor:
    """(B,) bool: x (B, N, 3) Å lies in the flow's labelling cell, i.e. its optimal assignment
    of like atoms to the reference is one of the generator's σ symmetric labellings.

    Fast path (vectorised): after a Kabsch alignment in the given labelling, every atom within
    a quarter of the reference's shortest like-atom distance of its own site makes the given
    labelling the optimal one (as in :func:`canonical_permutation`); the rest are assigned."""
    coords = getattr(bg, "coords", None)
    if coords is None or getattr(bg, "symmetry_perms", None) is None:
        return torch.ones(x.shape[0], dtype=torch.bool)
    ref = torch.as_tensor(np.asarray(coords.reference, dtype=float))
    ref = ref - ref.mean(0)
    numbers = np.asarray(coords.numbers)
    y = x.detach().double()
    y = y - y.mean(-2, keepdim=True)
    u, _, vt = torch.linalg.svd(y.transpose(-1, -2) @ ref)
    d = torch.sign(torch.linalg.det(u @ vt))
    r = u @ torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], -1)) @ vt
    dev = ((y @ r - ref) ** 2).sum(-1).sqrt().amax(-1)
    dist = torch.cdist(ref, ref)
    like = torch.as_tensor((numbers[:, None] == numbers[None]) & ~np.eye(len(numbers), dtype=bool))
    lim = 0.25 * float(dist[like].min()) if like.any() else float("inf")
    ident = np.arange(len(numbers))
    perms = {tuple(int(i) for i in p) for p in np.asarray(bg.symmetry_perms)}
    inside = dev < lim
    if tuple(ident) not in perms:
        inside = torch.zeros_like(inside)
    todo = torch.nonzero(~inside).flatten()
    if len(todo):
        p = canonical_permutation(y[todo].numpy(), ref.numpy(), numbers)
        inside[todo] = torch.as_tensor([tuple(int(i) for i in q) in perms for q in p])
    return inside


def _log_q_and_grad(bg, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log q_x (B,) and its gradient (B, N, 3) 1/Å; −inf and 0 outside the domain."""
    xg = x.detach().clone().requires_grad_(True)
    lq = bg.log_prob(xg)
    fin = torch.isfinite(lq)
    (g,) = torch.autograd.grad(torch.where(fin, lq, torch.zeros_like(lq)).sum(), xg)
    return lq.detach(), torch.where(fin[:, None, None], g, torch.zeros_like(g))


def anneal(bg, potential: Potential, beta: float, x: torch.Tensor, log_q: torch.Tensor,
           ok: torch.Tensor, config: AnnealConfig, restrict: Predicate | None = None,
           member: Predicate | None = None, generator: torch.Generator | None = None
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Carry flow samples x (B, N, 3) Å with log q_x (B,) to exp(−βU) (β in 1/eV).

    ``ok`` (B,) marks usable samples (in the domain and ``restrict``); others keep weight
    zero. ``member``: the state (used with ``config.confine``; the caller applies it to the
    final positions in any case). Returns final positions (B, N, 3), energies U (B,) eV (inf
    where not ok), log w (B,) (module doc; −inf where not ok) and statistics (mean MALA
    acceptance, final step size, fraction of level moves undone for leaving the state or the
    flow's labelling cell, and ``initial_log_w``: the plain flow weights ℓ(x₀), for the flow's
    own ESS).
    """
    cfg = config
    x = x.detach().to(torch.float64).clone()
    if cfg.levels == 0:
        with torch.no_grad():
            e = potential.energy(x).double()
        ok = ok & torch.isfinite(e) & torch.isfinite(log_q)
        return (x, torch.where(ok, e, torch.full_like(e, float("inf"))),
                torch.where(ok, -beta * e - log_q.double(), torch.full_like(e, -float("inf"))),
                {})
    out = evaluate(potential, x)
    e, f = out.energy.double().detach(), out.forces.double().detach()
    ok = ok & torch.isfinite(e) & torch.isfinite(log_q)
    lq = torch.where(ok, log_q.double(), torch.zeros_like(e))
    e = torch.where(ok, e, torch.zeros_like(e))
    f = torch.where(ok[:, None, None], f, torch.zeros_like(f))
    confine = cfg.confine

    def region(y: torch.Tensor) -> torch.Tensor:
        """The flow's labelling cell (cheap, always) and, with ``confine``, the state."""
        keep = own_cell(bg, y)
        if confine and member is not None and keep.any():
            keep[keep.clone()] = torch.as_tensor(member(y[keep]), dtype=torch.bool)
        return keep

    if ok.any():
        ok[ok.clone()] = region(x[ok])
    ell = -beta * e - lq
    log_w0 = torch.where(ok, ell, torch.full_like(e, -float("inf")))
    _, glq = _log_q_and_grad(bg, x)
    ok_fn = restrict or (lambda y: torch.ones(y.shape[0], dtype=torch.bool))
    log_w = torch.zeros_like(e)
    h = cfg.step_size
    t_prev = 0.0
    acc_sum = 0.0
    n_out = 0
    for k in range(1, cfg.levels + 1):
        t = k / cfg.levels
        log_w = log_w + (t - t_prev) * ell
        t_prev = t
        if k == cfg.levels:
            break  # the last level's moves do not change the weights: skip them

        def grad(g_lq: torch.Tensor, force: torch.Tensor, t: float = t) -> torch.Tensor:
            return (1 - t) * g_lq + t * beta * force

        start = (x, e, f, lq, glq)
        for _ in range(cfg.mala_steps):
            noise = torch.randn(x.shape, dtype=x.dtype, generator=generator)
            mu = x + 0.5 * h**2 * grad(glq, f)
            y = mu + h * noise
            oy = evaluate(potential, y)
            ey, fy = oy.energy.double().detach(), oy.forces.double().detach()
            lqy, glqy = _log_q_and_grad(bg, y)
            oky = ok & ok_fn(y) & torch.isfinite(ey) & torch.isfinite(lqy)
            mu_back = y + 0.5 * h**2 * grad(glqy, fy)
            log_fwd = -((y - mu) ** 2).sum((1, 2)) / (2 * h**2)
            log_bwd = -((x - mu_back) ** 2).sum((1, 2)) / (2 * h**2)
            lpi_x = (1 - t) * lq - t * beta * e
            lpi_y = torch.where(oky, (1 - t) * lqy - t * beta * ey,
                                torch.full_like(ey, -float("inf")))
            log_a = lpi_y - lpi_x + log_bwd - log_fwd
            u = torch.rand(x.shape[0], dtype=x.dtype, generator=generator)
            acc = oky & (torch.log(u) < torch.nan_to_num(log_a, nan=-float("inf")))
            x = torch.where(acc[:, None, None], y, x)
            e, f = torch.where(acc, ey, e), torch.where(acc[:, None, None], fy, f)
            lq, glq = torch.where(acc, lqy, lq), torch.where(acc[:, None, None], glqy, glq)
            rate = float(acc[ok].double().mean()) if ok.any() else 0.0
            acc_sum += rate
            h = float(h * np.exp(0.5 * (rate - cfg.target_accept)))
        # every level: a walker that left the region returns to the level's start
        moved = ok & (x != start[0]).any(-1).any(-1)
        out_ = torch.zeros_like(moved)
        if moved.any():
            out_[moved] = ~region(x[moved])
        n_out += int(out_.sum())
        x, f, glq = (torch.where(out_[:, None, None], a, b)
                     for a, b in ((start[0], x), (start[2], f), (start[4], glq)))
        e, lq = torch.where(out_, start[1], e), torch.where(out_, start[3], lq)
        ell = -beta * e - lq
    n_moves = max(1, (cfg.levels - 1) * cfg.mala_steps)
    stats = {"anneal_acceptance": acc_sum / n_moves, "anneal_step_size": h,
             "anneal_left_state": n_out / max(1, int(ok.sum()) * max(1, cfg.levels - 1)),
             "initial_log_w": log_w0}
    return (x, torch.where(ok, e, torch.full_like(e, float("inf"))),
            torch.where(ok, log_w, torch.full_like(e, -float("inf"))), stats)


__all__ = ["AnnealConfig", "anneal", "own_cell"]
