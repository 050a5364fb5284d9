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
iteration are drawn and evaluated in one batch; the chain of flow moves is run once assuming
unchecked points lie in the state, the MALA block ends and the proposals it accepted are
checked in one batched call, and the chain is rerun only if one of them lies outside (the
result is the chain that checks every accepted proposal: exact).

Two phases, as in flowMC: during the first ``adapt_iterations`` the step size adapts and the
flow is retrained (forward KL) on the walkers seen so far (and on ``train_samples``, e.g. the
seeds); afterwards both are frozen, so the
production chains are a time-homogeneous Markov chain that leaves the target invariant.
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


def _log_target(e: torch.Tensor, beta: float, ok: torch.Tensor) -> torch.Tensor:
    return torch.where(ok & torch.isfinite(e), -beta * e, torch.full_like(e, -float("inf")))


def adaptive_mcmc(potential: Potential, flow: Any | None, x0: np.ndarray | torch.Tensor,
                  temperature_k: float, config: MCMCConfig | dict[str, Any] | None = None,
                  restrict: Predicate | None = None, member: Predicate | None = None,
                  cvs: Mapping[str, Callable[[torch.Tensor], torch.Tensor]] | None = None,
                  train_samples: np.ndarray | None = None) -> MCMCResult:
    """Run flow-assisted MCMC from walkers x0 (W, N, 3) Å at ``temperature_k`` K.

    ``flow``: a :class:`~alflow.flows.BoltzmannGenerator` (None: MALA only). ``restrict``
    (cheap predicate, every proposal, e.g. :func:`alflow.states.wall`) and ``member`` (the
    state, e.g. its quench basin; see the module doc) return (B,) bool.
    ``cvs``: name -> function (B, N, 3) -> (B,) recorded for R-hat/ESS (default: the energy).
    ``train_samples`` (S, N, 3) Å: configurations of the target (e.g. the MD seeds the flow was
    first trained on) joined to the walkers for every retraining; without them the flow is
    retrained on the few walkers seen so far and forgets the seeds (overfits).
    """
    cfg = config if isinstance(config, MCMCConfig) else MCMCConfig(**(config or {}))
    x = torch.as_tensor(np.asarray(x0, dtype=float)).clone()
    if x.ndim != 3 or x.shape[-1] != 3:
        raise InputError(f"x0 must have shape (W, N, 3), got {tuple(x.shape)}")
    w_n = x.shape[0]
    beta = 1.0 / (kB * temperature_k)
    gen = torch.Generator().manual_seed(cfg.seed)
    ok_fn = restrict or (lambda y: torch.ones(y.shape[0], dtype=torch.bool))
    out = evaluate(potential, x)
    e, f = out.energy.double(), out.forces.double()
    if not bool(ok_fn(x).all()) or not torch.isfinite(e).all():
        raise InputError("adaptive_mcmc: every starting walker must satisfy the restriction "
                         "and have a finite energy")
    h = cfg.step_size
    t0 = time.perf_counter()
    train_s = 0.0
    pool: list[np.ndarray] = []
    frames, energies = [], []
    cv_fns = dict(cvs or {})
    cv_vals: dict[str, list[np.ndarray]] = {k: [] for k in cv_fns}
    acc_l = [0, 0]
    n_left = 0
    acc_g = [0, 0]
    hist: dict[str, list[float]] = {"step_size": [], "local_acceptance": [],
                                    "global_acceptance": []}
    for it in range(cfg.iterations):
        adapting = it < cfg.adapt_iterations
        n_acc = 0
        x_block, e_block, f_block = x, e, f
        for _ in range(cfg.local_steps):
            noise = torch.randn(x.shape, dtype=x.dtype, generator=gen)
            mu = x + 0.5 * h**2 * beta * f
            y = mu + h * noise
            oy = evaluate(potential, y)
            ey, fy = oy.energy.double(), oy.forces.double()
            ok = ok_fn(y)
            mu_back = y + 0.5 * h**2 * beta * fy
            log_fwd = -((y - mu) ** 2).sum((1, 2)) / (2 * h**2)
            log_bwd = -((x - mu_back) ** 2).sum((1, 2)) / (2 * h**2)
            log_a = _log_target(ey, beta, ok) - (-beta * e) + log_bwd - log_fwd
            acc = torch.log(torch.rand(w_n, dtype=x.dtype, generator=gen)) < log_a
            x = torch.where(acc[:, None, None], y, x)
            e = torch.where(acc, ey, e)
            f = torch.where(acc[:, None, None], fy, f)
            n_acc += int(acc.sum())
            if not adapting:
                acc_l[0] += int(acc.sum())
                acc_l[1] += w_n
        # The flow's proposals do not depend on the walkers (independence sampler): draw and
        # evaluate all global_steps × W of them at once. State checks are batched: the chain
        # of flow moves is run assuming unchecked points are inside; the MALA block ends and
        # the proposals it accepts are checked in one call; if one is outside, the chain is
        # rerun with that knowledge (rarely: flow samples of a state mostly lie in it).
        g_n = cfg.global_steps if flow is not None else 0
        if g_n:
            y, lqy, valid = flow.sample(w_n * g_n, gen)
            ok = valid & ok_fn(y)
            with torch.no_grad():
                oy = evaluate(potential, y)
            ey, fy = oy.energy.double(), oy.forces.double()
            lt_y = (_log_target(ey, beta, ok) - lqy).view(g_n, w_n)
            log_u = torch.log(torch.rand(g_n, w_n, dtype=x.dtype, generator=gen))
            lt_end = -beta * e - flow.log_prob(x).detach()
            lt_start = -beta * e_block - flow.log_prob(x_block).detach()
        moved = ((x != x_block).flatten(1).any(1) if member is not None and cfg.local_steps
                 else torch.zeros(w_n, dtype=torch.bool))
        block_out = torch.zeros(w_n, dtype=torch.bool)
        status = torch.zeros((g_n, w_n), dtype=torch.int8)  # 0 unchecked, 1 in, -1 out
        if member is None:
            status.fill_(1)
        while True:
            take = torch.zeros((g_n, w_n), dtype=torch.bool)  # proposal k accepted
            if g_n:
                lt_cur = torch.where(block_out, lt_start, lt_end)
                for k in range(g_n):
                    acc = (log_u[k] < lt_y[k] - lt_cur) & (status[k] >= 0)
                    lt_cur = torch.where(acc, lt_y[k], lt_cur)
                    take[k] = acc
            need = take & (status == 0)
            if not (moved.any() or need.any()):
                break
            inside = torch.as_tensor(member(torch.cat([x[moved],
                                                       y.view(g_n, w_n, *x.shape[1:])[need]])
                                            if g_n else x[moved]), dtype=torch.bool)
            n_b = int(moved.sum())
            block_out[moved] = ~inside[:n_b]
            status[need] = torch.where(inside[n_b:], 1, -1).to(torch.int8)
            moved = torch.zeros_like(moved)  # block ends are known from now on
        x = torch.where(block_out[:, None, None], x_block, x)
        e = torch.where(block_out, e_block, e)
        f = torch.where(block_out[:, None, None], f_block, f)
        n_left += int(block_out.sum())
        rate_l = n_acc / max(1, cfg.local_steps * w_n)
        if adapting and cfg.local_steps:
            h = float(h * np.exp(0.5 * (rate_l - cfg.target_accept)))
        n_gacc = 0
        if g_n:
            y, ey, fy = (v.view(g_n, w_n, *v.shape[1:]) for v in (y, ey, fy))
            for k in range(g_n):
                acc = take[k]
                x = torch.where(acc[:, None, None], y[k], x)
                e = torch.where(acc, ey[k], e)
                f = torch.where(acc[:, None, None], fy[k], f)
                n_gacc += int(acc.sum())
                if not adapting:
                    acc_g[0] += int(acc.sum())
                    acc_g[1] += w_n
        rate_g = n_gacc / max(1, g_n * w_n)
        hist["step_size"].append(h)
        hist["local_acceptance"].append(rate_l)
        hist["global_acceptance"].append(rate_g)
        if adapting:
            pool.append(x.numpy().copy())
            if flow is not None and (it + 1) % cfg.train_every == 0:
                from alflow.flows.train import train_flow

                data = np.concatenate(pool)[-cfg.max_train_samples:]
                if train_samples is not None and len(train_samples):
                    data = np.concatenate([np.asarray(train_samples, dtype=float), data])
                t1 = time.perf_counter()
                train_flow(flow, data, config={"seed": cfg.seed + it, **cfg.train})
                train_s += time.perf_counter() - t1
        else:
            frames.append(x.numpy().copy())
            energies.append(e.numpy().copy())
            for k, fn in cv_fns.items():
                cv_vals[k].append(np.asarray(fn(x).detach(), dtype=float))
        log.debug("iteration %d h=%.4f local %.2f global %.2f", it, h, rate_l, rate_g)
    pos = np.array(frames) if frames else np.zeros((0, *x.shape))
    en = np.array(energies) if energies else np.zeros((0, w_n))
    cv_arr = {k: np.array(v) for k, v in cv_vals.items()}
    rhat, ess = {}, {}
    for k, v in {"energy": en, **cv_arr}.items():
        if v.shape[0] >= 4:
            rhat[k] = split_rhat(v.T)
            ess[k] = ess_bulk(v.T)
    return MCMCResult(pos, en, cv_arr, acc_l[0] / max(1, acc_l[1]),
                      acc_g[0] / max(1, acc_g[1]) if flow is not None else float("nan"), h,
                      rhat, ess, time.perf_counter() - t0, train_s, hist,
                      n_left / max(1, w_n * cfg.iterations) if cfg.local_steps else 0.0)


__all__ = ["MCMCConfig", "MCMCResult", "adaptive_mcmc"]
