"""The report loader on a run directory in the campaign's layout (docs/campaign.md), and the
``alflow spectra`` / ``alflow report`` verbs on it (real PySCF TDDFT on LiH)."""

import json
import re

import numpy as np
import pytest
import typer
import yaml
from ase import Atoms
from typer.testing import CliRunner

from alflow.campaign.checkpoint import Checkpoint
from alflow.campaign.report_loader import load_report_data
from alflow.campaign.rundir import create_run_dir
from alflow.cli import report as report_cli
from alflow.cli import spectra as spectra_cli
from alflow.dataset import LabelRecord, LabelStore
from alflow.observables.report import write_report
from alflow.runlayout import RunLayout


def _lih(d):
    return Atoms("LiH", positions=[[0, 0, 0], [0, 0, d]])


@pytest.fixture()
def run_dir(tmp_path):
    root = create_run_dir(tmp_path / "run").root
    (root / "results").mkdir(parents=True)
    (root / "campaign.yaml").write_text(yaml.safe_dump({
        "name": "lih-test", "temperature_k": 300.0,
        "system": {"states": {"short": {}, "long": {}}, "delta_f": {"from": "short",
                                                                      "to": "long"}},
        "oracle": {"method": "pyscf:pbe/sto-3g"}}, sort_keys=False))
    (root / "status.json").write_text(json.dumps({
        "name": "lih-test", "state": "finished", "converged": True, "generation": 1,
        "temperature_k": 300.0,
        "delta_f": {"from": "short", "to": "long", "value_ev": 0.11, "error_ev": 0.01,
                    "dft_corrected_ev": 0.1, "dft_corrected_error_ev": 0.02},
        "history": [{"generation": 0, "value_ev": 0.2, "error_ev": 0.05, "rhat": 1.1},
                    {"generation": 1, "value_ev": 0.11, "error_ev": 0.01, "rhat": 1.0,
                     "corrected_ev": 0.1, "corrected_error_ev": 0.02,
                     "states": {"short": {"ess": 400.0, "acceptance": 0.5, "rhat": 1.002}}}]}))
    events = [
        {"event": "generation_done", "generation": 0, "value_ev": 0.2, "error_ev": 0.05,
         "correction_ev": -0.03, "correction_error_ev": 0.04},
        {"event": "selected", "generation": 1, "candidates": 50, "selected": 3},
        {"event": "task_start", "task": "train", "key": "k1", "executor": "gpu"},
        {"event": "task_done", "task": "train", "key": "k1", "seconds": 360.0},
        {"event": "task_start", "task": "flows", "key": "k2", "executor": "gpu"},
        {"event": "task_done", "task": "flows", "key": "k2", "seconds": 720.0},
        {"event": "generation_done", "generation": 1, "value_ev": 0.11, "error_ev": 0.01},
    ]
    (root / "events.jsonl").write_text("\n".join(json.dumps(e) for e in events)
                                       + '\n{"event": "torn')
    store = LabelStore(root / "dataset.h5")
    recs = []
    for g, (state, d) in enumerate([("short", 1.5), ("long", 1.8)] * 2):
        a = _lih(d + 0.01 * g)
        recs.append(LabelRecord.from_atoms(a, key=f"k{g}", status="ok", energy=-8.0 + 0.1 * g,
                                           forces=np.zeros((2, 3)),
                                           tags={"state": state, "generation": g // 2}))
    recs.append(LabelRecord.from_atoms(_lih(0.3), key="bad", status="failed", reason="SCF",
                                       tags={"state": "short", "generation": 1}))
    store.append_many(recs)
    fes_dir = root / "explore" / "gen001"
    fes_dir.mkdir(parents=True)
    (fes_dir / "fes.json").write_text(json.dumps({  # alflow.sampling.metad.FES.to_dict()
        "cv_names": ["rg"], "grid": [[1.0, 1.1, 1.2]], "free_energy_ev": [0.1, 0.0, None],
        "error_ev": None}))
    run = RunLayout(root)
    results = Checkpoint(run.results)  # the flows step's checkpoints, as the campaign saves them
    for state, d0 in (("short", 1.5), ("long", 1.8)):
        x = np.array([_lih(d0 + 0.02 * i).positions for i in range(5)])
        results.save("flows", f"key-{state}", {
            "state": state, "flow_dir": str(run.flows(1, state)), "ess": 123.0,
            "ess_fraction": 0.3, "rhat": 1.004, "f_ev": -1.0, "err_ev": 0.01},
            {"reweight_positions": x})
    return root


def test_loader_reads_every_section_it_has(run_dir):
    data = load_report_data(run_dir)
    assert data.states == ["short", "long"] and data.temperature_k == 300.0
    assert data.generations == 2 and "converged" in data.status
    dfs = {p.generation: p for p in data.delta_f}
    assert dfs[0].dft_delta_f_ev == pytest.approx(0.17)  # value + correction
    assert dfs[0].dft_error_ev == pytest.approx(np.hypot(0.05, 0.04))
    assert dfs[1].dft_delta_f_ev == pytest.approx(0.1) and dfs[1].state == "long"
    labels = {r.generation: r for r in data.labels}
    assert (labels[0].labelled, labels[0].failed, labels[0].selected) == (2, 0, 2)
    assert (labels[1].labelled, labels[1].failed, labels[1].selected) == (2, 1, 3)
    # per-state numbers of the status history win over the step results
    assert {(f.generation, f.state, f.rhat) for f in data.flow} == {(1, "short", 1.002),
                                                                     (1, "long", 1.004)}
    assert dfs[1].ess == {"short": 400.0}
    gpu = {r.resource_class: r for r in data.provenance.resources}["gpu"]
    assert gpu.tasks == 2 and gpu.wall_hours == pytest.approx(0.3)
    assert data.provenance.dft_method == "pyscf:pbe/sto-3g"
    assert data.spectra == []
    (fes,) = data.fes
    assert fes.cv_names == ["rg"] and np.isnan(fes.free_energy_ev[2])
    assert {f.state: f.ess_fraction for f in data.flow}["long"] == 0.3


def test_loader_survives_garbage(tmp_path):
    (tmp_path / "status.json").write_text("{not json")
    data = load_report_data(tmp_path)
    assert any("could not be read" in w for w in data.warnings)
    page = write_report(data, tmp_path / "report")
    assert "not computed" in page.read_text()


def test_spectra_then_report_verbs(run_dir):
    app = typer.Typer()
    app.callback()(lambda: None)
    spectra_cli.register(app)
    report_cli.register(app)
    runner = CliRunner()
    r = runner.invoke(app, ["spectra", str(run_dir), "--samples", "3", "--nstates", "2",
                            "--site", "local-threads",
                            "--threads", "1"])
    assert r.exit_code == 0, r.output + repr(r.exception)
    r = runner.invoke(app, ["report", str(run_dir)])
    assert r.exit_code == 0, r.output + repr(r.exception)
    page = run_dir / "report" / "index.html"
    srcs = re.findall(r"<img src='([^']+)'", page.read_text())
    assert "figures/spectra.png" in srcs
    assert all((page.parent / s).is_file() for s in srcs)
    summary = json.loads((page.parent / "report.json").read_text())["summary"]
    assert set(summary["spectra"]) == {"short", "long"}
    assert summary["spectra"]["short"]["n_samples"] == 3
    # the spectra used the campaign's oracle method by default
    assert "tddft:pbe/sto-3g" in page.read_text()


def test_a_last_generation_without_delta_f_does_not_take_the_answer(tmp_path):
    """status.json's ΔF is the campaign's answer from the last generation that had one: a
    later generation whose flows failed keeps no value, and the answer stays with its own."""
    (tmp_path / "campaign.yaml").write_text(yaml.safe_dump({
        "name": "t", "temperature_k": 18.0, "oracle": {"method": "ase:lj"},
        "system": {"states": {"pbp": {}, "coh": {}}}}))
    (tmp_path / "status.json").write_text(json.dumps({
        "temperature_k": 18.0,
        "delta_f": {"from": "pbp", "to": "coh", "value_ev": 0.003, "error_ev": 0.0001,
                    "dft_corrected_ev": 0.0029, "dft_corrected_error_ev": 0.0002},
        "history": [{"generation": 0, "value_ev": 0.003, "error_ev": 0.0001,
                     "correction_ev": -0.0001, "correction_error_ev": 0.0002,
                     "corrected_ev": 0.0029, "corrected_error_ev": 0.0002,
                     "states": {"coh": {"ess_fraction": 0.004}}},
                    {"generation": 1, "states": {}}]}))
    # the flows step's own result says BAR gave F (status.json publishes no estimator)
    run = RunLayout(tmp_path)
    Checkpoint(run.results).save("flows", "k", {
        "state": "coh", "flow_dir": str(run.flows(0, "coh")), "f_ev": -0.1, "is_f_ev": -0.1,
        "n_target": 640})
    data = load_report_data(tmp_path)
    g0, g1 = sorted(data.delta_f, key=lambda p: p.generation)
    assert g1.delta_f_ev is None and g1.dft_delta_f_ev is None and not g1.final
    assert g0.final and g0.dft_delta_f_ev == 0.0029 and g0.correction_ev == -0.0001
    assert g0.method == "BAR" and g0.ess_fraction == {"coh": 0.004}
    assert not g0.overlap_warning  # BAR: the flows' ESS does not measure its overlap
    page = write_report(data, tmp_path / "report").read_text()
    assert "generation 0" in page and "DFT" not in page.replace("dft_", "")
