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
that end on a proposal need them, one more call). The chain of a walker's ``global_steps``
flow moves runs on the target without the state (the wall and the flow's domain kept) and
only its end is checked: a chain that ends outside the state is rejected as a whole, exact
for the same reason as the MALA block (the g-step chain of independence moves is reversible
with respect to the unrestricted target), so an iteration needs at most two state checks
per walker (:mod:`alflow.sampling.checks`), where checking every accepted proposal needed
one per accepted move (4–5 per walker and iteration on lj7, most of the quenching).

The checks are answered late, without changing the chain (speculative execution): each
iteration is first run taking its unanswered checks to be inside, and the walkers go on from
there; the quenches of its block ends (their first FIRE step free: the MALA forces are known)
and flow chains ride along the next iteration's MALA force calls
(:class:`~alflow.states.QuenchCheck`), and when they are answered the iteration is redone
with the answers (the flow chain rerun from where the block left the walker, a new chain
end checked at once). Where that
changes a walker's iteration, its speculative next iteration is void and it goes on from the
exact one. The kept path of every walker is the exact chain's: up to the first wrong guess it
used the same random numbers as the exact chain would, and after it fresh ones, independent of
the past (the guess being wrong is decided by the past alone). Every walker runs the same
number of answered iterations; walkers wait for each other at retrainings and where the
adaptation ends.

Two phases, as in flowMC: during the first ``adapt_iterations`` the step size adapts and the
flow is retrained (``retrain``, forward KL) on the walkers seen so far (and on
``train_samples``, e.g. the seeds); afterwards both are frozen, so the production chains are a
time-homogeneous Markov chain that leaves the target invariant. Every step is a tensor
operation on all W walkers at once: one potential call per MALA step (with the pending
quenches), one per batch of flow proposals, one for the forces of the walkers the flow moved.
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
from alflow.progress import start as start_progress
from alflow.sampling.checks import Check, Predicate, as_check, statuses
from alflow.sampling.diagnostics import ess_bulk, split_rhat

log = logging.getLogger(__name__)

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
    return torch.where(ok & torch.isfinite(e), -beta * e, -float("inf"))


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
                allowed: Predicate, gen: torch.Generator, ride: Any | None = None
                ) -> tuple[_Walkers, torch.Tensor]:
    """``steps`` MALA steps of width h Å on every walker at once (one potential call per
    step); returns the walkers at the block's end (log_q not updated) and the accepted count
    per walker (W,). ``ride``: a :class:`~alflow.states.Fire` whose pending quenches take one
    step in each of these calls (their configurations join the batch)."""
    x, e, f = w.x, w.e, w.f
    w_n = x.shape[0]
    acc_steps = []
    c = 0.5 * h**2 * beta
    for _ in range(steps):
        mu = x + c * f
        noise = torch.randn(x.shape, dtype=x.dtype, generator=gen)
        y = mu + h * noise
        if ride is not None and len(ride):
            ey, fy = _evaluate(potential, torch.cat([y, ride.positions().to(y.dtype)]))
            ride.advance(ey[w_n:], fy[w_n:])
            ey, fy = ey[:w_n], fy[:w_n]
        else:
            ey, fy = _evaluate(potential, y)
        # log [q(x | y) / q(y | x)] with y − mu = h·noise
        log_ratio = (0.5 * noise.square() - (x - y - c * fy).square() / (2 * h**2)).sum((1, 2))
        log_a = _log_target(ey, beta, allowed(y)) + beta * e + log_ratio
        acc = torch.rand(w_n, dtype=x.dtype, generator=gen).log() < log_a
        a3 = acc[:, None, None]
        x, e, f = torch.where(a3, y, x), torch.where(acc, ey, e), torch.where(a3, fy, f)
        acc_steps.append(acc)
    n_acc = (torch.stack(acc_steps).sum(0) if acc_steps
             else torch.zeros(w_n, dtype=torch.int64))
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

    def keep(self, cols: torch.Tensor) -> _FlowProposals:
        """The proposals of walkers ``cols`` (bool (W,) or indices)."""
        return _FlowProposals(self.y[:, cols], self.e[:, cols], self.log_q[:, cols],
                              self.lt[:, cols], self.log_u[:, cols])


def _draw_flow_proposals(potential: Potential, flow: Any, g: int, w_n: int, beta: float,
                         allowed: Predicate, gen: torch.Generator) -> _FlowProposals:
    y, lq, valid = flow.sample(g * w_n, gen)
    with torch.no_grad():
        e = potential.energy(y).detach().double()
    lt = _log_target(e, beta, valid & allowed(y)) - lq
    log_u = torch.log(torch.rand(g, w_n, dtype=y.dtype, generator=gen))
    return _FlowProposals(y.view(g, w_n, *y.shape[1:]), e.view(g, w_n), lq.view(g, w_n),
                          lt.view(g, w_n), log_u)


def _last_taken(take: torch.Tensor) -> torch.Tensor:
    """(W,) index of each walker's last accepted proposal of take (g, W), −1 for none."""
    last = take.shape[0] - 1 - take.flip(0).int().argmax(0)
    return torch.where(take.any(0), last, -1)


def _imh_chain(p: _FlowProposals, lt_current: torch.Tensor, status: torch.Tensor
               ) -> torch.Tensor:
    """(g, W) bool: which proposals the chain of g independence Metropolis–Hastings steps
    accepts from walkers with log target ratio ``lt_current`` (W,), the state left out (the
    wall and the flow's domain are in ``p.lt``); a chain whose last accepted proposal has
    status −1 (outside the state) is rejected as a whole, an unchecked one (0) is taken to
    be inside. Exact: the g-step chain is reversible with respect to the unrestricted
    target, so rejecting its ends outside the state leaves the restricted target invariant
    (as for a MALA block), and only one proposal per walker and iteration needs a check."""
    take = torch.zeros_like(status, dtype=torch.bool)
    lt = lt_current
    for k in range(p.lt.shape[0]):
        acc = p.log_u[k] < p.lt[k] - lt
        lt = torch.where(acc, p.lt[k], lt)
        take[k] = acc
    last = _last_taken(take)
    cols = torch.arange(take.shape[1])
    out = (last >= 0) & (status[last.clamp_min(0), cols] < 0)
    take[:, out] = False
    return take


def _apply_flow_moves(potential: Potential, w: _Walkers, p: _FlowProposals,
                      take: torch.Tensor) -> _Walkers:
    """Walkers after the accepted flow moves (each walker's last accepted proposal); forces
    of the walkers that moved are evaluated in one call."""
    moved = take.any(0)
    if not moved.any():
        return w
    last = _last_taken(take).clamp_min(0)
    cols = torch.arange(w.x.shape[0])
    x = torch.where(moved[:, None, None], p.y[last, cols], w.x)
    e = torch.where(moved, p.e[last, cols], w.e)
    lq = torch.where(moved, p.log_q[last, cols], w.log_q)
    f = w.f.clone()
    f[moved] = _evaluate(potential, x[moved])[1]
    return _Walkers(x, e, f, lq)


@dataclass
class _Round:
    """The iteration that walkers ``idx`` (A,) ran in one round, before its state checks
    are all answered: the walkers at its start and at the end of its MALA block (A,), the
    accepted MALA steps (A,), the flow proposals (g, A), the check tickets of the block ends
    (A,) and of the proposals (g, A) (−1: not asked), and the iteration as run assuming every
    unanswered check is inside: block rejected (A,), proposals taken (g, A), walkers after it
    (A,)."""

    idx: torch.Tensor
    iteration: torch.Tensor
    start: _Walkers
    end: _Walkers
    n_acc: torch.Tensor
    props: _FlowProposals | None
    block_id: torch.Tensor
    prop_id: torch.Tensor
    block_out: torch.Tensor | None = None
    take: torch.Tensor | None = None
    result: _Walkers | None = None

    def chain(self, check: Check | None, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Block rejected (A,) and proposals taken (g, A) by the answers known so far
        (unanswered: taken to be inside)."""
        block_out = statuses(check, self.block_id) < 0
        if self.props is None:
            return block_out, torch.zeros((0, len(self.idx)), dtype=torch.bool)
        lt = torch.where(block_out, -beta * self.start.e - self.start.log_q,
                         -beta * self.end.e - self.end.log_q)
        return block_out, _imh_chain(self.props, lt, statuses(check, self.prop_id))

    def ask(self, check: Check | None, take: torch.Tensor) -> bool:
        """Submit the chains' ends (each walker's last taken proposal) not asked yet; False
        if there were none."""
        last = _last_taken(take)
        ends = torch.zeros_like(take)
        ends[last.clamp_min(0), torch.arange(take.shape[1])] = last >= 0
        new = ends & (self.prop_id < 0)
        if check is None or not new.any():
            return False
        self.prop_id[new] = check.submit(self.props.y[new], self.props.e[new])
        return True

    def outcome(self, potential: Potential, block_out: torch.Tensor, take: torch.Tensor,
                rows: torch.Tensor) -> _Walkers:
        """Walkers ``rows`` (bool (A,)) after the iteration with these decisions."""
        w = _select(self.end, rows).where(block_out[rows], _select(self.start, rows))
        if self.props is None:
            return w
        return _apply_flow_moves(potential, w, self.props.keep(rows), take[:, rows])


def _select(w: _Walkers, rows: torch.Tensor) -> _Walkers:
    return _Walkers(w.x[rows], w.e[rows], w.f[rows], None if w.log_q is None else w.log_q[rows])


def _assign(w: _Walkers, idx: torch.Tensor, new: _Walkers) -> None:
    """Write walkers ``new`` into rows ``idx`` of ``w`` (in place)."""
    w.x[idx], w.e[idx], w.f[idx] = new.x, new.e, new.f
    if w.log_q is not None and new.log_q is not None:
        w.log_q[idx] = new.log_q


def _speculate(potential: Potential, rnd: _Round, check: Check | None, beta: float) -> None:
    """Run the round's iteration assuming unanswered checks are inside, and ask the checks
    it needs: the block ends that moved and the proposals it takes (again while answers that
    come at once, e.g. a predicate's, change the chain)."""
    moved = (rnd.end.x != rnd.start.x).flatten(1).any(1)
    if check is not None and moved.any():
        rnd.block_id[moved] = check.submit(rnd.end.x[moved], rnd.end.e[moved],
                                           rnd.end.f[moved])
    if rnd.props is not None:  # first ask what the chain takes if all is inside: a
        # predicate then answers block ends and proposals in one call
        lt = -beta * rnd.end.e - rnd.end.log_q
        rnd.ask(check, _imh_chain(rnd.props, lt, torch.zeros_like(rnd.prop_id)))
    while True:
        block_out, take = rnd.chain(check, beta)
        if rnd.props is None or not rnd.ask(check, take):
            break
    rnd.block_out, rnd.take = block_out, take
    rnd.result = rnd.outcome(potential, block_out, take, torch.ones_like(moved))


def _settle(potential: Potential, rnd: _Round, check: Check | None, beta: float
            ) -> tuple[_Walkers, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Answer every check the round's iteration needs (finishing the pending quenches) and
    return the walkers after the exact iteration (A,), which of them differ from the
    speculation (A,: their later work is void), the blocks rejected (A,) and the proposals
    taken (g, A)."""
    while True:
        if check is not None:
            check.drain()
        block_out, take = rnd.chain(check, beta)
        if rnd.props is None or not rnd.ask(check, take):
            break
    changed = (block_out != rnd.block_out) | (take != rnd.take).any(0)
    result = rnd.result
    if changed.any():
        result = _Walkers(result.x.clone(), result.e.clone(), result.f.clone(),
                          None if result.log_q is None else result.log_q.clone())
        _assign(result, changed.nonzero().squeeze(1),
                rnd.outcome(potential, block_out, take, changed))
    if check is not None:
        check.forget(torch.cat([rnd.block_id, rnd.prop_id.flatten()]))
    return result, changed, block_out, take


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


def _barriers(cfg: MCMCConfig) -> list[int]:
    """Iteration counts every walker reaches before any goes on: each retraining, the end
    of the adaptation (h and the flow freeze there) and the end."""
    out = {t for t in range(cfg.train_every, cfg.adapt_iterations + 1, cfg.train_every)}
    out |= {cfg.adapt_iterations, cfg.iterations}
    return sorted(t for t in out if 0 < t <= cfg.iterations)


def adaptive_mcmc(potential: Potential, flow: Any | None, x0: np.ndarray | torch.Tensor,
                  temperature_k: float, config: MCMCConfig | dict[str, Any] | None = None,
                  restrict: Predicate | None = None, member: Predicate | Check | None = None,
                  cvs: Mapping[str, Callable[[torch.Tensor], torch.Tensor]] | None = None,
                  train_samples: np.ndarray | None = None,
                  retrain: Retrain | None = None, label: str = "MCMC") -> MCMCResult:
    """Run flow-assisted MCMC from walkers x0 (W, N, 3) Å at ``temperature_k`` K.

    ``flow``: anything with ``sample(n, generator) -> (x, log q_x, valid)`` and
    ``log_prob(x) -> log q_x``, e.g. a :class:`~alflow.flows.BoltzmannGenerator` (None: MALA
    only). ``restrict`` (cheap predicate, every proposal, e.g. :func:`alflow.states.wall`)
    and ``member`` (the state: a predicate (B,) bool, or a check answered later such as
    :meth:`alflow.states.BasinStates.checker`; see the module doc).
    ``cvs``: name -> function (B, N, 3) -> (B,) recorded for R-hat/ESS (default: the energy).
    ``retrain(data (S, N, 3) Å, config)`` retrains the flow during adaptation (e.g.
    ``lambda d, c: train_flow(bg, d, config=c)``; None: the flow stays as it is), with
    ``config`` = ``MCMCConfig.train`` plus a seed; ``train_samples`` (S, N, 3) Å:
    configurations of the target (e.g. the MD seeds the flow was first trained on) joined to
    the walkers for every retraining; without them the flow is retrained on the few walkers
    seen so far and forgets the seeds (overfits). Progress (iterations) is reported as
    ``label`` (:mod:`alflow.progress`).
    """
    cfg = config if isinstance(config, MCMCConfig) else MCMCConfig(**(config or {}))
    beta = 1.0 / (kB * temperature_k)
    gen = torch.Generator().manual_seed(cfg.seed)
    allowed = restrict or (lambda y: torch.ones(y.shape[0], dtype=torch.bool))
    check = as_check(member)
    ride = getattr(check, "fire", None)
    w = _start(potential, flow, x0, allowed)
    w_n = w.x.shape[0]
    g_n = cfg.global_steps if flow is not None else 0
    h = cfg.step_size
    t0 = time.perf_counter()
    train_s = 0.0
    pool: list[np.ndarray] = []
    frames: list[list[np.ndarray]] = [[] for _ in range(w_n)]
    energies: list[list[float]] = [[] for _ in range(w_n)]
    cv_fns = dict(cvs or {})
    cv_vals: dict[str, list[list[float]]] = {k: [[] for _ in range(w_n)] for k in cv_fns}
    counts = {"local": [0, 0], "global": [0, 0], "left": 0}
    hist: dict[str, list[float]] = {"step_size": [], "local_acceptance": [],
                                    "global_acceptance": []}
    done = torch.zeros(w_n, dtype=torch.int64)  # iterations answered, per walker
    barriers = _barriers(cfg)
    limit = barriers.pop(0)
    prev: _Round | None = None
    bar = start_progress(label, total=cfg.iterations, unit="it")
    try:
        while True:
            busy = torch.zeros(w_n, dtype=torch.int64)
            if prev is not None:
                busy[prev.idx] = 1
            active = (done + busy < limit).nonzero().squeeze(1)
            rnd = None
            if len(active):
                adapting = limit <= cfg.adapt_iterations
                ws = _select(w, active)
                end, n_acc = _mala_block(potential, ws, cfg.local_steps, h, beta, allowed,
                                         gen, ride)
                if cfg.local_steps:
                    end.log_q = _log_q(flow, end.x)
                props = (_draw_flow_proposals(potential, flow, g_n, len(active), beta,
                                              allowed, gen) if g_n else None)
                rnd = _Round(active, done[active] + busy[active], ws, end, n_acc, props,
                             torch.full((len(active),), -1, dtype=torch.int64),
                             torch.full((g_n, len(active)), -1, dtype=torch.int64))
                rate_l = float(n_acc.sum()) / max(1, cfg.local_steps * len(active))
                if adapting and cfg.local_steps:  # by the share of walkers that moved: a
                    # round that redoes a few walkers' iterations adapts h that much less
                    h = float(h * np.exp(0.5 * (rate_l - cfg.target_accept)
                                         * len(active) / w_n))
                hist["step_size"].append(h)
                hist["local_acceptance"].append(rate_l)
            if prev is not None:
                result, changed, block_out, take = _settle(potential, prev, check, beta)
                _record(prev, result, block_out, take, cfg, g_n, counts, pool, frames,
                        energies, cv_fns, cv_vals)
                done[prev.idx] += 1
                bar.advance(len(prev.idx) / w_n)
                void = prev.idx[changed]
                _assign(w, void, _select(result, changed))
                if rnd is not None and len(void):  # their work of this round is void
                    keep = ~torch.isin(rnd.idx, void)
                    rnd = _keep_round(rnd, keep) if keep.any() else None
            if rnd is not None:  # its checks are asked after the last round's are answered:
                # they ride along the next round's MALA steps
                _speculate(potential, rnd, check, beta)
                hist["global_acceptance"].append(float(rnd.take.sum())
                                                 / max(1, g_n * len(rnd.idx)))
                _assign(w, rnd.idx, rnd.result)
            prev = rnd
            if prev is None and bool((done >= limit).all()):
                if (limit <= cfg.adapt_iterations and limit % cfg.train_every == 0
                        and retrain is not None and flow is not None):
                    t1 = time.perf_counter()
                    retrain(_training_data(pool, train_samples, cfg.max_train_samples),
                            {"seed": cfg.seed + limit - 1, **cfg.train})
                    w.log_q = _log_q(flow, w.x)
                    train_s += time.perf_counter() - t1
                if not barriers:
                    break
                limit = barriers.pop(0)
            log.debug("round: %d walkers, h=%.4f", 0 if rnd is None else len(rnd.idx), h)
    finally:
        bar.close()
    pos = np.array(frames) if frames[0] else np.zeros((0, *w.x.shape))
    pos = pos.swapaxes(0, 1) if frames[0] else pos
    en = np.array(energies).T if energies[0] else np.zeros((0, w_n))
    cv_arr = {k: np.array(v).T for k, v in cv_vals.items()}
    rhat, ess = _diagnostics(en, cv_arr)
    loc, glob = counts["local"], counts["global"]
    return MCMCResult(pos, en, cv_arr, loc[0] / max(1, loc[1]),
                      glob[0] / max(1, glob[1]) if flow is not None else float("nan"), h,
                      rhat, ess, time.perf_counter() - t0, train_s, hist,
                      counts["left"] / max(1, w_n * cfg.iterations) if cfg.local_steps
                      else 0.0)


def _keep_round(rnd: _Round, keep: torch.Tensor) -> _Round:
    """The round's walkers where keep (A,) is True (before its speculation)."""
    return _Round(rnd.idx[keep], rnd.iteration[keep], _select(rnd.start, keep),
                  _select(rnd.end, keep), rnd.n_acc[keep],
                  None if rnd.props is None else rnd.props.keep(keep), rnd.block_id[keep],
                  rnd.prop_id[:, keep])


def _record(rnd: _Round, result: _Walkers, block_out: torch.Tensor, take: torch.Tensor,
            cfg: MCMCConfig, g_n: int, counts: dict, pool: list[np.ndarray],
            frames: list[list[np.ndarray]], energies: list[list[float]],
            cv_fns: Mapping[str, Callable], cv_vals: dict[str, list[list[float]]]) -> None:
    """Book the answered iterations of a round: acceptance counts of production iterations,
    rejected blocks, the adaptation's pool, production frames, energies and CVs."""
    counts["left"] += int(block_out.sum())
    prod = rnd.iteration >= cfg.adapt_iterations
    counts["local"][0] += int(rnd.n_acc[prod].sum())
    counts["local"][1] += cfg.local_steps * int(prod.sum())
    counts["global"][0] += int(take[:, prod].sum())
    counts["global"][1] += g_n * int(prod.sum())
    if (~prod).any():
        pool.append(result.x[~prod].numpy().copy())
    if not prod.any():
        return
    x = result.x[prod]
    cv = {k: np.asarray(fn(x).detach(), dtype=float) for k, fn in cv_fns.items()}
    for j, i in enumerate(rnd.idx[prod].tolist()):
        frames[i].append(x[j].numpy().copy())
        energies[i].append(float(result.e[prod][j]))
        for k in cv_fns:
            cv_vals[k][i].append(float(cv[k][j]))


def _training_data(pool: list[np.ndarray], train_samples: np.ndarray | None,
                   max_samples: int) -> np.ndarray:
    """The walkers seen so far (the last ``max_samples``), after ``train_samples``."""
    data = np.concatenate(pool)[-max_samples:]
    if train_samples is not None and len(train_samples):
        data = np.concatenate([np.asarray(train_samples, dtype=float), data])
    return data


__all__ = ["MCMCConfig", "MCMCResult", "adaptive_mcmc"]
