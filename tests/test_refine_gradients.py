"""Gradients of refinement losses: each observable's loss against finite differences on short
NVE trajectories (same start, so the trajectory is a smooth function of ε and σ), the adjoint
equal to direct back-propagation, and the reweighted g(r) gradient against finite differences
of the same estimator. Observables checked on cases with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from alflow.refine import observables as obs
from alflow.refine.dynamics import Box, State, lattice_start, nve, nvt
from alflow.refine.gradients import segment_gradient
from alflow.refine.potential import TrainableLJ
from alflow.refine.reweight import ess_fraction, log_weights, make_ensemble, weighted_average

EPS, SIG = 0.0103, 3.405
BOX = Box("Ar", 39.948, 32, (32 / 0.0213) ** (1 / 3), 100.0)   # 11.45 Å
RC = 5.5
DT, STEPS, EVERY = 10.0, 40, 2


@pytest.fixture(scope="module")
def start() -> State:
    """Two replicas of liquid argon after 300 NVT steps (3 ps)."""
    model = TrainableLJ(EPS, SIG, RC)
    run = nvt(model, BOX, lattice_start(BOX, 2, seed=3), None, DT, 300, 0.01, 100, seed=4)
    return run.end


def _model(log_shift=(0.0, 0.0)) -> TrainableLJ:
    return TrainableLJ(EPS * math.exp(log_shift[0]), SIG * math.exp(log_shift[1]), RC)


TIME_PS = torch.arange(STEPS // EVERY + 1, dtype=torch.float64) * DT * EVERY * 1e-3


def _d_loss(x, v):
    d = obs.diffusion_from_msd(x, TIME_PS, skip_fraction=0.2).mean()
    return ((d - 0.3) / 0.3) ** 2


def _vdos_loss(x, v):
    freq = torch.linspace(0.2, 3.0, 15, dtype=torch.float64)
    c = obs.vacf(v, 11)
    spec = obs.vdos(c, DT * EVERY * 1e-3, freq).mean(1)
    return torch.trapezoid((spec - 0.3) ** 2, freq)


def _vacf_d_loss(x, v):
    d = obs.diffusion_from_vacf(obs.vacf(v, 15), DT * EVERY * 1e-3).mean()
    return (d - 0.3) ** 2


def _fd(loss, start, h=1e-7) -> np.ndarray:
    """Central differences of loss(frames) in log ε and log σ, same start, no graph. The
    step is small enough that no pair crosses the cutoff between the two runs (the force of
    the truncated potential jumps there; autograd differentiates between such events)."""
    out = []
    for k in range(2):
        vals = []
        for s in (h, -h):
            shift = [0.0, 0.0]
            shift[k] = s
            x, v, _, _ = nve(_model(shift), BOX, start, DT, STEPS, EVERY)
            vals.append(float(loss(x, v)))
        out.append((vals[0] - vals[1]) / (2 * h))
    return np.array(out)


@pytest.mark.parametrize("loss", [_d_loss, _vdos_loss, _vacf_d_loss],
                         ids=["msd_diffusion", "vdos", "vacf_diffusion"])
def test_trajectory_loss_gradient_equals_finite_differences(start, loss):
    seg = segment_gradient(_model(), BOX, start, DT, STEPS, EVERY, loss, STEPS, "direct")
    grad = np.array([float(g) for g in seg.grads])
    fd = _fd(loss, start)
    assert np.abs(grad).min() > 0
    np.testing.assert_allclose(grad, fd, rtol=1e-4, atol=1e-6 * np.abs(fd).max())


@pytest.mark.parametrize("k", [STEPS, 15])
def test_adjoint_equals_direct_backpropagation(start, k):
    def loss(x, v):
        return _d_loss(x, v) + _vdos_loss(x, v)

    direct = segment_gradient(_model(), BOX, start, DT, STEPS, EVERY, loss, k, "direct")
    adjoint = segment_gradient(_model(), BOX, start, DT, STEPS, EVERY, loss, k, "adjoint")
    assert direct.loss == adjoint.loss
    for a, b in zip(adjoint.grads, direct.grads, strict=True):
        assert float(a) == pytest.approx(float(b), rel=1e-8)


def test_reweighted_rdf_gradient_equals_finite_differences_and_ess(start):
    model = _model()
    r = torch.linspace(3.0, 5.0, 9, dtype=torch.float64)
    x, _, _, _ = nve(model, BOX, start, DT, 60, 20)
    frames = x[1:]
    flat = frames.reshape(-1, BOX.n_atoms, 3)
    cell = BOX.cell(1)[0]
    values = {"rdf": obs.rdf(flat, cell.expand(flat.shape[0], 3, 3), r, 0.1)}
    ens = make_ensemble(model, frames, cell, BOX.kt, values)
    target = torch.linspace(2.0, 1.0, 9, dtype=torch.float64)

    def loss_at(m):
        g, _ = weighted_average(ens, "rdf", log_weights(m, ens))
        return ((g - target) ** 2).mean()

    assert ess_fraction(log_weights(model, ens)) == pytest.approx(1.0)
    grads = torch.autograd.grad(loss_at(model), model.leaves())
    h = 1e-6
    for k, g in enumerate(grads):
        sp, sm = [0.0, 0.0], [0.0, 0.0]
        sp[k], sm[k] = h, -h
        with torch.no_grad():
            fd = (float(loss_at(_model(sp))) - float(loss_at(_model(sm)))) / (2 * h)
        assert float(g) == pytest.approx(fd, rel=1e-5)
    assert ess_fraction(log_weights(_model((0.05, 0.0)), ens)) < 1.0


def test_rdf_of_uniform_points_is_one_and_matches_a_histogram():
    gen = torch.Generator().manual_seed(0)
    edge = 24.0
    x = torch.rand((4, 400, 3), generator=gen, dtype=torch.float64) * edge
    cell = (torch.eye(3, dtype=torch.float64) * edge).expand(4, 3, 3)
    r = torch.linspace(4.0, 9.0, 11, dtype=torch.float64)
    g = obs.rdf(x, cell, r, 0.3).mean(0)
    np.testing.assert_allclose(g.numpy(), 1.0, atol=0.05)
    # a lattice: all weight at the nearest-neighbour shell (6 at the spacing) for small width
    n, a = 4, 3.0
    grid = torch.stack(torch.meshgrid(*[torch.arange(n)] * 3, indexing="ij"), -1)
    lat = (grid.reshape(1, -1, 3).double()) * a
    cell = torch.eye(3, dtype=torch.float64)[None] * n * a
    rr = torch.linspace(2.0, 3.6, 161, dtype=torch.float64)
    gl = obs.rdf(lat, cell, rr, 0.02)[0]
    count = torch.trapezoid(gl * 4 * math.pi * rr**2, rr) * (n**3 - 1) / (n * a) ** 3
    assert float(count) == pytest.approx(6.0, rel=1e-3)
    assert float(rr[gl.argmax()]) == pytest.approx(a, abs=0.011)


def test_vdos_of_an_oscillation_peaks_at_its_frequency_and_vacf_diffusion_of_drift():
    f0, dt_ps = 2.0, 0.01
    t = torch.arange(400, dtype=torch.float64) * dt_ps
    v = torch.cos(2 * math.pi * f0 * t)[:, None, None, None] * torch.tensor([1.0, 0, 0])
    v = v.expand(400, 1, 5, 3) / obs.VELOCITY_A_PER_PS
    freq = torch.linspace(0.1, 5.0, 491, dtype=torch.float64)
    spec = obs.vdos(obs.vacf(v, 200), dt_ps, freq)[:, 0]
    assert float(freq[spec.argmax()]) == pytest.approx(f0, abs=0.02)
    assert float(torch.trapezoid(spec, freq)) == pytest.approx(1.0)
    # a velocity decorrelating as exp(-t/τ): D = <v²>τ/3
    c = torch.exp(-t / 0.1)[:, None] * 3.0
    assert float(obs.diffusion_from_vacf(c, dt_ps)[0]) == pytest.approx(0.1, rel=2e-3)
    # MSD growing as 6 D t gives D
    x = torch.zeros(50, 2, 3, 3, dtype=torch.float64)
    tt = torch.arange(50, dtype=torch.float64) * 0.1
    x[..., 0] = torch.sqrt(6 * 0.25 * tt)[:, None, None]
    assert obs.diffusion_from_msd(x, tt).numpy() == pytest.approx([0.25, 0.25])
