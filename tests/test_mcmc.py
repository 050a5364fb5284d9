"""Adaptive MCMC leaves a known target invariant (moments); diagnostics on known chains."""

from __future__ import annotations

import numpy as np
import torch
from flow_targets import HarmonicFrame

from alflow.flows import BoltzmannGenerator, FlowConfig, train_flow
from alflow.sampling.diagnostics import ess_bulk, split_rhat
from alflow.sampling.mcmc import adaptive_mcmc
from alflow.states import wall


def test_mala_and_flow_imh_leave_the_target_invariant():
    target = HarmonicFrame(n_atoms=4, s=0.08, temperature_k=100.0, seed=2)
    x0 = target.exact_samples(256, seed=3)
    torch.manual_seed(0)
    bg = BoltzmannGenerator.build(target.reference, target.numbers,
                                  FlowConfig(layers=2, hidden=16), samples=x0)
    train_flow(bg, x0, config={"steps": 40})
    cfg = {"iterations": 14, "adapt_iterations": 4, "local_steps": 4, "global_steps": 2,
           "step_size": 0.03, "train_every": 2, "train": {"steps": 10}}
    res = adaptive_mcmc(target, bg, x0, target.temperature_k, cfg, restrict=wall(30.0),
                        cvs={"z_b": lambda x: target.coords.forward(x)[0][:, 0]},
                        retrain=lambda d, c: train_flow(bg, d, config=c))
    assert 0.2 < res.local_acceptance < 0.95
    assert res.global_acceptance > 0.05
    z, _ = target.coords.forward(torch.as_tensor(res.positions.reshape(-1, 4, 3)))
    z = z.numpy()
    mean, var = target.exact_moments()
    # standard error from the walkers' final-iteration spread and an ESS-based inflation
    n_eff = max(256.0, res.ess["z_b"])
    se = np.sqrt(var / n_eff)
    assert np.all(np.abs(z.mean(0) - mean) < 5 * se), (z.mean(0) - mean) / se
    assert np.all(np.abs(z.var(0) / var - 1) < 0.25)
    assert set(res.rhat) == {"energy", "z_b"}


def test_mala_alone_samples_the_target():
    target = HarmonicFrame(n_atoms=4, s=0.08, temperature_k=100.0, seed=2)
    x0 = target.exact_samples(128, seed=4)
    res = adaptive_mcmc(target, None, x0, target.temperature_k,
                        {"iterations": 12, "adapt_iterations": 4, "local_steps": 5,
                         "global_steps": 0})
    z, _ = target.coords.forward(torch.as_tensor(res.positions.reshape(-1, 4, 3)))
    mean, var = target.exact_moments()
    assert np.all(np.abs(z.numpy().mean(0) - mean) < 5 * np.sqrt(var / 128))
    assert np.isnan(res.global_acceptance)


def test_rhat_and_ess_on_known_chains():
    rng = np.random.default_rng(0)
    iid = rng.standard_normal((8, 1000))
    assert split_rhat(iid) < 1.01
    assert 0.8 < ess_bulk(iid) / iid.size < 1.2
    shifted = iid + np.arange(8)[:, None] * 0.5
    assert split_rhat(shifted) > 1.1
    rho = 0.9
    ar = np.zeros((8, 4000))
    for t in range(1, 4000):
        ar[:, t] = rho * ar[:, t - 1] + np.sqrt(1 - rho**2) * rng.standard_normal(8)
    expect = ar.size * (1 - rho) / (1 + rho)
    assert 0.7 < ess_bulk(ar) / expect < 1.3


def test_retraining_on_walkers_keeps_the_seed_samples():
    """With ``train_samples`` (the seeds) joined to the few walkers of each retraining, the
    flow keeps its fit to the target (held-out NLL of exact samples); retrained on the
    walkers alone it overfits them and the held-out NLL gets worse."""
    target = HarmonicFrame(n_atoms=4, s=0.08, temperature_k=100.0, seed=2)
    seeds = target.exact_samples(1000, seed=5)
    held_out = target.exact_samples(1000, seed=6)
    cfg = {"iterations": 3, "adapt_iterations": 3, "local_steps": 2, "global_steps": 1,
           "step_size": 0.03, "train_every": 1, "train": {"steps": 80}}
    nll = {}
    for name, extra in (("seeds", seeds), ("walkers", None)):
        torch.manual_seed(0)
        bg = BoltzmannGenerator.build(target.reference, target.numbers,
                                      FlowConfig(layers=4, hidden=64), samples=seeds)
        train_flow(bg, seeds, config={"steps": 200})
        with torch.no_grad():
            before = -float(bg.flow.log_prob(bg.prepare(held_out)).mean())
        adaptive_mcmc(target, bg, seeds[:8], target.temperature_k, cfg, restrict=wall(30.0),
                      train_samples=extra, retrain=lambda d, c, bg=bg: train_flow(bg, d, config=c))
        with torch.no_grad():
            nll[name] = -float(bg.flow.log_prob(bg.prepare(held_out)).mean()) - before
    assert nll["seeds"] < 0.2, nll  # measured 0.10
    assert nll["walkers"] > nll["seeds"] + 1.0, nll  # measured 6.8


class _DoubleWell:
    """One atom: U = a (x² − 1)² + ½ k (y² + z²) eV (x, y, z in Å); two states x < 0, x > 0."""

    a, k = 0.05, 1.0

    def energy(self, pos: torch.Tensor) -> torch.Tensor:
        x, yz = pos[:, 0, 0], pos[:, 0, 1:]
        return self.a * (x**2 - 1) ** 2 + 0.5 * self.k * (yz**2).sum(-1)

    def right_well_moments(self, t_k: float) -> tuple[float, float]:
        """Mean and variance of x (Å) in the x > 0 state at t_k K, by quadrature."""
        from ase.units import kB

        xs = np.linspace(0.0, 3.0, 30001)
        p = np.exp(-self.a * (xs**2 - 1) ** 2 / (kB * t_k))
        mean = np.trapezoid(xs * p, xs) / np.trapezoid(p, xs)
        return mean, np.trapezoid(xs**2 * p, xs) / np.trapezoid(p, xs) - mean**2


def test_mala_blocks_that_leave_the_state_are_rejected():
    """Walkers of the x > 0 state cross the 1.9 kT barrier under MALA; rejecting the blocks that
    end on the other side samples the restricted target exactly (moments by quadrature)."""
    pot, t_k = _DoubleWell(), 300.0
    x0 = np.zeros((200, 1, 3))
    x0[:, 0, 0] = 1.0
    cfg = {"iterations": 40, "adapt_iterations": 5, "local_steps": 5, "global_steps": 0,
           "step_size": 0.3}
    res = adaptive_mcmc(pot, None, x0, t_k, cfg,
                        member=lambda y: torch.as_tensor(y[:, 0, 0] > 0))
    free = adaptive_mcmc(pot, None, x0, t_k, cfg)
    mean, var = pot.right_well_moments(t_k)
    x = res.positions[..., 0, 0]
    assert (x > 0).all() and res.left_state > 0.01
    se = np.sqrt(var / res.ess["energy"])
    assert abs(x.mean() - mean) < 5 * se, (x.mean(), mean, se)
    assert (free.positions[..., 0, 0] < 0).mean() > 0.1  # without it, walkers cross


class _GaussianProposal:
    """A stand-in flow: a normal density over one atom's position, widths s (3,) Å."""

    def __init__(self, s: tuple[float, float, float]):
        self.s = torch.tensor(s, dtype=torch.float64)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return (-0.5 * (x[:, 0] / self.s) ** 2 - torch.log(self.s)).sum(-1) \
            - 1.5 * np.log(2 * np.pi)

    def sample(self, n: int, generator: torch.Generator):
        y = self.s * torch.randn((n, 1, 3), dtype=torch.float64, generator=generator)
        return y, self.log_prob(y), torch.ones(n, dtype=torch.bool)


def test_batched_flow_proposals_respect_the_state():
    """Independence proposals spanning both wells (half of them outside the x > 0 state):
    the state is sampled exactly (moments by quadrature) with batched state checks."""
    pot, t_k = _DoubleWell(), 300.0
    x0 = np.zeros((100, 1, 3))
    x0[:, 0, 0] = 1.0
    calls = []

    def member(y: torch.Tensor) -> torch.Tensor:
        calls.append(len(y))
        return torch.as_tensor(y[:, 0, 0] > 0)

    cfg = {"iterations": 30, "adapt_iterations": 0, "local_steps": 3, "global_steps": 6,
           "step_size": 0.3}
    res = adaptive_mcmc(pot, _GaussianProposal((1.2, 0.2, 0.2)), x0, t_k, cfg, member=member)
    mean, var = pot.right_well_moments(t_k)
    x = res.positions[..., 0, 0]
    assert (x > 0).all() and res.global_acceptance > 0.2
    se = np.sqrt(var / res.ess["energy"])
    assert abs(x.mean() - mean) < 5 * se, (x.mean(), mean, se)
    assert abs(x.var() / var - 1) < 0.15, (x.var(), var)
    # batched: a few calls per iteration, on the block ends and the flow chains' ends only
    # (at most two configurations per walker and iteration, however many moves a chain takes)
    assert len(calls) <= 3 * cfg["iterations"], len(calls)
    assert sum(calls) <= cfg["iterations"] * 2 * 100, sum(calls)


class _LateCheck:
    """A state check answered only when drained (as a quench still running would be): the
    sampler goes on assuming inside and must redo what an outside answer changes."""

    fire = None

    def __init__(self, member):
        self.member = member
        self.queue, self.answers, self.next, self.late = [], {}, 0, 0

    def submit(self, x, energy=None, forces=None):
        ids = torch.arange(self.next, self.next + len(x))
        self.next += len(x)
        self.queue += list(zip(ids.tolist(), x, strict=True))
        return ids

    def status(self, ids):
        return torch.tensor([self.answers.get(i, 0) for i in ids.tolist()], dtype=torch.int8)

    def drain(self):
        if self.queue:
            ids, xs = zip(*self.queue, strict=True)
            inside = self.member(torch.stack(xs))
            self.late += int((~inside).sum())
            self.answers.update(zip(ids, torch.where(inside, 1, -1).tolist(), strict=True))
            self.queue = []

    def forget(self, ids):
        for i in ids.tolist():
            self.answers.pop(i, None)


def test_late_state_checks_sample_the_state_exactly():
    """Checks answered one iteration late (walkers go on assuming inside and redo their
    iteration when the answer is outside): MALA blocks crossing the barrier and flow
    proposals spanning both wells, and the x > 0 state is still sampled exactly (moments
    by quadrature), with the same acceptance as the immediate check."""
    pot, t_k = _DoubleWell(), 300.0
    x0 = np.zeros((100, 1, 3))
    x0[:, 0, 0] = 1.0
    cfg = {"iterations": 30, "adapt_iterations": 3, "local_steps": 4, "global_steps": 4,
           "step_size": 0.3}
    check = _LateCheck(lambda y: y[:, 0, 0] > 0)
    flow = _GaussianProposal((1.2, 0.2, 0.2))
    res = adaptive_mcmc(pot, flow, x0, t_k, cfg, member=check)
    now = adaptive_mcmc(pot, flow, x0, t_k, cfg, member=lambda y: y[:, 0, 0] > 0)
    mean, var = pot.right_well_moments(t_k)
    x = res.positions[..., 0, 0]
    assert res.positions.shape == (27, 100, 1, 3)
    assert (x > 0).all() and check.late > 100 and res.left_state > 0.01
    se = np.sqrt(var / res.ess["energy"])
    assert abs(x.mean() - mean) < 5 * se, (x.mean(), mean, se)
    assert abs(x.var() / var - 1) < 0.15, (x.var(), var)
    for k in ("local_acceptance", "global_acceptance", "left_state"):
        assert abs(getattr(res, k) - getattr(now, k)) < 0.03, k


def test_quench_basin_checks_ride_along_and_keep_walkers_in_their_basin():
    """lj7 (plain LJ) at 40 K, MALA blocks that often leave the shallow capped-octahedron
    basin: with the quench checks answered during the next iteration's MALA steps, every
    production walker quenches to the state's minimum, and the rejected blocks are counted."""
    from lj7_structures import COH, NUMBERS, PBP

    from alflow.potential import LennardJones
    from alflow.states import BasinStates

    pot = LennardJones(NUMBERS)
    states = BasinStates(pot, {"pbp": PBP - PBP.mean(0), "coh": COH - COH.mean(0)})
    x0 = np.repeat(states.minima[1][None], 12, 0)
    check = states.checker("coh")
    cfg = {"iterations": 8, "adapt_iterations": 2, "local_steps": 15, "global_steps": 0,
           "step_size": 0.12}
    res = adaptive_mcmc(pot, None, x0, 40.0, cfg, restrict=wall(8.5125), member=check)
    assert res.positions.shape == (6, 12, 7, 3)
    assert (states.assign(res.positions.reshape(-1, 7, 3)) == 1).all()
    assert res.left_state > 0.02, res.left_state
    assert check.fire.force_evals > 0 and len(check.fire) == 0
