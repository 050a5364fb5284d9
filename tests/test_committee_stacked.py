"""The stacked inference form of a built-in committee (one pass over a member axis) gives each
member's own energies and forces: against the members evaluated one by one, against finite
differences, after the members' weights change, and through CommitteePotential."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_mlip import STATS, _cluster

from alflow.mlip import CommitteePotential, MLIPConfig
from alflow.mlip.committee import Committee
from alflow.mlip.graph import DenseBatch
from alflow.mlip.model import build_model
from alflow.mlip.stacked import StackedCommittee

SPECIES = torch.tensor([1, 1, 0, 1, 1, 0])


def _committee(max_l=2, layers=2, members=3):
    cfg = MLIPConfig(dtype="float64", cutoff=4.5, committee_size=members,
                     builtin={"max_l": max_l, "layers": layers})
    models = []
    for seed in range(members):
        torch.manual_seed(seed)
        m = build_model(cfg, STATS, torch.Generator().manual_seed(seed))
        with torch.no_grad():  # larger random weights than the init: a rugged surface
            for p in m.parameters():
                p.add_(0.3 * torch.randn_like(p))
        models.append(m)
    return Committee(models, cfg)


def _one_by_one(c, x, species):
    """Energies (M, B) and forces (M, B, N, 3) of each member on its own."""
    es, fs = [], []
    for m in c.members:
        y = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            e = m.total_energy(DenseBatch(y, species))
            (g,) = torch.autograd.grad(e.sum(), y)
        es.append(e.detach())
        fs.append(-g)
    return torch.stack(es), torch.stack(fs)


def _batch(b=5, seed=0):
    return torch.tensor(np.array([_cluster(seed=seed + k) for k in range(b)]))


@pytest.mark.parametrize("max_l,layers", [(2, 2), (1, 1)])
def test_stacked_equals_members_one_by_one(max_l, layers):
    c = _committee(max_l, layers)
    assert c.stacked() is not None
    x = _batch()
    e, f = c.predict_dense(x, SPECIES)
    e_ref, f_ref = _one_by_one(c, x, SPECIES)
    assert e.shape == (3, 5) and f.shape == (3, 5, 6, 3)
    assert (e_ref[0] - e_ref[1]).abs().min() > 1e-3  # the members differ
    torch.testing.assert_close(e, e_ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(f, f_ref, rtol=0, atol=1e-10)
    # per-configuration species (B, N): each configuration its own composition
    sp2 = torch.stack([SPECIES.roll(k) for k in range(5)])
    e2 = c.stacked().total_energy(x, sp2)
    for k in range(5):
        e_k, _ = _one_by_one(c, x[k:k + 1], SPECIES.roll(k))
        torch.testing.assert_close(e2[:, k:k + 1], e_k, rtol=0, atol=1e-10)


def test_stacked_forces_are_minus_finite_difference_gradient():
    c = _committee()
    x = _batch(1, seed=4)
    _, f = c.predict_dense(x, SPECIES)
    st = c.stacked()
    h = 1e-5
    fd = torch.zeros_like(f)
    for i in range(6):
        for k in range(3):
            xp, xm = x.clone(), x.clone()
            xp[0, i, k] += h
            xm[0, i, k] -= h
            fd[:, 0, i, k] = -(st.total_energy(xp, SPECIES) - st.total_energy(xm, SPECIES))[:, 0]
    fd /= 2 * h
    assert f.abs().max() > 1e-2
    torch.testing.assert_close(f, fd, atol=1e-7, rtol=1e-6)


def test_stacked_follows_the_members_weights():
    c = _committee(members=2)
    x = _batch(3)
    e_before, _ = c.predict_dense(x, SPECIES)
    first = c.stacked()
    with torch.no_grad():  # trained in place, as a refinement does
        c.members[1].core.readout[2].bias.add_(0.5)
    e_after, f_after = c.predict_dense(x, SPECIES)
    assert c.stacked() is not first
    e_ref, f_ref = _one_by_one(c, x, SPECIES)
    torch.testing.assert_close(e_after, e_ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(e_after[0], e_before[0], rtol=0, atol=1e-12)
    assert (e_after[1] - e_before[1]).abs().min() > 0.1  # 6 atoms x 0.5 x scale 0.7
    c32 = c.to_dtype("float32")
    e32, f32 = c32.predict_dense(x, SPECIES)
    assert c32.stacked().w_rad.dtype == torch.float32 and f32.dtype == torch.float32
    torch.testing.assert_close(e32, e_ref, rtol=0, atol=1e-4)
    torch.testing.assert_close(f32.double(), f_ref, rtol=0, atol=1e-4)


def test_stacked_committee_potential_energy_and_stats():
    c = _committee()
    pot = CommitteePotential(c, [47, 47, 29, 47, 47, 29])
    x = _batch(4).requires_grad_(True)
    e = pot.energy(x)
    (g,) = torch.autograd.grad(e.sum(), x)
    e_ref, f_ref = _one_by_one(c, x, SPECIES)
    torch.testing.assert_close(e, e_ref.mean(0), rtol=0, atol=1e-10)
    torch.testing.assert_close(-g, f_ref.mean(0), rtol=0, atol=1e-10)
    s = pot.stats(x.detach())
    torch.testing.assert_close(s["energies"], e_ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(s["forces"], f_ref.mean(0), rtol=0, atol=1e-10)


def test_only_builtin_members_are_stacked():
    c = _committee(members=2)
    with pytest.raises(TypeError, match="BuiltinCore"):
        StackedCommittee([c.members[0], torch.nn.Linear(2, 2)])
