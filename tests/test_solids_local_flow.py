"""Neighbour-aware coupling layers for crystal flows (alflow.solids.local_flow): the lattice
graph, the exact log-determinant against autograd with the box, the identity at
initialisation, and exact free energies of the harmonic crystal through them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.units import kB

from alflow.flows import FlowConfig, train_flow
from alflow.solids.crystal_energy import CrystalLennardJones
from alflow.solids.flows import CrystalCoordinates, CrystalFlow, Enthalpy, crystal_free_energy
from alflow.solids.local_flow import LocalFlowConfig, lattice_neighbours

T = 300.0
KT = kB * T


def _fcc(a: float = 1.6, rep: int = 1):
    return bulk("Ar", "fcc", a=a, cubic=True).repeat((rep, rep, rep))


@pytest.mark.parametrize("structure", ["fcc", "hcp"])
def test_lattice_neighbours_are_the_twelve_nearest_sites(structure):
    if structure == "fcc":
        at = bulk("Ar", "fcc", a=1.6, cubic=True).repeat((2, 2, 2))
    else:
        at = bulk("Ar", "hcp", a=1.13, c=1.13 * math.sqrt(8 / 3), orthorhombic=True
                  ).repeat((2, 2, 2))
    frac = at.get_scaled_positions()
    idx, bonds, mask = lattice_neighbours(frac, at.cell[:])
    assert idx.shape == (32, 12) and mask.all()
    r_nn = np.linalg.norm(bonds, axis=-1)
    assert np.allclose(r_nn, r_nn.min(), rtol=1e-9)
    # every bond ends on the neighbour's site (some periodic image of it)
    d = (at.positions[idx] - at.positions[:, None] - bonds) @ np.linalg.inv(at.cell[:])
    assert np.allclose(d - np.round(d), 0, atol=1e-12)
    # bonds come in opposite pairs: j is a neighbour of i by −b_ij
    for i in range(32):
        for j, b in zip(idx[i], bonds[i], strict=True):
            assert np.isclose(bonds[j], -b, atol=1e-12).all(-1).any()


def test_lattice_neighbours_of_a_four_atom_cell_are_images():
    at = _fcc()  # 4 atoms: each neighbour appears as four of its images
    idx, bonds, mask = lattice_neighbours(at.get_scaled_positions(), at.cell[:])
    assert idx.shape == (4, 12) and mask.all()
    assert all(sorted(np.bincount(idx[i], minlength=4)) == [0, 4, 4, 4] for i in range(4))


def _local_flow(box="triangular", seed=1):
    at = _fcc()
    n = len(at)
    dim = 3 * (n - 1) + {"fixed": 0, "isotropic": 1, "triangular": 6}[box]
    rng = np.random.default_rng(0)
    chol = np.triu(rng.normal(size=(dim, dim)) * 0.05) + np.eye(dim) * 0.3
    coords = CrystalCoordinates(at.positions, at.cell[:], box, rng.normal(size=dim) * 0.05,
                                chol)
    return CrystalFlow(coords, FlowConfig(layers=2, hidden=8, seed=seed),
                       LocalFlowConfig(layers=3, hidden=8, seed=seed))


@pytest.mark.parametrize("box", ["fixed", "isotropic", "triangular"])
def test_local_layers_log_det_against_autograd_with_the_box(box):
    cf = _local_flow(box)
    for p in cf.flow.parameters():  # a non-trivial flow: base, cell scale and local layers
        torch.nn.init.normal_(p, std=0.1)
    lf = cf.flow
    dim = cf.coords.dim

    def local(z0):
        y = lf._raw(z0[None])
        for layer in lf.layers:
            y, _ = layer.transform(y, inverse=False)
        return lf._white(y)[0]

    z0 = torch.as_tensor(np.random.default_rng(1).normal(size=(3, dim)))
    for b in range(3):
        jac = torch.autograd.functional.jacobian(local, z0[b])
        y, ladj = lf._raw(z0[b:b + 1]), 0.0
        for layer in lf.layers:
            y, la = layer.transform(y, inverse=False)
            ladj = ladj + la
        logdet = float(torch.linalg.slogdet(jac.detach())[1])
        assert float(ladj[0].detach()) == pytest.approx(logdet, abs=1e-9)
        assert abs(float(ladj[0].detach())) > 1e-3  # the layers do move the displacements
        back, _ = lf._pull_back(local(z0[b])[None].detach())
        assert torch.allclose(back[0], z0[b], atol=1e-9)
    # sampling and density agree, through the packed configurations
    g = torch.Generator().manual_seed(0)
    x, lq, ok = cf.sample(20, g)
    assert ok.sum() >= 5
    with torch.no_grad():
        assert torch.allclose(cf.log_prob(x[ok]), lq[ok], atol=1e-8)


def test_local_layers_start_as_the_identity():
    at = _fcc()
    coords = CrystalCoordinates(at.positions, at.cell[:], "isotropic",
                                chol=0.05 * np.eye(3 * (len(at) - 1) + 1))
    plain = CrystalFlow(coords, FlowConfig(layers=2, hidden=8, seed=3))
    local = CrystalFlow(coords, FlowConfig(layers=2, hidden=8, seed=3),
                        LocalFlowConfig(layers=2, hidden=8))
    local.flow.base.load_state_dict(plain.flow.state_dict())
    g = torch.Generator().manual_seed(0)
    x, lq, ok = plain.sample(4, g)
    assert ok.all()
    with torch.no_grad():
        assert torch.allclose(local.log_prob(x), lq, atol=1e-10)


def test_local_flow_harmonic_crystal_exact_after_training():
    """An Einstein crystal's exact F at fixed cell (Gaussian displacements relative to atom
    0) holds after reverse-KL training through the local layers."""
    at = _fcc()
    n, k = len(at), 40.0

    class Einstein:
        numbers = np.full(n, 18)
        frac0 = torch.as_tensor(at.get_scaled_positions())

        def energy(self, pos, cell):
            frac = pos @ torch.linalg.inv(cell)
            d = (frac[:, 1:] - frac[:, :1]) - (self.frac0[1:] - self.frac0[:1])
            d = (d - torch.round(d)) @ cell
            return 0.5 * k * (d**2).sum((1, 2))

    target = Enthalpy(Einstein())
    cf = CrystalFlow.build(at.positions, at.cell[:], target, T,
                           cfg=FlowConfig(layers=1, hidden=8),
                           local=LocalFlowConfig(layers=2, hidden=8))
    train_flow(cf, potential=target, temperature_k=T,
               config=dict(forward_weight=0.0, steps=30, reverse_batch=64, lr=3e-3))
    exact = -KT * (math.log(at.get_volume() / n) + 1.5 * (n - 1) * math.log(2 * math.pi * KT / k))
    fe = crystal_free_energy(cf, target, T, n=3000, seed=7)  # not the training draws
    assert fe.total.ess_fraction > 0.5
    assert abs(fe.total.f_ev - exact) < 4 * fe.total.err_ev + 1e-4


def test_local_layers_learn_the_lj_crystals_anharmonicity():
    """A 4-atom LJ crystal at fixed cell, T* = 0.5 (ε = 1 eV): reverse-KL training of the
    local layers alone (the whitened flow frozen at the harmonic crystal) raises the ESS of
    the harmonic start, and F stays within the error bars of the harmonic start's F."""
    at = _fcc(a=(4 / 1.09) ** (1 / 3))
    pot = CrystalLennardJones(at.numbers, at.positions, at.cell[:], 1.0, 1.0, 2.5, shift=True)
    target, t = Enthalpy(pot), 0.5 / kB
    cf = CrystalFlow.build(at.positions, at.cell[:], target, t,
                           cfg=FlowConfig(layers=1, hidden=8),
                           local=LocalFlowConfig(layers=4, hidden=16))
    f0 = crystal_free_energy(cf, target, t, n=4000, seed=1)
    for p in cf.flow.base.parameters():
        p.requires_grad_(False)
    train_flow(cf, potential=target, temperature_k=t,
               config=dict(forward_weight=0.0, steps=150, reverse_batch=128, lr=3e-3,
                           lr_final=1e-3))
    f1 = crystal_free_energy(cf, target, t, n=4000, seed=2)
    assert f1.total.ess_fraction > f0.total.ess_fraction + 0.05
    assert abs(f1.total.f_ev - f0.total.f_ev) < 4 * math.hypot(f0.total.err_ev,
                                                               f1.total.err_ev)
