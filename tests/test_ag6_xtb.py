"""The ag6-xtb example: its states are classes of GFN1-xTB minima by planarity (a thermal
triangle is planar whatever its instantaneous buckling), and a tiny campaign on the GFN1-xTB
oracle runs end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from ase.io import read
from tblite.ase import TBLite
from tiny_campaign import SMALL

from alflow.campaign.config import load_campaign
from alflow.campaign.runner import start
from alflow.campaign.steps import state_sets
from alflow.campaign.system import build_system
from alflow.dataset import LabelStore
from alflow.examples import DATA, write_example
from alflow.potential import AseCalculatorPotential
from alflow.sampling.cvs import Planarity
from alflow.states import quench


@pytest.fixture(scope="module")
def minima():
    frames = read(DATA / "ag6_xtb.extxyz", ":")
    return {a.info["point_group"]: a for a in frames}


def test_example_minima_are_gfn1_minima(minima, tmp_path):
    """The example's structures: GFN1-xTB minima (forces below 1e-4 eV/Å), the triangle
    exactly planar, the pyramid 0.096 eV below it, the bicapped tetrahedron 0.053 eV below
    the pyramid; ``3d.xyz`` holds both 3D minima."""
    energies = {}
    for name, atoms in minima.items():
        a = atoms.copy()
        a.calc = TBLite(method="GFN1-xTB", verbosity=0)
        assert np.abs(a.get_forces()).max() < 1e-4
        energies[name] = a.get_potential_energy()
    assert energies["C5v"] - energies["D3h"] == pytest.approx(-0.0962, abs=5e-4)
    assert energies["C2v"] - energies["C5v"] == pytest.approx(-0.0529, abs=5e-4)
    plan = Planarity()(torch.as_tensor(np.stack([minima[g].positions
                                                 for g in ("D3h", "C5v", "C2v")])))
    assert plan[0] < 1e-3 and (plan[1:] > 0.5).all()
    path = write_example("ag6-xtb", tmp_path)
    assert len(read(path.parent / "structures" / "3d.xyz", ":")) == 2
    assert len(read(path.parent / "structures" / "planar.xyz", ":")) == 1


def test_states_are_minima_classes_not_cv_regions(tmp_path, minima):
    """A buckled triangle (instantaneous planarity beyond the 0.1 Å bound) quenches back to
    the planar minimum: planar; a displaced pyramid: 3d. A CV region of the configuration itself
    would call the buckled triangles 3D."""
    path = write_example("ag6-xtb", tmp_path)
    cfg = load_campaign(path)
    system = build_system(cfg)
    pot = AseCalculatorPotential(lambda: TBLite(method="GFN1-xTB", verbosity=0),
                                 minima["D3h"])
    states = state_sets(pot, system, cfg.system.states)
    assert states.names == ["planar", "3d"]
    rng = np.random.default_rng(0)
    tri = minima["D3h"].positions
    buckled = tri + [[0, 0, 0.3 * (-1) ** i] for i in range(6)]  # alternating up and down
    pyramid = minima["C5v"].positions + rng.normal(0, 0.05, (6, 3))
    x = np.stack([buckled, pyramid])
    inst = Planarity()(torch.as_tensor(x)).numpy()
    assert inst[0] > 0.1  # a planarity region of the configuration would call it 3D
    assert states.assign(x).tolist() == [0, 1]  # quenches stopped by the certificate
    full, _, ok = quench(pot, x)  # ... as the full quench classes them
    assert ok.all() and states.classes.assign(full).tolist() == [0, 1]
    np.testing.assert_allclose(Planarity()(torch.as_tensor(states.minima)).numpy()[0], 0,
                               atol=1e-3)


def test_tiny_ag6_xtb_campaign_runs_end_to_end(tmp_path):
    path = write_example("ag6-xtb", tmp_path / "c")
    data = yaml.safe_load(path.read_text())
    small = json.loads(json.dumps(SMALL))
    small.pop("system")  # the example's states (classes of minima by planarity)
    small["mlip"]["cutoff"] = 6.0
    small["selection"]["min_distance"] = 2.0
    for k, v in small.items():
        data[k] = {**data.get(k, {}), **v} if isinstance(v, dict) else v
    data["convergence"]["max_generations"] = 1
    path.write_text(yaml.safe_dump(data))
    run = tmp_path / "run"
    start(path, run, progress=False)
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "finished"
    assert set(status["history"][0]["states"]) == {"planar", "3d"}
    assert np.isfinite(status["delta_f"]["value_ev"])
    recs = list(LabelStore(run / "dataset.h5", create=False).records(status=None))
    # a tiny committee's flow may propose overlapping atoms for the oracle correction: those
    # are refused (and retried, like any failure) and recorded; every other label is computed
    refused = [r for r in recs if r.status != "ok"]
    assert all(r.tags["purpose"] == "reweight" and r.provenance["attempt_reasons"][0]
               .startswith("rejected: atoms") for r in refused)
    assert [r for r in recs if r.tags["purpose"] == "bootstrap"]
    assert all(r.status == "ok" for r in recs if r.tags["purpose"] != "reweight")
    assert {r.method["name"] for r in recs} == {"xtb:gfn1"}
    assert status["oracle_calls"] == sum(r.provenance["attempts"] for r in recs)
    # a stored label is GFN1-xTB's energy of its configuration (eV)
    atoms = LabelStore(run / "dataset.h5", create=False).read_atoms(status="ok")[0]
    ref = atoms.copy()
    ref.calc = TBLite(method="GFN1-xTB", verbosity=0)
    assert atoms.get_potential_energy() == pytest.approx(ref.get_potential_energy(), abs=1e-7)
    assert Path(run / "flows").is_dir()
