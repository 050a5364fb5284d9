"""Annealed importance sampling from a flow (alflow.flows.anneal) against exact answers: a
harmonic cluster (whole space and a half-space state), confinement to the state, and a
Student-t base that stays normalised."""

from __future__ import annotations

import math

import pytest
import torch
from ase.units import kB
from flow_targets import HarmonicFrame

from alflow.flows import BoltzmannGenerator, FlowConfig, train_flow
from alflow.flows.anneal import AnnealConfig
from alflow.flows.estimate import flow_free_energy
from alflow.states import wall

T = 300.0
KT = kB * T


@pytest.fixture(scope="module")
def rough():
    """A harmonic target and a deliberately under-trained flow (low IS efficiency)."""
    target = HarmonicFrame(n_atoms=5, s=0.06, temperature_k=T)
    data = target.exact_samples(300, seed=1)
    torch.manual_seed(0)
    bg = BoltzmannGenerator.build(target.reference, target.numbers,
                                  FlowConfig(coordinates="zmatrix", layers=2, hidden=16),
                                  samples=data)
    train_flow(bg, data, config={"steps": 60, "batch_size": 128})
    return target, bg


def test_annealing_raises_the_ess_and_stays_exact(rough):
    target, bg = rough
    plain = flow_free_energy(bg, target, T, n=2000, seed=3, restrict=wall(50.0))
    ais = flow_free_energy(bg, target, T, n=2000, seed=3, restrict=wall(50.0),
                           anneal=AnnealConfig(levels=20, mala_steps=2, step_size=0.02))
    assert plain.ess_fraction < 0.5
    assert ais.ess_fraction > 4 * plain.ess_fraction
    assert ais.err_ev < plain.err_ev
    assert abs(ais.f_ev - target.free_energy()) < 3 * ais.err_ev, (ais.f_ev, ais.err_ev)
    assert 0.3 < ais.extra["anneal_acceptance"] < 0.9


def test_zero_levels_is_plain_importance_sampling(rough):
    target, bg = rough
    a = flow_free_energy(bg, target, T, n=500, seed=5)
    b = flow_free_energy(bg, target, T, n=500, seed=5, anneal=AnnealConfig(levels=0))
    assert a.f_ev == b.f_ev and a.ess == b.ess


def test_confined_annealing_of_a_half_space_state(rough):
    """State S = {z₃ < μ₃} (a Cartesian coordinate of a non-frame atom, J-independent):
    Z_S = Z/2 exactly, so F_S = F + kT ln 2. Confined moves are undone when they leave S."""
    target, bg = rough
    mu3 = float(target.mu[3])

    def member(x: torch.Tensor) -> torch.Tensor:
        z, _ = target.coords.forward(torch.as_tensor(x).double())
        return z[:, 3] < mu3

    # flow coordinates are a Z-matrix, the target's frame z is only used to define S
    est = flow_free_energy(bg, target, T, n=3000, seed=11, member=member,
                           anneal=AnnealConfig(levels=10, mala_steps=2, step_size=0.01))
    exact = target.free_energy() + KT * math.log(2.0)
    assert abs(est.f_ev - exact) < 3 * est.err_ev, (est.f_ev, exact, est.err_ev)
    assert est.err_ev < 0.2 * KT
    assert est.extra["anneal_left_state"] > 0.01  # moves crossing z₃ = μ₃ were undone


def test_student_t_base_density_is_normalised_and_heavier_tailed():
    from alflow.flows.model import CouplingFlow

    flow = CouplingFlow(2, torch.tensor([False, False]),
                        FlowConfig(layers=1, hidden=8, base_dof=5.0)).double()
    y = torch.linspace(-80, 80, 1601, dtype=torch.float64)
    yy, xx = torch.meshgrid(y, y, indexing="ij")
    p = flow.log_prob(torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)).exp()
    assert abs(float(p.detach().sum()) * 0.1**2 - 1.0) < 2e-3
    u = flow._base_sample(200000, torch.Generator().manual_seed(0))
    assert abs(float(u.var()) - 1.0) < 0.05  # unit variance
    assert float((u.abs() > 4).double().mean()) > 10 * 6.3e-5  # normal: P(|u| > 4) = 6.3e-5
