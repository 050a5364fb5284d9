"""ΔF at other temperatures on a real (tiny) lj7 campaign run directory: the flows step stores
its importance-sampling draw, the report reuses it (F at the campaign temperature equals the
campaign's per-state F exactly), older run directories without it are resampled to the same
draw, and the oracle-labelled samples give the campaign's own DFT correction at T."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from test_report import browser_view, needs_chromium
from tiny_campaign import SMALL

from alflow.campaign.flow_samples import campaign_samples
from alflow.campaign.report_loader import load_report_data
from alflow.dataset import LabelStore
from alflow.observables.oracle_samples import campaign_labelled
from alflow.observables.report import fmt_pm, write_report
from alflow.observables.spectra_campaign import campaign_samples as spectra_samples
from alflow.observables.temperatures import StateSamples, delta_f_vs_temperature
from alflow.runlayout import RunLayout

STATES = ("coh", "pbp")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """One generation of the tiny lj7 campaign (about 20 s), with enough flow samples for
    both states to have an estimate and 4 oracle-labelled samples per state."""
    from alflow.examples import write_example

    tmp = tmp_path_factory.mktemp("lj7")
    path = write_example("lj7", tmp)
    data = yaml.safe_load(path.read_text())
    for k, v in SMALL.items():
        data[k] = {**data.get(k, {}), **v} if isinstance(v, dict) else v
    data["convergence"]["max_generations"] = 1
    data["exploration"]["sampler"]["samples"] = 600
    data["estimate"]["reweight_samples"] = 4
    path.write_text(yaml.safe_dump(data))
    exe = str(Path(sys.executable).parent / "alflow")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("ALFLOW_PAUSE_AT", None)
    out = subprocess.run([exe, "run", str(path), "--dir", str(tmp / "run")], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    return tmp / "run"


def _last(run: Path) -> dict:
    return json.loads((run / "status.json").read_text())["history"][-1]


def test_stored_flow_samples_give_the_campaign_free_energies_exactly(run):
    hist = _last(run)
    samples, info = campaign_samples(run)
    assert info["generation"] == 0 and info["temperature_k"] == 18.0
    assert not (run / "temperatures").exists()  # nothing was drawn again
    for s in STATES:
        assert RunLayout(run).flow_samples(0, s).exists()
        smp = samples[s]
        assert smp.generation == 0 and len(smp.energy_ev) == 600 and smp.inside.any()
        assert smp.symmetry_number == hist["states"][s]["symmetry_number"]
        assert smp.free_energy(18.0).f_ev == hist["states"][s]["f_ev"]


def test_run_dir_without_stored_samples_is_resampled_to_the_same_draw(run, tmp_path):
    old = tmp_path / "run"
    (old / "flows" / "gen000").mkdir(parents=True)
    for name in ("campaign.yaml", "models"):
        os.symlink(run / name, old / name)
    for s in STATES:
        d = old / "flows" / "gen000" / s
        d.mkdir()
        for f in ("flow.json", "flow.pt"):
            os.symlink(run / "flows" / "gen000" / s / f, d / f)
    drawn, _ = campaign_samples(old)
    for s in STATES:
        kept = StateSamples.load(RunLayout(run).flow_samples(0, s))
        np.testing.assert_array_equal(drawn[s].energy_ev, kept.energy_ev)
        np.testing.assert_array_equal(drawn[s].log_q, kept.log_q)
        np.testing.assert_array_equal(drawn[s].inside, kept.inside)
        assert (old / "temperatures" / f"gen000-{s}.npz").exists()


def test_oracle_correction_at_the_campaign_temperature_is_the_campaigns(run):
    hist = _last(run)
    samples, info = campaign_samples(run)
    lab = campaign_labelled(run, info["config"], 0)
    assert sorted(lab) == list(sorted(STATES))
    oracle = {r.energy for r in LabelStore(run / "dataset.h5", create=False).records(
        purpose="reweight")}
    for s in STATES:
        assert len(lab[s].model_ev) == 4 and set(lab[s].oracle_ev) <= oracle
    pts = delta_f_vs_temperature(samples, "pbp", "coh", [14.4, 18.0, 22.5], labelled=lab)
    at_t = pts[1]
    assert at_t.delta_f_ev == pytest.approx(hist["value_ev"], rel=1e-12)
    assert at_t.correction_ev == pytest.approx(hist["correction_ev"], rel=1e-9, abs=1e-15)
    assert at_t.dft_delta_f_ev == pytest.approx(hist["corrected_ev"], rel=1e-9, abs=1e-15)
    for p in pts:  # 600 flow samples, 4 labels: nothing here has enough overlap to trust
        assert p.dft_delta_f_ev is not None and p.dft_poor_overlap
        assert set(p.dft_ess) == set(STATES)


def test_report_of_the_run_shows_the_dft_corrected_delta_f_vs_temperature(run, tmp_path):
    data = load_report_data(run, temperatures=[15.0, 18.0, 21.0])
    rows = data.delta_f_temperature
    assert [p.temperature_k for p in rows] == [15.0, 18.0, 21.0]
    assert rows[1].dft_delta_f_ev == pytest.approx(_last(run)["corrected_ev"], rel=1e-9)
    assert any("corrected to the oracle: poor overlap" in w for w in data.warnings)
    page = write_report(data, tmp_path / "rep")
    js = json.loads((tmp_path / "rep" / "report.json").read_text())
    row = js["summary"]["delta_f_temperature"][1]
    assert row["dft_delta_f_ev"] == pytest.approx(rows[1].dft_delta_f_ev)
    assert set(row["dft_ess"]) == set(STATES) and row["dft_poor_overlap"] is True
    assert set(row["dft_populations"]) == set(STATES)
    html = page.read_text()
    assert "ΔF corrected to LJ" in html and "population corrected to LJ" in html


@needs_chromium
def test_report_of_the_run_in_the_browser(run, tmp_path):
    """The report of a real run, as Chromium shows it: the oracle named (LJ, never "DFT"),
    the answer's estimator and ESS, and the labels per generation split into selected
    configurations and the oracle-correction samples the store holds."""
    page = write_report(load_report_data(run), tmp_path / "rep")
    view = browser_view(page, tmp_path)
    assert "DFT" not in view["text"] and "corrected to the oracle (LJ, ase:lj)" in view["text"]
    header, *rows = view["sections"]["delta_f"]["tables"][0]
    answer = dict(zip(header, rows[0], strict=True))
    assert answer["generation"] == "0 (answer)" and answer["estimator"] == "IS"
    assert set(answer["ESS / flow samples"].split("\n")) == {
        f"{s}: {fmt_pm(100 * _last(run)['states'][s]['ess_fraction'], sig=2)} %"
        for s in STATES}
    header, *rows = view["sections"]["labels"]["tables"][0]
    gen0 = dict(zip(header, rows[0], strict=True))
    store = list(LabelStore(run / "dataset.h5", create=False).records(status=None))
    assert int(gen0["labelled: oracle-correction samples"]) == sum(
        r.tags.get("purpose") == "reweight" for r in store) > 0
    assert int(gen0["stored"]) == len(store)
    assert not [s for s, v in view["sections"].items() if v["overflows"]]


def test_spectra_draw_their_samples_from_the_campaigns_flows_step(run):
    """``alflow spectra RUN_DIR`` finds each state's Boltzmann samples in the flows step's
    checkpoint (its JSON nests the step's result), evenly spaced through the chain."""
    for s in STATES:
        atoms, logw, gen = spectra_samples(run, s, 3)
        assert gen == 0 and len(atoms) == 3 and logw is None
        assert all(len(a) == 7 and set(a.numbers) == {18} for a in atoms)
