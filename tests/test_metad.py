"""Well-tempered metadynamics: the FES of an analytic double well, grid bias vs the sum of
its Gaussians (2D), save/load, config errors."""

import numpy as np
import pytest
import torch
from ase import units

from alflow.config import validate_model
from alflow.errors import ConfigError
from alflow.sampling.cvs import Position
from alflow.sampling.langevin import run_langevin
from alflow.sampling.metad import MetadConfig, WellTemperedMetad, trajectory_fes

T = 300.0
KT = units.kB * T
EB = 8 * KT  # barrier of the double well


class DoubleWell:
    """One atom: E = EB ((x/1 Å)^2 - 1)^2 + (y^2 + z^2) eV; the exact FES along x is the
    first term (the y, z factor integrates to a constant)."""

    numbers = np.array([18])

    def energy(self, x):
        p = x[..., 0, :]
        return EB * (p[..., 0] ** 2 - 1) ** 2 + (p[..., 1] ** 2 + p[..., 2] ** 2)


def _rms_kt(f, exact, sel):
    d = f[sel] - exact[sel]
    d = d - d.mean()  # free energies are defined up to a constant
    return float(np.sqrt((d**2).mean()) / KT)


def test_well_tempered_metad_recovers_double_well_fes():
    r = 32  # walkers sharing one bias, all started in the left well
    md = WellTemperedMetad([Position(0, 0, name="x")], sigma=[0.1], height_ev=0.5 * KT,
                           pace=25, bias_factor=8.0, temperature_k=T, grid_min=[-2.0],
                           grid_max=[2.0], grid_bins=[200])
    x0 = np.zeros((r, 1, 3))
    x0[:, 0, 0] = -1.0
    traj = run_langevin(DoubleWell(), x0, [10.0], T, dt_fs=4.0, steps=4000,
                        friction_per_fs=0.02, bias=md, record_every=5, seed=0)
    assert (traj.cv("x")[-1] > 0).any() and (traj.cv("x")[-1] < 0).any()  # both wells visited
    # stated accuracy: RMS error below 0.5 kT where F_exact < 6 kT (barrier 8 kT)
    fes = md.fes()
    g = fes.grid[0]
    exact = EB * (g**2 - 1) ** 2
    assert _rms_kt(fes.free_energy, exact, exact < 6 * KT) < 0.5
    # the c(t)-reweighted histogram agrees too, and its block errors are of the right size
    rw = trajectory_fes(traj, ["x"], [-2.0], [2.0], [40], n_blocks=5, skip_ps=3.0)
    g2 = rw.grid[0]
    ex2 = EB * (g2**2 - 1) ** 2
    sel = (ex2 < 6 * KT) & np.isfinite(rw.free_energy)
    assert sel.sum() >= 15
    err = _rms_kt(rw.free_energy, ex2, sel)
    assert err < 0.5
    mean_sigma = float(np.nanmean(rw.error[sel]) / KT)
    assert 0.01 < mean_sigma < 1.0
    assert len(md.c_history) == 4000 // 25 and md.c_history[-1] > md.c_history[0] > 0


def test_grid_bias_equals_sum_of_gaussians_2d():
    cvs = [Position(0, 0, name="x"), Position(0, 1, name="y")]
    md = WellTemperedMetad(cvs, sigma=[0.3, 0.2], height_ev=0.05, pace=1, bias_factor=5.0,
                           temperature_k=T, grid_min=[-2.0, -2.0], grid_max=[2.0, 2.0],
                           grid_bins=[400, 400])
    g = torch.Generator().manual_seed(1)
    for _ in range(5):  # two walkers per deposition
        md.deposit(torch.rand(2, 2, generator=g, dtype=torch.float64) * 2 - 1)
    c = torch.tensor(np.concatenate(md.centers))
    h = torch.tensor(np.concatenate(md.heights))
    assert h[0] == pytest.approx(0.05) and float(h[-1]) < 0.05  # well-tempered decay

    def exact(x):
        s = x[:, 0, :2]
        d = (s[:, None, :] - c[None]) / torch.tensor([0.3, 0.2], dtype=torch.float64)
        return (h * torch.exp(-0.5 * (d**2).sum(-1))).sum(-1)

    x = (torch.rand(20, 1, 3, generator=g, dtype=torch.float64) * 2.4 - 1.2)
    out = md.evaluate(x)
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(exact(xg).sum(), xg)
    scale = float(exact(x).abs().max())
    assert torch.allclose(out.energy, exact(x), atol=2e-3 * scale)
    assert torch.allclose(out.forces, -grad, atol=5e-3 * float(grad.abs().max()))
    assert float(out.forces[:, 0, 2].abs().max()) == 0.0


def test_save_load_roundtrip_and_continue(tmp_path):
    cfg = validate_model(MetadConfig, {
        "cvs": [{"kind": "position", "atom": 0, "axis": 0, "name": "x"}], "sigma": [0.1],
        "height_ev": 0.01, "pace": 10, "bias_factor": 6, "grid_min": [-2], "grid_max": [2],
        "walls": [{"cv": "x", "upper": 1.8, "k": 5.0}]})
    md = WellTemperedMetad.from_config(cfg, T, natoms=1)
    x0 = np.zeros((4, 1, 3))
    x0[:, 0, 0] = -1.0
    run_langevin(DoubleWell(), x0, [10.0], T, 4.0, 200, bias=md, record_every=50, seed=0)
    md.save(tmp_path / "bias.npz")
    back = WellTemperedMetad.load(tmp_path / "bias.npz")
    assert back.n_steps == md.n_steps == 200 and back.c_history == md.c_history
    assert np.array_equal(back.grid_bias(), md.grid_bias())
    assert sum(len(c) for c in back.centers) == 4 * 20
    probe = torch.tensor([[[-0.9, 0.1, 0.0]], [[1.95, 0.0, 0.0]]], dtype=torch.float64)
    a, b = md.evaluate(probe), back.evaluate(probe)
    assert torch.equal(a.energy, b.energy) and torch.equal(a.forces, b.forces)
    assert float(a.energy[1]) == pytest.approx(0.5 * 5.0 * 0.15**2 + md.bias_at([1.95])[0])
    with np.load(tmp_path / "bias.npz", allow_pickle=False) as z:
        assert z["meta"].dtype.kind == "U"


def test_config_errors():
    base = {"cvs": [{"kind": "coordination"}], "sigma": [0.05], "grid_min": [2.0],
            "grid_max": [5.0]}
    assert validate_model(MetadConfig, base, "m.yaml").bins() == [300]
    with pytest.raises(ConfigError, match="sigma needs 1 value"):
        validate_model(MetadConfig, {**base, "sigma": [0.1, 0.2]}, "m.yaml")
    with pytest.raises(ConfigError, match="bias_factor"):
        validate_model(MetadConfig, {**base, "bias_factor": 1.0}, "m.yaml")
    with pytest.raises(ConfigError, match="wall on unknown CV"):
        validate_model(MetadConfig, {**base, "walls": [{"cv": "rg", "upper": 1}]}, "m.yaml")
