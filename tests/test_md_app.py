"""Exploration runs from configs: the Parsl app (real Parsl, thread executor) and ``alflow md``."""

from pathlib import Path

import numpy as np
import parsl
import pytest
from ase.io import read
from typer.testing import CliRunner

from alflow.campaign.sites import local_threads
from alflow.cli import app
from alflow.config import validate_model
from alflow.errors import InputError
from alflow.exploration import run_exploration
from alflow.sampling.explore import ExploreConfig
from alflow.sampling.langevin import Trajectory
from alflow.sampling.metad import WellTemperedMetad

DATA = Path(__file__).resolve().parents[1] / "alflow" / "examples" / "data"
CFG = {"temperature_k": 40.0, "steps": 60, "replicas": 3, "dt_fs": 5.0, "record_every": 20,
       "seed": 7, "wall": {"radius": 8.0, "k": 0.5},
       "cvs": [{"kind": "gyration"}],
       "metad": {"cvs": [{"kind": "coordination", "r0": 4.2, "name": "cn"}], "sigma": [0.1],
                 "height_ev": 0.005, "pace": 10, "grid_min": [0.0], "grid_max": [6.0]}}


def test_parsl_app_matches_inline_and_writes_outputs(tmp_path):
    from apps.sampling import md_app

    lj7 = read(DATA / "lj7.extxyz", ":")
    cfg = validate_model(ExploreConfig, CFG)
    inline = run_exploration("torch:lj", lj7, cfg)
    parsl.load(local_threads(tmp_path / "run", max_threads=2))
    try:
        fut = md_app("torch:lj", lj7, cfg, out=str(tmp_path / "t.extxyz"),
                     bias_out=str(tmp_path / "b.npz"))
        traj = fut.result()
    finally:
        parsl.dfk().cleanup()
        parsl.clear()
    assert isinstance(traj, Trajectory)
    np.testing.assert_array_equal(traj.positions, inline.positions)
    assert traj.cv_names == ["gyration", "cn"]
    frames = read(tmp_path / "t.extxyz", ":")
    assert len(frames) == 3 * 4
    assert {"cv_cn", "cv_gyration", "bias", "bias_offset"} <= set(frames[0].info)
    assert frames[5].info["bias"] > 0  # replica 1, step 20: after two depositions
    bias = WellTemperedMetad.load(tmp_path / "b.npz")
    assert bias.n_steps == 60 and len(bias.centers) == 6
    # continuing from the saved bias keeps depositing on it
    more = run_exploration("torch:lj", lj7, cfg, bias_in=tmp_path / "b.npz",
                           bias_out=tmp_path / "b2.npz")
    assert WellTemperedMetad.load(tmp_path / "b2.npz").n_steps == 120
    assert more.offset[-1] > traj.offset[-1]


def test_cli_md_with_metad(tmp_path):
    (tmp_path / "m.yaml").write_text(
        "cvs: [{kind: coordination, r0: 4.2}]\nsigma: [0.1]\nheight_ev: 0.005\npace: 10\n"
        "grid_min: [0]\ngrid_max: [6]\n")
    out = tmp_path / "o" / "t.h5"
    res = CliRunner().invoke(app, [
        "md", "--calculator", "torch:lj", "-s", str(DATA / "lj7.extxyz"), "--temperature",
        "30", "--steps", "40", "--replicas", "2", "--metad", str(tmp_path / "m.yaml"),
        "-o", str(out)])
    assert res.exit_code == 0, res.output
    traj = Trajectory.read_hdf5(out)
    assert traj.positions.shape == (5, 2, 7, 3) and traj.temperature_k == 30.0
    assert (tmp_path / "o" / "t.bias.npz").exists() and (tmp_path / "o" / "t.fes.json").exists()
    res = CliRunner().invoke(app, ["md", "-s", str(DATA / "lj7.extxyz"), "--steps", "1"])
    assert isinstance(res.exception, InputError)


def test_ase_oracle_spec_and_bad_structures():
    ag6 = read(DATA / "ag6.extxyz", ":")
    cfg = ExploreConfig(temperature_k=300, steps=4, record_every=2, replicas=2)
    traj = run_exploration("ase:emt", ag6, cfg)
    assert traj.positions.shape == (3, 2, 6, 3) and traj.force_dev is None
    np.testing.assert_allclose(traj.positions[0, 1], ag6[1].positions)
    with pytest.raises(InputError, match="different atoms"):
        run_exploration("torch:lj", [ag6[0], read(DATA / "lj7.extxyz")], cfg)
    with pytest.raises(InputError, match="model directory"):
        run_exploration("/nonexistent/model", ag6, cfg)


def test_user_restraint_hook_is_applied_and_recorded(tmp_path, monkeypatch):
    (tmp_path / "tether.py").write_text(
        "def tether(x):\n    return 2.0 * (x[..., 0, :] ** 2).sum(-1)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    lj7 = read(DATA / "lj7.extxyz", ":")
    for a in lj7:
        a.positions -= a.positions[0]
    cfg = ExploreConfig(temperature_k=30, steps=200, record_every=20, replicas=2,
                        dt_fs=5.0, restraint="tether:tether", seed=1)
    traj = run_exploration("torch:lj", lj7, cfg)
    x0 = traj.positions[:, :, 0, :]
    np.testing.assert_allclose(traj.bias, 2.0 * (x0**2).sum(-1), rtol=1e-12)
    free = run_exploration("torch:lj", lj7, cfg.model_copy(update={"restraint": None}))
    assert (x0**2).sum(-1).mean() < 0.5 * (free.positions[:, :, 0, :] ** 2).sum(-1).mean()
