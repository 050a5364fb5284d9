"""The built-in committee MLIP as a refinable potential: a tiny committee trained on
Lennard-Jones labels (argon, σ = 3.405 Å) is refined by ``alflow refine`` towards the g(r)
of a Lennard-Jones fluid with σ 5 % larger, once without anchor and once with a strong one
(the same seeds, so the same simulation noise and equilibration drift: the anchored run is
the control). Without the anchor its g(r) ends closer to the target than with it, and its
label error grows; with it the label error stays at its trained value. The refined
committee is written and loads with ``alflow.mlip.load``. Config errors of the new fields
name the field. Fixed seeds: deterministic."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write
from test_cli_errors import alflow

from alflow.mlip import MLIPConfig, load, train_committee
from alflow.periodic import VerletList
from alflow.refine.config import RefineConfig
from alflow.refine.dynamics import Box, forces, lattice_start, nvt
from alflow.refine.fit import measure
from alflow.refine.potential import TrainableLJ
from alflow.refine.targets import write_table

EPS, SIG = 0.0103, 3.405
N, RHO, T, WIDTH = 32, 0.0213, 100.0, 0.1
EDGE = (N / RHO) ** (1 / 3)
MLIP = dict(cutoff=5.0, committee_size=2, epochs=40, batch_size=4, dtype="float64",
            valid_fraction=0.0, builtin={"features": 8, "layers": 1, "n_rbf": 6,
                                         "radial_hidden": 8, "readout_hidden": 8})


def _labels(path, n_frames: int = 12, seed: int = 5) -> None:
    box = Box("Ar", 39.948, N, EDGE, T)
    lj = TrainableLJ(EPS, SIG, 5.5)
    run = nvt(lj, box, lattice_start(box, 2, seed), None, 10.0, 100 + 20 * n_frames // 2,
              0.01, 20, seed + 1)
    x = run.frames[-(n_frames // 2):].reshape(-1, N, 3)
    cell = box.cell(len(x))
    with torch.no_grad():
        e = lj.energy(x, cell, detached=True)
    f = forces(lj, x, cell, VerletList(5.5, 0.0), False)
    frames = []
    for k in range(len(x)):
        a = Atoms("Ar" * N, positions=x[k].numpy(), cell=[EDGE] * 3, pbc=True)
        a.calc = SinglePointCalculator(a, energy=float(e[k]), forces=f[k].numpy())
        frames.append(a)
    write(str(path), frames, format="extxyz")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("mlip")
    _labels(d / "labels.xyz")
    from ase.io import read
    train_committee(read(str(d / "labels.xyz"), index=":"), d / "committee",
                    MLIPConfig(**MLIP))
    return d


def _config(d, **potential) -> dict:
    return {
        "system": {"element": "Ar", "mass_amu": 39.948, "n_atoms": N,
                   "number_density_per_A3": RHO, "temperature_k": T},
        "potential": {"kind": "mlip", "model_dir": "committee", "labels": "labels.xyz",
                      "label_weight": 1.0, **potential},
        "md": {"dt_fs": 10.0, "replicas": 4, "equilibration_steps": 1000,
               "reequilibration_steps": 100, "sample_steps": 300, "sample_every": 10,
               "segment_steps": 20, "record_every": 5, "gradient_steps": 10, "seed": 3},
        "targets": {"rdf": {"file": "rdf.csv", "width_a": WIDTH}},
        "optimiser": {"method": "adam", "iterations": 6, "learning_rate": 0.005,
                      "final_learning_rate": 0.003},
    }


def _rdf_error(doc: dict, key: str) -> float:
    rdf = doc["observables"]["rdf"]
    return float(np.mean((np.asarray(rdf[key]["value"]) - rdf["target"]) ** 2))


def test_mlip_refined_towards_a_target_rdf_trades_label_error(trained, monkeypatch, capsys):
    d = trained
    r = np.arange(3.0, EDGE / 2 - 4 * WIDTH - 0.01, 0.05)
    lj = {"system": {"element": "Ar", "mass_amu": 39.948, "n_atoms": N,
                     "number_density_per_A3": RHO, "temperature_k": T},
          "potential": {"kind": "lj", "epsilon_ev": EPS, "sigma_a": SIG * 1.05,
                        "cutoff_a": 5.5, "trainable": ["sigma_a"]},
          "md": {"dt_fs": 10.0, "replicas": 4, "equilibration_steps": 200,
                 "sample_steps": 400, "sample_every": 10, "segment_steps": 20,
                 "gradient_steps": 10, "seed": 9},
          "targets": {"potential_energy_ev_per_atom": -0.05}}
    target = measure(RefineConfig.model_validate(lj), r, WIDTH)["rdf"]
    write_table(d / "rdf.csv", ("r_angstrom", "g"), r, target.value)
    docs = {}
    for weight in (0.0, 1000.0):
        path = d / f"refine_{weight:g}.yaml"
        path.write_text(yaml.safe_dump(_config(d, label_weight=weight)))
        rc, out, err = alflow(monkeypatch, capsys, "refine", str(path), "--out",
                              str(d / f"fit_{weight:g}"))
        assert rc == 0, out + err
        docs[weight] = json.loads((d / f"fit_{weight:g}" / "result.json").read_text())
    free, anchored = docs[0.0], docs[1000.0]
    assert "labels" in anchored["iterations"][0]["terms"]
    assert "labels" not in free["iterations"][0]["terms"]
    # the same start: the refinement moves g(r) towards the target beyond the drift
    assert _rdf_error(free, "before") == pytest.approx(_rdf_error(anchored, "before"))
    assert _rdf_error(free, "after") < _rdf_error(anchored, "after")
    assert _rdf_error(free, "after") < 0.9 * _rdf_error(free, "before")
    f0 = anchored["initial_parameters"]["label_force_rmse_ev_per_A"]
    assert anchored["parameters"]["label_force_rmse_ev_per_A"] < 1.2 * f0
    assert free["parameters"]["label_force_rmse_ev_per_A"] > 2 * f0
    refined = load(d / "fit_0" / "model")
    assert len(refined.committee.members) == 2


@pytest.mark.parametrize("change, field", [
    ({"label_weight": -1.0}, "label_weight"),
    ({"model_dir": "nowhere"}, "model_dir"),
    ({"labels": "missing.xyz"}, "labels"),
    ({"cutoff_a": 5.0}, "cutoff_a"),
])
def test_mlip_config_errors_name_the_field(tmp_path, monkeypatch, capsys, change, field):
    (tmp_path / "committee").mkdir()
    (tmp_path / "committee" / "committee.json").write_text(json.dumps({"config": {}}))
    (tmp_path / "labels.xyz").write_text("")
    (tmp_path / "rdf.csv").write_text("r_angstrom,g\n3.0,0.1\n3.5,2.5\n4.0,1.5\n")
    cfg = _config(tmp_path, **change)
    (tmp_path / "refine.yaml").write_text(yaml.safe_dump(cfg))
    rc, out, err = alflow(monkeypatch, capsys, "refine", str(tmp_path / "refine.yaml"))
    assert rc == 2 and field in out + err, out + err


def test_mlip_refuses_gauss_newton(tmp_path, monkeypatch, capsys):
    (tmp_path / "committee").mkdir()
    (tmp_path / "committee" / "committee.json").write_text(json.dumps({"config": {}}))
    (tmp_path / "labels.xyz").write_text("")
    (tmp_path / "rdf.csv").write_text("r_angstrom,g\n3.0,0.1\n3.5,2.5\n4.0,1.5\n")
    cfg = _config(tmp_path)
    cfg["optimiser"]["method"] = "gauss-newton"
    (tmp_path / "refine.yaml").write_text(yaml.safe_dump(cfg))
    rc, out, err = alflow(monkeypatch, capsys, "refine", str(tmp_path / "refine.yaml"))
    assert rc == 2 and "mlip" in out + err, out + err
