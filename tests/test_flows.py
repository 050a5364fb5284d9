"""Coordinates (round trips, exact Jacobians vs finite differences, permutations, symmetry),
flow log-determinants vs autograd, persistence."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ase import Atoms
from lj7_structures import COH, NUMBERS, PBP

from alflow.flows import BoltzmannGenerator, CouplingFlow, FlowConfig
from alflow.flows.coordinates import (
    canonical_permutation,
    kabsch,
    make_coordinates,
    point_group_order,
    rotation_permutations,
)


def _lj7(name: str) -> Atoms:
    return Atoms(numbers=NUMBERS, positions={"pbp": PBP, "coh": COH}[name])


def _euler(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """ZYZ rotation matrix."""
    def rz(t):
        o, z = torch.ones_like(t), torch.zeros_like(t)
        return torch.stack([torch.stack([t.cos(), -t.sin(), z]), torch.stack([t.sin(), t.cos(), z]),
                            torch.stack([z, z, o])])

    def ry(t):
        o, z = torch.ones_like(t), torch.zeros_like(t)
        return torch.stack([torch.stack([t.cos(), z, t.sin()]), torch.stack([z, o, z]),
                            torch.stack([-t.sin(), z, t.cos()])])

    return rz(a) @ ry(b) @ rz(c)


@pytest.mark.parametrize("kind", ["zmatrix", "frame"])
@pytest.mark.parametrize("state", ["pbp", "coh"])
def test_round_trip_and_exact_jacobian(kind, state):
    atoms = _lj7(state)
    coords = make_coordinates(kind, atoms.positions, atoms.numbers)
    rng = np.random.default_rng(1)
    x = torch.tensor(atoms.positions[None] + rng.normal(scale=0.3, size=(6, 7, 3)))
    z, logj = coords.forward(x)
    assert coords.valid(z).all()
    x2, logj2 = coords.inverse(z)
    # x2 is x in the body frame: a proper rotation + translation of x, to 1e-10 Å
    for a, b in zip(x.numpy(), x2.numpy(), strict=True):
        a0, b0 = a - a.mean(0), b - b.mean(0)
        assert np.abs(a0 @ kabsch(a0, b0) - b0).max() < 1e-10
    z2, _ = coords.forward(x2)
    assert torch.allclose(z, z2, atol=1e-10, rtol=0)
    assert torch.allclose(logj, logj2, atol=1e-12)

    # dx = J(z) dz d³t dΩ: the Jacobian of (t, Euler α β γ, z) -> x by central finite
    # differences has |det| = sin β · J(z)
    def full(p: torch.Tensor) -> torch.Tensor:
        t, ang, zz = p[:3], p[3:6], p[6:]
        xb, _ = coords.inverse(zz[None])
        return (xb[0] @ _euler(*ang).T + t).reshape(-1)

    ang = torch.tensor([0.3, 1.1, -0.7], dtype=torch.float64)
    for k in range(2):
        p0 = torch.cat([torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64), ang, z[k]])
        h = 1e-6
        cols = []
        for i in range(len(p0)):
            e = torch.zeros_like(p0)
            e[i] = h
            cols.append((full(p0 + e) - full(p0 - e)) / (2 * h))
        jac = torch.stack(cols, 1)
        _, logdet = torch.linalg.slogdet(jac)
        assert abs(float(logdet) - (math.log(math.sin(1.1)) + float(logj[k]))) < 1e-6


def test_torsions_are_circular_and_centred_on_the_reference():
    atoms = _lj7("pbp")
    coords = make_coordinates("zmatrix", atoms.positions, atoms.numbers)
    z0, _ = coords.forward(torch.tensor(atoms.positions)[None])
    assert coords.circular.sum() == 3 * 7 - 6 - (2 * 7 - 3)
    assert torch.allclose(z0[0, coords.circular], torch.zeros(int(coords.circular.sum()),
                                                              dtype=torch.float64), atol=1e-9)


def test_symmetry_numbers_of_the_lj7_isomers():
    pbp, coh = _lj7("pbp"), _lj7("coh")
    assert point_group_order(pbp.positions, pbp.numbers) == 20  # D5h
    assert point_group_order(coh.positions, coh.numbers) == 6  # C3v
    assert len(rotation_permutations(pbp.positions, pbp.numbers)) == 10
    assert len(rotation_permutations(coh.positions, coh.numbers)) == 3


def test_canonical_permutation_undoes_relabelling_and_rotation():
    atoms = _lj7("coh")
    ref = atoms.positions - atoms.positions.mean(0)
    rng = np.random.default_rng(3)
    x = ref[None] + rng.normal(scale=0.05, size=(8, 7, 3))
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))
    perm = rng.permutation(7)
    y = x[:, perm] @ q.T + 4.0
    p = canonical_permutation(y, ref, atoms.numbers)
    for yb, pb in zip(y, p, strict=True):
        c = yb[pb] - yb[pb].mean(0)
        assert np.sqrt(((c @ kabsch(c, ref) - ref) ** 2).sum(-1).mean()) < 0.15


@pytest.mark.parametrize("state", ["pbp", "coh"])
def test_canonical_permutation_shortcut_matches_the_full_search(state):
    """Thermal-size distortions (0.25 Å per coordinate, RMSD ~0.4 Å > good_rmsd) relabelled
    and rotated: skipping the pair search when every atom is within a quarter bond of its site
    gives labellings exactly as good as the full search (equal RMSD: the same labelling up to
    the reference's symmetry), and each undoes the relabelling up to a symmetry permutation."""
    atoms = _lj7(state)
    ref = atoms.positions - atoms.positions.mean(0)
    rng = np.random.default_rng(5)
    x = ref[None] + rng.normal(scale=0.25, size=(40, 7, 3))
    perm = np.stack([rng.permutation(7) for _ in x])
    y = np.stack([xb[p] for xb, p in zip(x, perm, strict=True)])
    fast = canonical_permutation(y, ref, atoms.numbers)
    full = canonical_permutation(y, ref, atoms.numbers, unique_fraction=0.0)
    rot = rotation_permutations(ref, atoms.numbers)

    def rmsd(c):
        c = c - c.mean(0)
        return np.sqrt(((c @ kabsch(c, ref) - ref) ** 2).sum(-1).mean())

    for yb, pf, pa, p in zip(y, fast, full, perm, strict=True):
        assert rmsd(yb[pf]) == pytest.approx(rmsd(yb[pa]), abs=1e-6)
        # yb[pf] is x relabelled by a rotation permutation r of the reference: p[pf] ∈ rot
        assert any((p[pf] == r).all() for r in rot)


@pytest.mark.parametrize("state", ["pbp", "coh"])
def test_own_cell_is_the_flows_labelling_cell(state):
    """own_cell (annealing's confinement to one labelled copy of the state): thermal-size
    distortions of the reference, rotated, translated and relabelled by a symmetry permutation
    are inside; relabelled by a permutation outside the point group, outside; the vectorised
    fast path agrees with the full assignment search."""
    from alflow.flows.anneal import own_cell

    atoms = _lj7(state)
    ref = atoms.positions - atoms.positions.mean(0)
    bg = BoltzmannGenerator.build(ref, atoms.numbers, FlowConfig(coordinates="frame"))
    rot = rotation_permutations(ref, atoms.numbers)
    rng = np.random.default_rng(7)
    x = ref[None] + rng.normal(scale=0.1, size=(30, 7, 3))
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))
    sym = np.stack([xb[rot[i % len(rot)]] for i, xb in enumerate(x)]) @ q.T + 2.0
    assert own_cell(bg, torch.as_tensor(sym)).all()
    foreign = [p for p in (rng.permutation(7) for _ in range(200))
               if not any((p == r).all() for r in rot)][:30]
    y = np.stack([xb[p] for xb, p in zip(x, foreign, strict=False)]) @ q.T
    assert not own_cell(bg, torch.as_tensor(y)).any()
    # larger distortions: the fast path's verdict equals the assignment's
    z = np.concatenate([x, y[:10]]) + rng.normal(scale=0.2, size=(40, 7, 3))
    full = canonical_permutation(z, ref, atoms.numbers, unique_fraction=0.0)
    expect = [any((p == r).all() for r in rot) for p in full]
    assert own_cell(bg, torch.as_tensor(z)).tolist() == expect


def _flow_map(flow: CouplingFlow):
    """u -> z through the layers and normalisation (the sampling direction)."""
    def f(u: torch.Tensor) -> torch.Tensor:
        for layer in flow.layers:
            u, _ = layer.transform(u, inverse=False)
        return flow._denormalise(u)
    return f


@pytest.mark.parametrize("transform", ["spline", "affine"])
def test_flow_log_det_equals_autograd_jacobian(transform):
    torch.manual_seed(0)
    circ = torch.tensor([False, False, True, False, True, False])
    flow = CouplingFlow(6, circ, FlowConfig(transform=transform, layers=4, hidden=16,
                                            bins=5)).double()
    flow.fit_normalisation(torch.randn(100, 6, dtype=torch.float64) * 0.5 + 1.0)
    with torch.no_grad():  # give the zero-initialised last layers non-trivial weights
        for p in flow.parameters():
            p.add_(0.3 * torch.randn_like(p))
    g = torch.Generator().manual_seed(1)
    u = flow._base_sample(5, g)
    z, logq = flow.rsample(5, torch.Generator().manual_seed(1))
    f = _flow_map(flow)
    for i in range(5):
        jac = torch.autograd.functional.jacobian(lambda v: f(v[None])[0], u[i])
        _, logdet = torch.linalg.slogdet(jac)
        expect = float(flow._base_log_prob(u[i:i + 1])) - float(logdet)
        assert abs(float(logq[i].detach()) - expect) < 1e-8
    # log_prob (inverse direction) agrees with the sampling direction
    assert torch.allclose(flow.log_prob(z), logq, atol=1e-8)
    assert (z[:, circ].abs() <= math.pi).all()


def test_spline_equals_zuko_with_a_bound_per_dimension():
    """The written-out spline (:func:`alflow.flows.model._rqs`) is zuko's
    MonotonicRQSTransform, forward and inverse with their log-dets, also with a different
    bound per dimension (real and circular dimensions in one call) and outside the bound."""
    from zuko.transforms import MonotonicRQSTransform

    from alflow.flows.model import _rqs

    k = 6
    g = torch.Generator().manual_seed(0)
    p = 2.0 * torch.randn(40, 3, 3 * k, dtype=torch.float64, generator=g)
    bounds = torch.tensor([5.0, math.pi, 2.0], dtype=torch.float64)
    x = 4.0 * torch.randn(40, 3, dtype=torch.float64, generator=g)  # some beyond the bound
    y, la = _rqs(p, x, bounds, k, inverse=False)
    back, la_inv = _rqs(p, y, bounds, k, inverse=True)
    for d, b in enumerate(bounds.tolist()):
        t = MonotonicRQSTransform(p[:, d, :k], p[:, d, k:2 * k], p[:, d, 2 * k:3 * k - 1],
                                  bound=b)
        y_z, la_z = t.call_and_ladj(x[:, d])
        assert torch.allclose(y[:, d], y_z, atol=1e-12)
        assert torch.allclose(la[:, d], la_z, atol=1e-10)
        assert torch.allclose(back[:, d], t.inv(y_z), atol=1e-10)
    assert torch.allclose(back, x, atol=1e-10)
    assert torch.allclose(la_inv, -la, atol=1e-10)
    assert (x.abs() > bounds).any() and torch.equal(y[x.abs() > bounds], x[x.abs() > bounds])


def test_von_mises_base_draws_follow_the_density():
    """The base's circular draws (from the flow's generator, no global seed) are von Mises:
    E[cos θ] = I1(κ)/I0(κ), E[sin θ] = 0, in [-π, π), reproducible from the generator."""
    from alflow.flows.model import _von_mises

    kappa = torch.tensor([1e-6, 0.5, 3.0, 40.0], dtype=torch.float64)
    th = _von_mises(kappa, 20000, torch.Generator().manual_seed(1))
    assert th.shape == (20000, 4) and (th >= -math.pi).all() and (th < math.pi).all()
    r = torch.special.i1e(kappa) / torch.special.i0e(kappa)
    se = 1.0 / math.sqrt(20000)
    assert ((th.cos().mean(0) - r).abs() < 4 * se).all(), (th.cos().mean(0), r)
    assert (th.sin().mean(0).abs() < 4 * se).all()
    assert torch.equal(th, _von_mises(kappa, 20000, torch.Generator().manual_seed(1)))


def test_circular_dimension_density_is_normalised():
    """A 1-D circular flow integrates to 1 over [-π, π) (quadrature)."""
    torch.manual_seed(0)
    flow = CouplingFlow(2, torch.tensor([True, False]), FlowConfig(layers=2, hidden=8)).double()
    flow.fit_normalisation(torch.stack([torch.randn(200) * 0.7, torch.randn(200)], 1).double())
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.3 * torch.randn_like(p))
    th = torch.linspace(-math.pi, math.pi, 301, dtype=torch.float64)[:-1] + math.pi / 300
    y = torch.linspace(-8, 8, 401, dtype=torch.float64)
    tt, yy = torch.meshgrid(th, y, indexing="ij")
    p = flow.log_prob(torch.stack([tt.reshape(-1), yy.reshape(-1)], 1)).exp()
    total = float(p.detach().sum() * (2 * math.pi / 300) * (16 / 400))
    assert abs(total - 1.0) < 2e-3


def test_generator_save_load_round_trip(tmp_path):
    atoms = _lj7("pbp")
    rng = np.random.default_rng(0)
    x = atoms.positions[None] + rng.normal(scale=0.05, size=(20, 7, 3))
    bg = BoltzmannGenerator.build(atoms.positions, atoms.numbers, FlowConfig(layers=2, hidden=8),
                                  samples=x)
    with torch.no_grad():
        for p in bg.flow.parameters():
            p.add_(0.1 * torch.randn_like(p))
    bg.save(tmp_path / "f")
    bg2 = BoltzmannGenerator.load(tmp_path / "f")
    xt = torch.tensor(x)
    assert torch.allclose(bg.log_prob(xt), bg2.log_prob(xt), atol=1e-12)
    assert bg2.symmetry_number == 10
