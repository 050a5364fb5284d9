"""Flow-assisted adaptive MCMC (Gabrié, Rotskoff & Vanden-Eijnden 2022; flowMC).

Many walkers x (W, N, 3) Å sample exp(−U(x)/kT) restricted by a predicate (hard wall, state).
Each iteration runs ``local_steps`` MALA steps on the potential (one proposal width h Å for all
walkers, adapted toward ``target_accept``) and then ``global_steps`` independent
Metropolis–Hastings steps proposed by the Boltzmann generator of the state, accepted with

    min(1, [e^{−βU(x')} / q_x(x')] / [e^{−βU(x)} / q_x(x)]).

State membership (``member``, e.g. a quench basin: expensive) is checked on each walker at the
end of its block of ``local_steps`` MALA steps: a block that ends outside the state is rejected
as a whole. That is exact: MALA is reversible with respect to the unrestricted target, so is
its k-step block, and rejecting the block's endpoints outside the state leaves the restricted
target invariant. Without it, walkers that step over a shallow barrier sample the neighbouring
state. The flow's proposals do not depend on the walkers, so all ``global_steps`` × W of an
iteration are drawn and their energies evaluated in one batch (no forces: only the walkers
that end on a proposal need them, one more call); the chain of flow moves is run once assuming
unchecked points lie in the state, the MALA block ends and the proposals it accepted are
checked in one batched call, and the chain is rerun only if one of them lies outside (the
result is the chain that checks every accepted proposal: exact).

Two phases, as in flowMC: during the first ``adapt_iterations`` the step size adapts and the
flow is retrained (``retrain``, forward KL) on the walkers seen so far (and on
``train_samples``, e.g. the seeds); afterwards both are frozen, so the production chains are a
time-homogeneous Markov chain that leaves the target invariant. Every step is a tensor
operation on all W walkers at once: one potential call per MALA step, one per batch of flow
proposals, one state check per iteration.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from ase.units import kB
from pydantic import Field

from alflow.config import StrictModel
from alflow.errors import InputError
from alflow.potential import Potential, evaluate
from alflow.sampling.diagnostics import ess_bulk, split_rhat

log = logging.getLogger(__name__)

Predicate = Callable[[torch.Tensor], torch.Tensor]


class MCMCConfig(StrictModel):
    """Adaptive MCMC options."""

    iterations: int = Field(40, ge=1, description="total iterations (adapt + production)")
    adapt_iterations: int = Field(20, ge=0, description="iterations that adapt h and train")
    local_steps: int = Field(10, ge=0, description="MALA steps per iteration")
    global_steps: int = Field(2, ge=0, description="flow IMH steps per iteration")
    step_size: float = Field(0.02, gt=0, description="initial MALA proposal width h, Å")
    target_accept: float = Field(0.574, gt=0, lt=1)
    train_every: int = Field(5, ge=1, description="retrain the flow every k adapt iterations")
    train: dict[str, Any] = Field(default_factory=lambda: {"steps": 100},
                                  description="TrainConfig fields for the retraining")
    max_train_samples: int = Field(4000, ge=1)
    seed: int = 0


@dataclass
class MCMCResult:
    """Production samples: positions (T, W, N, 3) Å, energy (T, W) eV, cvs name -> (T, W);
    acceptance rates, final step size (Å), R-hat and bulk ESS per CV, timings (s);
    ``left_state``: fraction of MALA blocks rejected because they ended outside the state."""

    positions: np.ndarray
    energy: np.ndarray
    cvs: dict[str, np.ndarray]
    local_acceptance: float
    global_acceptance: float
    step_size: float
    rhat: dict[str, float]
    ess: dict[str, float]
    seconds: float
    train_seconds: float
    history: dict[str, list[float]] = field(default_factory=dict)
    left_state: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {"local_acceptance": self.local_acceptance,
                "global_acceptance": self.global_acceptance, "step_size": self.step_size,
                "rhat": self.rhat, "ess": self.ess, "samples": int(np.prod(self.energy.shape)),
                "left_state": self.left_state,
                "seconds": self.seconds, "train_seconds": self.train_seconds}


Retrain = Callable[[np.ndarray, dict[str, Any]], Any]


def _log_target(e: torch.Tensor, beta: float, ok: torch.Tensor) -> torch.Tensor:
    return torch.where(ok & torch.isfinite(e), -beta * e, torch.full_like(e, -float("inf")))


@dataclass
class _Walkers:
    """W walkers: positions x (W, N, 3) Å, energies e (W,) eV, forces f (W, N, 3) eV/Å and
    the flow's log q_x(x) (W,) (None without a flow)."""

    x: torch.Tensor
    e: torch.Tensor
    f: torch.Tensor
    log_q: torch.Tensor | None = None

    def where(self, take: torch.Tensor, other: _Walkers) -> _Walkers:
        """``other`` where take (W,) is True, self elsewhere."""
        t3 = take[:, None, None]
        lq = None if self.log_q is None or other.log_q is None else \
            torch.where(take, other.log_q, self.log_q)
        return _Walkers(torch.where(t3, other.x, self.x), torch.where(take, other.e, self.e),
                        torch.where(t3, other.f, self.f), lq)


def _evaluate(potential: Potential, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    out = evaluate(potential, x)
    return out.energy.double(), out.forces.double()


def _log_q(flow: Any | None, x: torch.Tensor) -> torch.Tensor | None:
    if flow is None:
        return None
    with torch.no_grad():
        return flow.log_prob(x).detach()


def _mala_block(potential: Potential, w: _Walkers, steps: int, h: float, beta: float,
                allowed: Predicate, gen: torch.Generator) -> tuple[_Walkers, int]:
    """``steps`` MALA steps of width h Å on every walker at once (one potential call per
    step); returns the walkers at the block's end (log_q not updated) and the accepted count."""
    x, e, f = w.x, w.e, w.f
    n_acc = 0
    c = 0.5 * h**2 * beta
    for _ in range(steps):
        mu = x + c * f
        y = mu + h * torch.randn(x.shape, dtype=x.dtype, generator=gen)
        ey, fy = _evaluate(potential, y)
        log_fwd = -((y - mu) ** 2).sum((1, 2)) / (2 * h**2)
        log_bwd = -((x - y - c * fy) ** 2).sum((1, 2)) / (2 * h**2)
        log_a = _log_target(ey, beta, allowed(y)) + beta * e + log_bwd - log_fwd
        acc = torch.log(torch.rand(x.shape[0], dtype=x.dtype, generator=gen)) < log_a
        a3 = acc[:, None, None]
        x, e, f = torch.where(a3, y, x), torch.where(acc, ey, e), torch.where(a3, fy, f)
        n_acc += int(acc.sum())
    return _Walkers(x, e, f, w.log_q), n_acc


@dataclass
class _FlowProposals:
    """``g`` independence proposals per walker, drawn and evaluated in one batch: positions
    y (g, W, N, 3) Å, energies (g, W) eV (no forces: only the accepted ones need them),
    log q_x (g, W), log target ratio lt = −βU − log q_x (g, W; −inf where not allowed) and the
    uniforms' logs (g, W) of the acceptance tests."""

    y: torch.Tensor
    e: torch.Tensor
    log_q: torch.Tensor
    lt: torch.Tensor
    log_u: torch.Tensor


def _draw_flow_proposals(potential: Potential, flow: Any, g: int, w_n: int, beta: float,
                         allowed: Predicate, gen: torch.Generator) -> _FlowProposals:
    y, lq, valid = flow.sample(g * w_n, gen)
    with torch.no_grad():
        e = potential.energy(y).detach().double()
    lt = _log_target(e, beta, valid & allowed(y)) - lq
    log_u = torch.log(torch.rand(g, w_n, dtype=y.dtype, generator=gen))
    return _FlowProposals(y.view(g, w_n, *y.shape[1:]), e.view(g, w_n), lq.view(g, w_n),
                          lt.view(g, w_n), log_u)


def _imh_chain(p: _FlowProposals, lt_current: torch.Tensor, status: torch.Tensor
               ) -> torch.Tensor:
    """(g, W) bool: which proposals the chain of g independence Metropolis–Hastings steps
    accepts from walkers with log target ratio ``lt_current`` (W,); proposals with status
    −1 (outside the state) are refused, unchecked ones (0) are taken to be inside."""
    take = torch.zeros_like(status, dtype=torch.bool)
    lt = lt_current
    for k in range(p.lt.shape[0]):
        acc = (p.log_u[k] < p.lt[k] - lt) & (status[k] >= 0)
        lt = torch.where(acc, p.lt[k], lt)
        take[k] = acc
    return take


def _check_states(member: Predicate | None, start: _Walkers, end: _Walkers, beta: float,
                  proposals: _FlowProposals | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact state restriction with batched checks. Returns block_out (W,) (the MALA block
    ended outside the state: rejected) and take (g, W) (the flow proposals the chain accepts).

    The chain of flow moves is first run assuming unchecked proposals lie inside; the block
    ends and the proposals it accepts are checked in one ``member`` call; if one of them is
    outside, the chain is rerun with that knowledge (rarely: flow samples of a state mostly
    lie in it). The result is the chain that checks every accepted proposal."""
    w_n = end.x.shape[0]
    g = 0 if proposals is None else proposals.lt.shape[0]
    moved = (end.x != start.x).flatten(1).any(1) if member is not None else \
        torch.zeros(w_n, dtype=torch.bool)
    block_out = torch.zeros(w_n, dtype=torch.bool)
    status = torch.full((g, w_n), 0 if member is not None else 1, dtype=torch.int8)
    if proposals is not None:
        lt_start = -beta * start.e - start.log_q
        lt_end = -beta * end.e - end.log_q
    while True:
        take = torch.zeros((g, w_n), dtype=torch.bool)
        if proposals is not None:
            take = _imh_chain(proposals, torch.where(block_out, lt_start, lt_end), status)
        need = take & (status == 0)
        if not (moved.any() or need.any()):
            return block_out, take
        configs = end.x[moved] if proposals is None else \
            torch.cat([end.x[moved], proposals.y[need]])
        inside = torch.as_tensor(member(configs), dtype=torch.bool)
        n_b = int(moved.sum())
        block_out[moved] = ~inside[:n_b]
        status[need] = torch.where(inside[n_b:], 1, -1).to(torch.int8)
        moved = torch.zeros_like(moved)  # block ends are known from now on


def _apply_flow_moves(potential: Potential, w: _Walkers, p: _FlowProposals,
                      take: torch.Tensor) -> _Walkers:
    """Walkers after the accepted flow moves (each walker's last accepted proposal); forces
    of the walkers that moved are evaluated in one call."""
    moved = take.any(0)
    if not moved.any():
        return w
    last = p.y.shape[0] - 1 - take.flip(0).int().argmax(0)  # (W,) last accepted index
    cols = torch.arange(w.x.shape[0])
    x = torch.where(moved[:, None, None], p.y[last, cols], w.x)
    e = torch.where(moved, p.e[last, cols], w.e)
    lq = torch.where(moved, p.log_q[last, cols], w.log_q)
    f = w.f.clone()
    f[moved] = _evaluate(potential, x[moved])[1]
    return _Walkers(x, e, f, lq)


def _diagnostics(energies: np.ndarray, cvs: dict[str, np.ndarray]
                 ) -> tuple[dict[str, float], dict[str, float]]:
    rhat, ess = {}, {}
    for k, v in {"energy": energies, **cvs}.items():
        if v.shape[0] >= 4:
            rhat[k] = split_rhat(v.T)
            ess[k] = ess_bulk(v.T)
    return rhat, ess


def _start(potential: Potential, flow: Any | None, x0: np.ndarray | torch.Tensor,
           allowed: Predicate) -> _Walkers:
    x = torch.as_tensor(np.asarray(x0, dtype=float)).clone()
    if x.ndim != 3 or x.shape[-1] != 3:
        raise InputError(f"x0 must have shape (W, N, 3), got {tuple(x.shape)}")
    e, f = _evaluate(potential, x)
    if not bool(allowed(x).all()) or not torch.isfinite(e).all():
        raise InputError("adaptive_mcmc: every starting walker must satisfy the restriction "
                         "and have a finite energy")
    return _Walkers(x, e, f, _log_q(flow, x))


def adaptive_mcmc(potential: Potential, flow: Any | None, x0: np.ndarray | torch.Tensor,
                  temperature_k: float, config: MCMCConfig | dict[str, Any] | None = None,
                  restrict: Predicate | None = None, member: Predicate | None = None,
                  cvs: Mapping[str, Callable[[torch.Tensor], torch.Tensor]] | None = None,
                  train_samples: np.ndarray | None = None,
                  retrain: Retrain | None = None) -> MCMCResult:
    """Run flow-assisted MCMC from walkers x0 (W, N, 3) Å at ``temperature_k`` K.

    ``flow``: anything with ``sample(n, generator) -> (x, log q_x, valid)`` and
    ``log_prob(x) -> log q_x``, e.g. a :class:`~alflow.flows.BoltzmannGenerator` (None: MALA
    only). ``restrict`` (cheap predicate, every proposal, e.g. :func:`alflow.states.wall`)
    and ``member`` (the state, e.g. its quench basin; see the module doc) return (B,) bool.
    ``cvs``: name -> function (B, N, 3) -> (B,) recorded for R-hat/ESS (default: the energy).
    ``retrain(data (S, N, 3) Å, config)`` retrains the flow during adaptation (e.g.
    ``lambda d, c: train_flow(bg, d, config=c)``; None: the flow stays as it is), with
    ``config`` = ``MCMCConfig.train`` plus a seed; ``train_samples`` (S, N, 3) Å:
    configurations of the target (e.g. the MD seeds the flow was first trained on) joined to
    the walkers for every retraining; without them the flow is retrained on the few walkers
    seen so far and forgets the seeds (overfits).
    """
    cfg = config if isinstance(config, MCMCConfig) else MCMCConfig(**(config or {}))
    beta = 1.0 / (kB * temperature_k)
    gen = torch.Generator().manual_seed(cfg.seed)
    allowed = restrict or (lambda y: torch.ones(y.shape[0], dtype=torch.bool))
    w = _start(potential, flow, x0, allowed)
    w_n = w.x.shape[0]
    g_n = cfg.global_steps if flow is not None else 0
    h = cfg.step_size
    t0 = time.perf_counter()
    train_s = 0.0
    pool: list[np.ndarray] = []
    frames, energies = [], []
    cv_fns = dict(cvs or {})
    cv_vals: dict[str, list[np.ndarray]] = {k: [] for k in cv_fns}
    counts = {"local": [0, 0], "global": [0, 0], "left": 0}
    hist: dict[str, list[float]] = {"step_size": [], "local_acceptance": [],
                                    "global_acceptance": []}
    for it in range(cfg.iterations):
        adapting = it < cfg.adapt_iterations
        end, n_acc = _mala_block(potential, w, cfg.local_steps, h, beta, allowed, gen)
        if cfg.local_steps:
            end.log_q = _log_q(flow, end.x)
        props = (_draw_flow_proposals(potential, flow, g_n, w_n, beta, allowed, gen)
                 if g_n else None)
        block_out, take = _check_states(member, w, end, beta, props)
        w = end.where(block_out, w)
        if props is not None:
            w = _apply_flow_moves(potential, w, props, take)
        n_gacc = int(take.sum())
        counts["left"] += int(block_out.sum())
        rate_l = n_acc / max(1, cfg.local_steps * w_n)
        rate_g = n_gacc / max(1, g_n * w_n)
        if adapting and cfg.local_steps:
            h = float(h * np.exp(0.5 * (rate_l - cfg.target_accept)))
        if not adapting:
            counts["local"][0] += n_acc
            counts["local"][1] += cfg.local_steps * w_n
            counts["global"][0] += n_gacc
            counts["global"][1] += g_n * w_n
        hist["step_size"].append(h)
        hist["local_acceptance"].append(rate_l)
        hist["global_acceptance"].append(rate_g)
        if adapting:
            pool.append(w.x.numpy().copy())
            if retrain is not None and flow is not None and (it + 1) % cfg.train_every == 0:
                t1 = time.perf_counter()
                retrain(_training_data(pool, train_samples, cfg.max_train_samples),
                        {"seed": cfg.seed + it, **cfg.train})
                w.log_q = _log_q(flow, w.x)
                train_s += time.perf_counter() - t1
        else:
            frames.append(w.x.numpy().copy())
            energies.append(w.e.numpy().copy())
            for k, fn in cv_fns.items():
                cv_vals[k].append(np.asarray(fn(w.x).detach(), dtype=float))
        log.debug("iteration %d h=%.4f local %.2f global %.2f", it, h, rate_l, rate_g)
    pos = np.array(frames) if frames else np.zeros((0, *w.x.shape))
    en = np.array(energies) if energies else np.zeros((0, w_n))
    cv_arr = {k: np.array(v) for k, v in cv_vals.items()}
    rhat, ess = _diagnostics(en, cv_arr)
    loc, glob = counts["local"], counts["global"]
    return MCMCResult(pos, en, cv_arr, loc[0] / max(1, loc[1]),
                      glob[0] / max(1, glob[1]) if flow is not None else float("nan"), h,
                      rhat, ess, time.perf_counter() - t0, train_s, hist,
                      counts["left"] / max(1, w_n * cfg.iterations) if cfg.local_steps
                      else 0.0)


def _training_data(pool: list[np.ndarray], train_samples: np.ndarray | None,
                   max_samples: int) -> np.ndarray:
    """The walkers seen so far (the last ``max_samples``), after ``train_samples``."""
    data = np.concatenate(pool)[-max_samples:]
    if train_samples is not None and len(train_samples):
        data = np.concatenate([np.asarray(train_samples, dtype=float), data])
    return data


__all__ = ["MCMCConfig", "MCMCResult", "adaptive_mcmc"]
