"""Collective variables: gradients equal finite differences, known values, regions, hooks."""

import numpy as np
import pytest
import torch

from alflow.errors import ConfigError
from alflow.sampling.cvs import (
    CoordinationConfig,
    CoordinationNumber,
    CVRegion,
    Distance,
    Planarity,
    Position,
    PythonCVConfig,
    RadiusOfGyration,
    assign_regions,
    make_cv,
    rational_switch,
)


def _cluster(seed=0, n=6):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(3, n, 3, generator=g, dtype=torch.float64) * 1.6


def _fd_check(cv, x, h=1e-6):
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(cv(xg).sum(), xg)
    num = torch.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        d = torch.zeros_like(x)
        d[idx] = h
        num[idx] = ((cv(x + d) - cv(x - d)) / (2 * h))[idx[0]]
    assert torch.allclose(grad, num, atol=1e-6, rtol=1e-5), (grad - num).abs().max()


@pytest.mark.parametrize("cv", [
    CoordinationNumber(r0=2.8), CoordinationNumber(r0=2.8, mode="pairs", group=[0, 2, 3, 5]),
    RadiusOfGyration(), RadiusOfGyration(masses=[1, 2, 3, 4, 5, 6]), Planarity(),
    Distance(0, 3), Distance([0, 1], [2, 3, 4]), Position(2, 1),
])
def test_cv_gradients_match_finite_differences(cv):
    _fd_check(cv, _cluster())


def test_switch_smooth_through_r0():
    r = torch.linspace(2.79, 2.81, 2001, dtype=torch.float64, requires_grad=True)
    s = rational_switch(r, 2.8)
    (g,) = torch.autograd.grad(s.sum(), r)
    assert torch.isfinite(g).all()
    assert float(rational_switch(torch.tensor(2.8, dtype=torch.float64), 2.8)) == 0.5
    # no jump where the expansion takes over (|x - 1| = 1e-4)
    assert float(s.detach().diff().abs().max()) < 1e-4
    assert float(rational_switch(torch.tensor(1.4), 2.8)) == pytest.approx(
        (1 - 0.5**6) / (1 - 0.5**12))


def test_coordination_of_ag6_isomers_and_invariance():
    # octahedron with edge 2.0 Å (well below r0 = 2.8): 12 bonds, mean CN ~ 4
    a = 2.0 / np.sqrt(2)
    octa = torch.tensor([[a, 0, 0], [-a, 0, 0], [0, a, 0], [0, -a, 0], [0, 0, a], [0, 0, -a]],
                        dtype=torch.float64)[None]
    cn = CoordinationNumber(r0=2.8)
    pairs = CoordinationNumber(r0=2.8, mode="pairs")
    assert float(pairs(octa)) == pytest.approx(float(cn(octa)) * 6 / 2, rel=1e-12)
    s_edge = float(rational_switch(torch.tensor(2.0, dtype=torch.float64), 2.8))
    s_diag = float(rational_switch(torch.tensor(2 * a, dtype=torch.float64), 2.8))
    assert float(pairs(octa)) == pytest.approx(12 * s_edge + 3 * s_diag, rel=1e-12)
    # rotation, translation and permutation invariance of every scalar CV
    x = _cluster(4)
    q, _ = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64))
    y = (x @ q.T + torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))[:, torch.randperm(6)]
    for c in (cn, RadiusOfGyration(), Planarity()):
        assert torch.allclose(c(x), c(y), atol=1e-10)
    flat = x.clone()
    flat[..., 2] = 0.0
    assert float(Planarity()(flat).max()) < 1e-3


def test_make_cv_and_python_hook(tmp_path, monkeypatch):
    (tmp_path / "mycv.py").write_text(
        "def first_x(x):\n    return x[..., 0, 0] ** 2\n"
        "def bad(x):\n    return 1.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cv = make_cv(PythonCVConfig(function="mycv:first_x", name="x2"), natoms=6)
    assert cv.name == "x2"
    _fd_check(cv, _cluster(1))
    with pytest.raises(ConfigError, match="cannot import"):
        make_cv(PythonCVConfig(function="mycv:nothere"))
    with pytest.raises(ConfigError, match="torch tensor"):
        make_cv(PythonCVConfig(function="mycv:bad"))(_cluster())
    with pytest.raises(ConfigError, match="out of range"):
        make_cv(CoordinationConfig(group=[0, 9]), natoms=6)
    assert make_cv(CoordinationConfig()).name == "coordination"


def test_regions():
    planar = CVRegion(name="planar", bounds={"planarity": (None, 0.3)})
    pyramid = CVRegion(name="3d", bounds={"planarity": (0.5, None), "coordination": (3.1, 3.6)})
    vals = {"planarity": np.array([0.1, 0.7, 0.7, 0.4]),
            "coordination": np.array([3.0, 3.3, 4.0, 3.3])}
    assert list(assign_regions(vals, [planar, pyramid])) == [0, 1, -1, -1]
    with pytest.raises(ConfigError, match="no CV named"):
        CVRegion(name="x", bounds={"gyration": (0, 1)}).contains(vals)
    with pytest.raises(ValueError):
        CVRegion(name="x", bounds={"gyration": (2, 1)})
