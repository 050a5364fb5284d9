"""Free energies against exact answers: Gaussian, 2-D double well (quadrature), a harmonic
cluster through the Z-matrix flow (IS and BAR), DFT-style reweighting (EXP, BAR), states."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from ase.units import kB
from flow_targets import HarmonicFrame

from alflow.estimate import (
    FreeEnergy,
    OverlapWarning,
    delta_f,
    is_free_energy,
    populations,
    reweight,
)
from alflow.flows import BoltzmannGenerator, CouplingFlow, FlowConfig, train_flow
from alflow.flows.estimate import flow_bar_free_energy, flow_free_energy, sample_flow
from alflow.potential import LennardJones
from alflow.states import BasinStates, CVStates, quench, wall

T = 300.0
KT = kB * T


def _agree(est: FreeEnergy, exact: float, max_err_kt: float) -> None:
    """Within 3 reported standard errors (can fail), with an error bar that is useful."""
    assert est.err_ev < max_err_kt * KT * (est.temperature_k / T)
    assert abs(est.f_ev - exact) < 3 * est.err_ev, (est.f_ev, exact, est.err_ev)


def test_gaussian_free_energy_by_importance_sampling():
    torch.manual_seed(0)
    d = 4
    a = torch.tensor([[2.0, 0.3, 0, 0], [0.3, 1.0, 0.2, 0], [0, 0.2, 0.5, 0], [0, 0, 0, 3.0]],
                     dtype=torch.float64)
    exact_log_z = 0.5 * d * math.log(2 * math.pi) - 0.5 * float(torch.logdet(a))
    flow = CouplingFlow(d, torch.zeros(d, dtype=torch.bool), FlowConfig(layers=2)).double()
    flow.fit_normalisation(torch.randn(500, d, dtype=torch.float64) * 1.6)  # a wider proposal
    z, logq = flow.sample(20000, torch.Generator().manual_seed(1))
    u = 0.5 * torch.einsum("bi,ij,bj->b", z, a, z)
    est = is_free_energy((-u - logq).numpy(), T, seed=2)
    _agree(est, -KT * exact_log_z, 0.05)
    assert 0.05 < est.ess_fraction < 1


def _double_well(z: torch.Tensor) -> torch.Tensor:
    """Reduced energy (units of kT) of a tilted 2-D double well."""
    x, y = z[:, 0], z[:, 1]
    return 3.0 * (x**2 - 1) ** 2 + 0.4 * x + 0.5 * (y / 0.7) ** 2


def test_double_well_states_by_quadrature():
    # exact by quadrature: x on a fine grid, y Gaussian (analytic)
    xs = np.linspace(-3, 3, 20001)
    dens = np.exp(-(3.0 * (xs**2 - 1) ** 2 + 0.4 * xs))
    dx = xs[1] - xs[0]
    log_zy = math.log(math.sqrt(2 * math.pi) * 0.7)
    exact = {"left": -math.log(dens[xs < 0].sum() * dx) - log_zy,
             "right": -math.log(dens[xs >= 0].sum() * dx) - log_zy}
    # exact samples (inverse CDF on the grid) to train the flow by forward KL
    rng = np.random.default_rng(0)
    cdf = np.cumsum(dens) / dens.sum()
    xsamp = np.interp(rng.random(4000), cdf, xs)
    data = torch.tensor(np.stack([xsamp, 0.7 * rng.standard_normal(4000)], 1))
    torch.manual_seed(0)
    flow = CouplingFlow(2, torch.zeros(2, dtype=torch.bool), FlowConfig(layers=4, hidden=32,
                                                                        bins=10)).double()
    flow.fit_normalisation(data)
    opt = torch.optim.Adam(flow.parameters(), lr=3e-3)
    for _ in range(150):
        idx = torch.randint(0, len(data), (256,))
        loss = -flow.log_prob(data[idx]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    z, logq = flow.sample(20000, torch.Generator().manual_seed(3))
    lw = (-_double_well(z) - logq).detach().numpy()
    states = CVStates({"left": (lambda p: p[:, 0], -np.inf, 0.0),
                       "right": (lambda p: p[:, 0], 0.0, np.inf)})
    which = states.assign(z.detach())
    fe = {}
    for k, name in enumerate(states.names):
        # reduced free energies: temperature chosen so that kT = 1 eV for the check
        fe[name] = is_free_energy(np.where(which == k, lw, -np.inf), 1 / kB, seed=k)
        assert abs(fe[name].f_ev - exact[name]) < 3 * fe[name].err_ev
        assert fe[name].err_ev < 0.05
    d = delta_f(fe["left"], fe["right"])
    assert abs(d.value_ev - (exact["right"] - exact["left"])) < 3 * d.error_ev
    pops = populations(fe)
    assert abs(sum(p for p, _ in pops.values()) - 1) < 1e-12


@pytest.fixture(scope="module")
def harmonic():
    target = HarmonicFrame(n_atoms=5, s=0.06, temperature_k=T)
    data = target.exact_samples(3000, seed=1)
    torch.manual_seed(0)
    bg = BoltzmannGenerator.build(target.reference, target.numbers,
                                  FlowConfig(coordinates="zmatrix", layers=4, hidden=32),
                                  samples=data)
    train_flow(bg, data, config={"steps": 150, "batch_size": 256})
    return target, bg, data


def test_harmonic_cluster_free_energy_through_the_zmatrix_flow(harmonic):
    target, bg, _ = harmonic
    assert bg.symmetry_number == 1
    est = flow_free_energy(bg, target, T, n=6000, seed=4, restrict=wall(50.0))
    _agree(est, target.free_energy(), 0.05)
    assert est.ess_fraction > 0.3


def test_harmonic_cluster_free_energy_by_bar(harmonic):
    target, bg, _ = harmonic
    target_x = target.exact_samples(3000, seed=9)
    est = flow_bar_free_energy(bg, target, T, target_x, n=3000, seed=5)
    _agree(est, target.free_energy(), 0.05)
    drawn = sample_flow(bg, target, T, 3000, seed=5)  # the same draw, handed in: reused
    again = flow_bar_free_energy(bg, target, T, target_x, seed=99, samples=drawn)
    assert again.f_ev == est.f_ev and again.n == 3000


def test_bar_relabels_walkers_into_the_flow_cell(harmonic):
    """MCMC walkers that crossed into other permutational copies of the state (targets
    relabelled at random, shaped (T, W, N, 3)): BAR relabels them into the flow's cell first
    and still finds F; its error covers the walker bootstrap."""
    target, bg, _ = harmonic

    class Symmetric:  # the same surface in every labelling: one state, many copies
        numbers = target.numbers

        def energy(self, x):
            return target.energy(bg.coords.canonicalize(x))

    x = target.exact_samples(1000, seed=9)
    rng = np.random.default_rng(3)
    perm = np.stack([rng.permutation(len(target.numbers)) for _ in x])
    walkers = np.take_along_axis(x, perm[..., None], 1).reshape(100, 10, -1, 3)
    assert (perm != np.arange(len(target.numbers))).any(1).mean() > 0.9
    est = flow_bar_free_energy(bg, Symmetric(), T, walkers, n=3000, seed=5)
    _agree(est, target.free_energy(), 0.05)
    plain = flow_bar_free_energy(bg, Symmetric(), T, walkers, n=3000, seed=5, n_bootstrap=0)
    assert est.err_ev >= plain.err_ev


def _reverse_kl(bg, target, n=2000):
    with torch.no_grad():
        z, logq = bg.flow.sample(n, torch.Generator().manual_seed(0))
        x, logj = bg.coords.inverse(z)
        return float((logq + target.energy(x) / target.kt - logj).mean())


def test_reverse_kl_training_improves_the_flow(harmonic):
    target, _, data = harmonic
    torch.manual_seed(1)
    bg = BoltzmannGenerator.build(target.reference, target.numbers,
                                  FlowConfig(layers=2, hidden=16), samples=data)
    before = _reverse_kl(bg, target)
    train_flow(bg, None, target, T, {"steps": 80, "forward_weight": 0.0, "reverse_batch": 128,
                                     "lr": 5e-3})
    after = _reverse_kl(bg, target)
    # reverse KL = ln Z_flow-part − ln Z: it is bounded below by −ln Z and must drop toward it
    assert after < before - 1.0
    assert after > -target.log_z() - 0.05


def test_reweighting_exp_and_bar_against_exact():
    # potential ensemble x ~ N(0, s²); reference energy E_ref = E_pot + c·x  =>
    # F_ref − F_pot = −c² s² / (2 kT) exactly; the reference ensemble is N(−c s²/kT, s²)
    rng = np.random.default_rng(0)
    s, c, n = 0.4, 0.004, 4000
    x = s * rng.standard_normal(n)
    e_pot = 0.5 * KT * (x / s) ** 2
    exact = -(c * s) ** 2 / (2 * KT)
    r = reweight(e_pot, e_pot + c * x, T)
    assert r.reliable and r.method == "exp-jackknife"
    assert abs(r.correction_ev - exact) < 3 * r.error_ev
    y = -c * s**2 / KT + s * rng.standard_normal(n)
    e_pot_y = 0.5 * KT * (y / s) ** 2
    rb = reweight(e_pot, e_pot + c * x, T, e_pot_ref_samples=e_pot_y,
                  e_ref_ref_samples=e_pot_y + c * y)
    assert rb.method == "bar"
    assert abs(rb.correction_ev - exact) < 3 * rb.error_ev
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bad = reweight(e_pot[:50], e_pot[:50] + 40 * c * x[:50] / s, T)
    assert not bad.reliable
    assert any(issubclass(w.category, OverlapWarning) for w in caught)


def test_quench_basins_of_lj7():
    from lj7_structures import COH, NUMBERS, PBP

    pot = LennardJones(NUMBERS)
    states = BasinStates(pot, {"pbp": PBP, "coh": COH})
    assert np.allclose(states.energies / 0.0103, [-16.50538, -15.93504], atol=1e-4)
    rng = np.random.default_rng(0)
    x = np.concatenate([PBP + rng.normal(scale=0.1, size=(4, 7, 3)),
                        COH + rng.normal(scale=0.1, size=(4, 7, 3)),
                        rng.permutation(PBP)[None] @ np.diag([1, -1, 1])])  # relabelled mirror
    assert states.assign(x).tolist() == [0] * 4 + [1] * 4 + [0]
    # a minimum of neither state: a different 7-atom minimum (from a stretched structure)
    far = np.array([[0, 0, 0], [3.8, 0, 0], [7.6, 0, 0], [11.4, 0, 0], [15.2, 0, 0],
                    [19.0, 0, 0], [1.9, 3.3, 0]], dtype=float)
    mins, _, ok = quench(pot, far[None])
    assert states.assign(far[None]).tolist() == [-1]
    del mins, ok


def test_pipeline_state_free_energy_and_delta_f():
    """The one-call pipeline (flow + adaptive MCMC + IS) on a target with exact F per state:
    states 'a'/'b' are the halves z_b < μ_b / z_b ≥ μ_b of the frame bond coordinate, whose
    J-tilted Gaussian integrals are μ²/2 ∓ 2μs/√(2π) + s²/2."""
    from alflow.flows.pipeline import free_energy_difference

    target = HarmonicFrame(n_atoms=4, s=0.08, temperature_k=T, seed=2)
    seeds = target.exact_samples(600, seed=0)
    mu, s0 = float(target.mu[0]), float(target.s[0])

    def cv(x):
        return target.coords.forward(x)[0][:, 0] - mu

    states = CVStates({"a": (cv, -np.inf, 0.0), "b": (cv, 0.0, np.inf)})
    half = {"a": mu**2 / 2 - 2 * mu * s0 / math.sqrt(2 * math.pi) + s0**2 / 2,
            "b": mu**2 / 2 + 2 * mu * s0 / math.sqrt(2 * math.pi) + s0**2 / 2}
    exact = {k: target.free_energy() + KT * math.log((mu**2 + s0**2) / v)
             for k, v in half.items()}
    cfg = {"flow": {"layers": 3, "hidden": 16}, "train": {"steps": 80},
           "mcmc_config": {"iterations": 4, "adapt_iterations": 2, "local_steps": 2,
                           "global_steps": 1, "train_every": 2, "train": {"steps": 10}},
           "walkers": 16, "retrain_steps": 20, "samples": 3000}
    refs = {"a": target.reference, "b": target.reference}
    d, res = free_energy_difference(target, refs, target.numbers, T, {"a": seeds, "b": seeds},
                                    "a", "b", cfg, wall_radius=40.0, states=states)
    for name, r in res.items():
        _agree(r.free_energy, exact[name], 0.1)
        assert r.mcmc is not None and r.mcmc.global_acceptance > 0
    assert abs(d.value_ev - (exact["b"] - exact["a"])) < 3 * d.error_ev


def test_generic_estimators_do_not_import_the_flows():
    """alflow.estimate is below alflow.flows: the flows' estimators import it, never the
    other way round (a fresh interpreter, so nothing else has loaded the flows)."""
    import subprocess
    import sys

    code = ("import sys, alflow.estimate; "
            "print(sorted(m for m in sys.modules if m.startswith('alflow.flows')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
