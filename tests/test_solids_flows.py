"""Flows for crystals: Jacobians against autograd (with the box), the harmonic crystal's exact
free energy at fixed volume and in NPT, periodic energies against ASE, training by energy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT as AseEMT
from ase.units import kB
from scipy.special import gammaln

from alflow.errors import InputError
from alflow.flows import FlowConfig, train_flow
from alflow.periodic import lennard_jones_energy
from alflow.solids.crystal_energy import CrystalEMT, CrystalLennardJones
from alflow.solids.flows import (
    CrystalCoordinates,
    CrystalFlow,
    Enthalpy,
    assign_to_sites,
    crystal_bar_free_energy,
    crystal_free_energy,
    gaussian_fit,
    pack,
    unpack,
)

T = 300.0
KT = kB * T


def _fcc(a: float = 1.6, rep: int = 1):
    return bulk("Ar", "fcc", a=a, cubic=True).repeat((rep, rep, rep))


class Harmonic:
    """U = ½k Σ_{i≥1} |d_i|² − α ln V + ½κ Σ_{i>j} (h_ij/h_ii)² + ½κ_a kT Σ (ln h_ii − ln h0_ii)²,
    d_i the displacement of atom i from its site relative to atom 0 in the actual cell:
    exactly solvable (module doc of alflow.solids.flows, Gaussian displacements and tilts)."""

    def __init__(self, ref, cell0, k, alpha=0.0, kappa=0.0, kappa_a=0.0):
        self.numbers = np.full(len(ref), 18)
        self.frac0 = torch.as_tensor(ref @ np.linalg.inv(cell0))
        self.log_h0 = torch.as_tensor(np.log(np.diag(cell0)))
        self.k, self.alpha, self.kappa, self.kappa_a = k, alpha, kappa, kappa_a

    def energy(self, pos, cell):
        frac = pos @ torch.linalg.inv(cell)
        d = (frac[:, 1:] - frac[:, :1]) - (self.frac0[1:] - self.frac0[:1])
        d = (d - torch.round(d)) @ cell
        u = 0.5 * self.k * (d**2).sum((1, 2)) - self.alpha * torch.log(torch.linalg.det(cell))
        off = torch.stack([cell[:, 1, 0] / cell[:, 1, 1], cell[:, 2, 0] / cell[:, 2, 2],
                           cell[:, 2, 1] / cell[:, 2, 2]], -1)
        u = u + 0.5 * self.kappa * (off**2).sum(-1)
        dl = torch.log(torch.diagonal(cell, dim1=1, dim2=2)) - self.log_h0
        return u + 0.5 * self.kappa_a * KT * (dl**2).sum(-1)


def _log_gauss(n_atoms, k):
    return 1.5 * (n_atoms - 1) * math.log(2 * math.pi * KT / k)


# ---------------------------------------------------------------- coordinates and Jacobians
@pytest.mark.parametrize("upper", [False, True])
@pytest.mark.parametrize("box", ["fixed", "isotropic", "triangular"])
def test_round_trip_and_log_jacobian_against_autograd(box, upper):
    at = _fcc()
    n = len(at)
    rng = np.random.default_rng(0)
    dim = 3 * (n - 1) + {"fixed": 0, "isotropic": 1, "triangular": 6}[box]
    a = rng.normal(size=(dim, dim)) * 0.05
    chol = np.tril(a) + np.eye(dim) * 0.3
    chol = chol.T if upper else chol  # gaussian_fit's factor is upper triangular
    coords = CrystalCoordinates(at.positions, at.cell[:], box, rng.normal(size=dim) * 0.05, chol)
    z = torch.as_tensor(rng.normal(size=(3, dim)) * 0.3)
    x, logj = coords.inverse(z)
    z2, logj2 = coords.forward(x)
    assert torch.allclose(z, z2, atol=1e-10) and torch.allclose(logj, logj2)
    h0_v = abs(np.linalg.det(at.cell[:]))
    for b in range(3):
        def independent(zz):
            """z -> (relative Cartesian displacements of atoms 1.., the cell's free entries)."""
            pos, cell = unpack(coords.inverse(zz[None])[0])
            rel = (pos[0, 1:] - pos[0, :1]).reshape(-1)
            if box == "fixed":
                return rel
            if box == "isotropic":
                return torch.cat([rel, torch.linalg.det(cell[0])[None]])
            h = cell[0]  # ln h_ii and the tilts h_ij / h_ii: dμ = V Π d ln h_ii Π d tilt
            tilts = torch.stack([h[1, 0] / h[1, 1], h[2, 0] / h[2, 2], h[2, 1] / h[2, 2]])
            return torch.cat([rel, torch.log(torch.diagonal(h)), tilts])
        jac = torch.autograd.functional.jacobian(independent, z[b])
        _, logabs = torch.linalg.slogdet(jac)
        pos, cell = unpack(x[b:b + 1])
        log_v = float(torch.log(torch.linalg.det(cell[0]).abs()))
        # log J = log |∂(independent)/∂z| + log(V/N) (the Wigner–Seitz cell of atom 0), and
        # the factor V of the triangular cell measure
        extra = log_v if box == "triangular" else 0.0
        assert float(logj[b]) == pytest.approx(float(logabs) + log_v - math.log(n) + extra,
                                               abs=1e-9)
        if box == "fixed":
            assert log_v == pytest.approx(math.log(h0_v))


def test_flow_log_prob_against_autograd_with_the_box():
    at = _fcc()
    coords = CrystalCoordinates(at.positions, at.cell[:], "triangular")
    cf = CrystalFlow(coords, FlowConfig(layers=2, hidden=8, seed=1))
    for p in cf.flow.parameters():  # a non-trivial flow, the cell-scale layer included
        torch.nn.init.normal_(p, std=0.05)
    inner = cf.flow.inner
    g = torch.Generator().manual_seed(0)
    u = inner._base_sample(2, g) * 0.1

    def through(uu):
        v = uu[None]
        for layer in inner.layers:
            v, _ = layer.transform(v, inverse=False)
        return cf.flow.cell(inner._denormalise(v))[0][0]

    for b in range(2):
        z = through(u[b])
        jac = torch.autograd.functional.jacobian(through, u[b])
        lq_expected = inner._base_log_prob(u[b:b + 1])[0] - torch.linalg.slogdet(jac)[1]
        x, logj = coords.inverse(z.detach()[None])
        with torch.no_grad():
            lp = cf.log_prob(x)
        assert float(lp[0]) == pytest.approx(float(lq_expected.detach() - logj[0]), abs=1e-8)
    zs, lq = cf.flow.sample(3, g)  # sampling and density agree
    assert torch.allclose(cf.flow.log_prob(zs), lq, atol=1e-9)


def test_bad_input_named():
    at = _fcc()
    with pytest.raises(InputError, match="box"):
        CrystalCoordinates(at.positions, at.cell[:], "cubic")
    sheared = at.cell[:].copy()
    sheared[0, 1] = 0.1
    with pytest.raises(InputError, match="lower-triangular"):
        CrystalCoordinates(at.positions, sheared, "triangular")
    cf = CrystalFlow(CrystalCoordinates(at.positions, at.cell[:]))
    with pytest.raises(InputError, match="packed"):
        cf.prepare(np.zeros((2, len(at), 3)))


def test_assign_to_sites_undoes_a_relabelling():
    at = _fcc(rep=2)
    rng = np.random.default_rng(1)
    x = at.positions + rng.normal(0, 0.03, at.positions.shape)
    perm = rng.permutation(len(at))
    shifted = x[perm] + at.cell[:][0] * (rng.integers(0, 2, len(at))[:, None])  # other images
    out = assign_to_sites(shifted[None], at.cell[:][None], at.positions, at.cell[:])[0]
    frac = (out - x) @ np.linalg.inv(at.cell[:])
    assert np.allclose(frac - np.round(frac), 0, atol=1e-12)


# ---------------------------------------------------------------- exact free energies
def test_harmonic_crystal_helmholtz_exact():
    at = _fcc()
    n, k = len(at), 40.0
    target = Enthalpy(Harmonic(at.positions, at.cell[:], k))
    # whitened for a softer crystal than the target: importance sampling must correct it
    wrong = Enthalpy(Harmonic(at.positions, at.cell[:], k / 1.5))
    coarse = CrystalFlow.build(at.positions, at.cell[:], wrong, T,
                                cfg=FlowConfig(layers=2, hidden=16))
    exact = -KT * (math.log(at.get_volume() / n) + _log_gauss(n, k))
    fe = crystal_free_energy(coarse, target, T, n=4000)
    assert fe.total.ess_fraction < 0.9
    assert abs(fe.total.f_ev - exact) < 4 * fe.total.err_ev + 1e-4
    # BAR against exact samples of the target (Gaussian displacements, relabelled, wrapped)
    rng = np.random.default_rng(3)
    d = rng.normal(0, math.sqrt(KT / k), (500, n - 1, 3))
    pos = at.positions[None].repeat(500, 0)
    pos[:, 1:] += d
    pos = pos[:, rng.permutation(n)] + 5.0
    xs = pack(torch.as_tensor(pos), torch.as_tensor(at.cell[:]).expand(500, 3, 3)).numpy()
    fb = crystal_bar_free_energy(coarse, target, T, xs, n=2000)
    assert abs(fb.total.f_ev - exact) < 4 * fb.total.err_ev + 1e-4
    assert fb.total.err_ev < fe.total.err_ev * 3
    # training by samples: the normalisation from them, then a mixture of forward KL on the
    # samples and reverse KL on the energy (train_flow)
    coarse.fit_normalisation(xs)
    fn = crystal_free_energy(coarse, target, T, n=4000, seed=5)
    assert fn.total.ess_fraction > max(0.9, fe.total.ess_fraction + 0.1)
    train_flow(coarse, xs, target, T, config=dict(forward_weight=0.5, steps=60, batch_size=250,
                                                  reverse_batch=250, lr=1e-3))
    ft = crystal_free_energy(coarse, target, T, n=4000, seed=6)
    assert ft.total.ess_fraction > 0.5
    assert abs(ft.total.f_ev - exact) < 4 * ft.total.err_ev + 1e-4


def test_harmonic_crystal_gibbs_isotropic_exact_and_training_improves_it():
    at = _fcc()
    n, k, alpha = len(at), 40.0, 60 * KT
    p = (2 + alpha / KT) * KT / at.get_volume()  # mean volume: the reference
    target = Enthalpy(Harmonic(at.positions, at.cell[:], k, alpha=alpha), pressure=p)
    cf = CrystalFlow.build(at.positions, at.cell[:], target, T, box="isotropic",
                           cfg=FlowConfig(layers=2, hidden=16))
    m = 2 + alpha / KT  # Δ = (2πkT/k)^{3(N−1)/2} / N · Γ(m) / (βP)^m
    exact = -KT * (_log_gauss(n, k) - math.log(n) + gammaln(m) - m * math.log(p / KT))
    fe0 = crystal_free_energy(cf, target, T, n=4000)
    assert abs(fe0.total.f_ev - exact) < 4 * fe0.total.err_ev + 1e-4
    # the volume's log-gamma law is not Gaussian: reverse KL on the energy learns it
    train_flow(cf, potential=target, temperature_k=T,
               config=dict(forward_weight=0.0, steps=150, reverse_batch=128, lr=3e-3))
    fe1 = crystal_free_energy(cf, target, T, n=4000, seed=1)
    assert abs(fe1.total.f_ev - exact) < 4 * fe1.total.err_ev + 1e-4
    assert fe1.total.ess_fraction >= fe0.total.ess_fraction - 0.02
    mean_v = (m / (p / KT))
    assert fe1.total.extra["mean_volume"] == pytest.approx(mean_v, rel=0.02)


class SofteningHarmonic(Harmonic):
    """Harmonic with a spring that softens as the crystal expands: k(V) = k (V/V₀)^−γ."""

    def __init__(self, ref, cell0, k, alpha, gamma):
        super().__init__(ref, cell0, k, alpha)
        self.v0, self.gamma = abs(np.linalg.det(cell0)), gamma

    def energy(self, pos, cell):
        v = torch.linalg.det(cell)
        scale = (v / self.v0) ** -self.gamma
        frac = pos @ torch.linalg.inv(cell)
        d = (frac[:, 1:] - frac[:, :1]) - (self.frac0[1:] - self.frac0[:1])
        d = (d - torch.round(d)) @ cell
        return 0.5 * self.k * scale * (d**2).sum((1, 2)) - self.alpha * torch.log(v)


def test_quasi_harmonic_start_is_the_marginal_volume():
    """With k(V) ∝ V^−γ the vibrations add ½ ln det H_ρρ(c) = (3/2)(N − 1)(2 − 3γ)c to the
    −log marginal of c = ln λ (V = V₀e^{3c}); gaussian_fit(quasi_harmonic=True) moves the
    mean of c by −Σ_cc times that slope, exactly (a linear term of a Gaussian)."""
    at = _fcc()
    n, k, alpha, gamma = len(at), 40.0, 60 * KT, 3.0
    p = (2 + alpha / KT) * KT / at.get_volume()
    target = Enthalpy(SofteningHarmonic(at.positions, at.cell[:], k, alpha, gamma), p)
    raw = CrystalCoordinates(at.positions, at.cell[:], "isotropic")
    mu0, u0 = gaussian_fit(raw, target, T)
    mu1, u1 = gaussian_fit(raw, target, T, quasi_harmonic=True)
    assert np.allclose(u0, u1) and np.allclose(u0, np.triu(u0))
    sigma_cc = (u0 @ u0.T)[-1, -1]
    slope = 1.5 * (n - 1) * (2 - 3 * gamma)
    assert mu1[-1] - mu0[-1] == pytest.approx(-sigma_cc * slope, rel=1e-4)
    assert np.allclose(mu1[:-1], mu0[:-1], atol=1e-9)  # no displacement shift (symmetry)
    # the expansion: a softer crystal at larger volume (γ > 2/3)
    assert mu1[-1] > mu0[-1]


def _stretched(at, c_over_a: float):
    """The same crystal (fractional sites) in a cell of the same volume stretched along z."""
    s = c_over_a ** (1 / 3)
    out = at.copy()
    out.set_cell(at.cell[:] @ np.diag([1 / math.sqrt(s), 1 / math.sqrt(s), s]),
                 scale_atoms=True)
    return out


def test_harmonic_crystal_gibbs_full_cell_exact_and_independent_of_cell_shape():
    """Two crystals with the same energetics in cells of different shape (cubic, and
    stretched like an orthorhombic hcp cell: c/a = 1.633) have the same exact G; the full-cell
    flows reproduce it for both (a cell measure that weighs shapes, such as d⁶h, would give
    them G differing by kT ln(c/a) = 0.49 kT)."""
    n_k = {}
    for shape, at in (("cubic", _fcc()), ("stretched", _stretched(_fcc(), 1.633))):
        n, k, alpha, kappa, kappa_a = len(at), 40.0, 40 * KT, 10.0, 30.0
        v0 = at.get_volume()
        p = (2 + alpha / KT) * KT / v0
        target = Enthalpy(Harmonic(at.positions, at.cell[:], k, alpha, kappa, kappa_a),
                          pressure=p)
        cf = CrystalFlow.build(at.positions, at.cell[:], target, T, box="triangular")
        # exact: Gaussian displacements and tilts; the diagonal by quadrature in u = ln h_ii
        m = 2 + alpha / KT
        lh0 = np.log(np.diag(at.cell[:]))
        g = np.linspace(-0.6, 0.6, 161)
        u = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1) + lh0
        s = u.sum(-1)
        lf = m * s - p / KT * np.exp(s) - 0.5 * kappa_a * ((u - lh0) ** 2).sum(-1)
        lmax = lf.max()
        log_diag = lmax + math.log(np.exp(lf - lmax).sum() * (g[1] - g[0]) ** 3)
        log_z = (_log_gauss(n, k) - math.log(n) + 1.5 * math.log(2 * math.pi * KT / kappa)
                 + log_diag)
        fe = crystal_free_energy(cf, target, T, n=4000)
        assert fe.total.ess_fraction > 0.1
        assert abs(fe.total.f_ev + KT * log_z) < 4 * fe.total.err_ev + 1e-4
        n_k[shape] = (fe.total.f_ev, fe.total.err_ev, -KT * log_z)
    (fa, ea, xa), (fb, eb, xb) = n_k["cubic"], n_k["stretched"]
    assert xa == pytest.approx(xb, abs=1e-9)  # the same exact G for both shapes
    assert abs(fa - fb) < 4 * math.hypot(ea, eb) + 1e-4
    assert abs(fa - fb) < 0.1 * KT * math.log(1.633)


# ---------------------------------------------------------------- periodic energies
def test_crystal_energies_match_ase_and_periodic_module():
    rng = np.random.default_rng(2)
    cu = bulk("Cu", "hcp", a=2.55, c=4.16, orthorhombic=True)  # 4 atoms: images matter
    pot = CrystalEMT(cu.numbers, cu.positions, cu.cell[:])
    xs, cells, ref = [], [], []
    for scale, sd in ((1.0, 0.05), (1.02, 0.1), (1.0, 1.5)):  # the last needs its own list
        a = cu.copy()
        a.set_cell(a.cell[:] * scale, scale_atoms=True)
        a.positions += rng.normal(0, sd, a.positions.shape)
        a.calc = AseEMT()
        ref.append(a.get_potential_energy())
        xs.append(a.positions)
        cells.append(a.cell[:])
    e = pot.energy(torch.as_tensor(np.array(xs)), torch.as_tensor(np.array(cells)))
    assert np.allclose(e.numpy(), ref, atol=1e-9)
    ar = _fcc(a=1.55, rep=4)  # big enough for the minimum image
    lj = CrystalLennardJones(ar.numbers, ar.positions, ar.cell[:], cutoff=2.5)
    x = torch.as_tensor(ar.positions[None] + rng.normal(0, 0.05, (2, len(ar), 3)))
    h = torch.as_tensor(ar.cell[:]).expand(2, 3, 3)
    assert torch.allclose(lj.energy(x, h), lennard_jones_energy(x, h, 1.0, 1.0, 2.5),
                          atol=1e-9)
