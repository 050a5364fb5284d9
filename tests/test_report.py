"""The report renders from hand-built data; the page opens in headless Chromium."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from alflow.observables import spectra as sp
from alflow.observables.report import write_report
from alflow.observables.report_data import (
    DeltaFPoint,
    FlowDiagnostics,
    FreeEnergySurface,
    LabelCounts,
    Parity,
    Provenance,
    ReportData,
    ResourceUsage,
    StateSpectrum,
    TemperatureDeltaF,
    populations,
)
from alflow.observables.spectra import KB_EV_PER_K


def full_report_data() -> ReportData:
    rng = np.random.default_rng(0)
    states = ["planar", "pyramid"]
    dfs = [DeltaFPoint(generation=g, state="pyramid", reference="planar",
                       delta_f_ev=0.25 - 0.04 / (g + 1), error_ev=0.05 / (g + 1),
                       dft_delta_f_ev=0.23 + 0.01 / (g + 1), dft_error_ev=0.03 / (g + 1),
                       method="IS", ess={"planar": 300 + 50 * g, "pyramid": 250 + 40 * g},
                       overlap_warning=g == 0, temperature_k=300.0) for g in range(4)]
    labels = [LabelCounts(generation=g, selected=40 - 5 * g, labelled=38 - 5 * g, failed=2)
              for g in range(4)]
    parity = []
    for s in states:
        e = rng.normal(-100.0, 0.3, 60)
        f = rng.normal(0.0, 0.8, 60 * 18)
        parity.append(Parity(state=s, generation=3, n_atoms=6, energy_dft_ev=e.tolist(),
                             energy_model_ev=(e + rng.normal(0, 0.01, 60)).tolist(),
                             force_dft=f.tolist(),
                             force_model=(f + rng.normal(0, 0.05, f.size)).tolist()))
    x = np.linspace(2.0, 5.0, 40)
    y = np.linspace(2.3, 2.9, 30)
    xx, yy = np.meshgrid(x, y, indexing="ij")
    fes2 = 0.3 * ((xx - 3.0) ** 2 - 0.8) ** 2 + 2.0 * (yy - 2.6) ** 2
    fes = [FreeEnergySurface(label="metadynamics, all states", cv_names=["coordination", "Rg (Å)"],
                             axes=[x.tolist(), y.tolist()], free_energy_ev=fes2.tolist(),
                             temperature_k=300.0),
           FreeEnergySurface(label="coordination only", cv_names=["coordination"],
                             axes=[x.tolist()], free_energy_ev=fes2.min(axis=1).tolist())]
    flow = [FlowDiagnostics(generation=g, state=s, ess=200 + 60 * g + 30 * k,
                            acceptance=0.3 + 0.1 * g + 0.05 * k, rhat=1.2 - 0.06 * g)
            for g in range(4) for k, s in enumerate(states)]
    spectra = []
    for k, s in enumerate(states):
        e = [np.sort(rng.uniform(2.0 + k, 5.0 + k, 20)) for _ in range(8)]
        f = [rng.uniform(0, 0.3, 20) for _ in range(8)]
        avg = sp.average_spectrum(e, f, grid_ev=sp.energy_grid(1.0, 7.0, 0.01), n_boot=50)
        spectra.append(StateSpectrum(state=s, method="tddft:pbe/def2-svp", spectrum=avg))
    prov = Provenance(run_dir="/runs/ag6", created="2026-11-25T02:00:00Z",
                      alflow_version="0.1.0", versions={"pyscf": "2.14.0", "torch": "2.13.0"},
                      dft_method="pyscf:pbe/def2-svp", config={"system": "ag6", "temperature": 300},
                      resources=[ResourceUsage(resource_class="dft", tasks=150, wall_hours=1.5,
                                               core_hours=3.0),
                                 ResourceUsage(resource_class="gpu", tasks=8, wall_hours=0.4,
                                               core_hours=0.4)],
                      site="local-threads")
    dft_t = [TemperatureDeltaF(temperature_k=t, state="pyramid", reference="planar",
                               generation=3, delta_f_ev=0.2 + 2e-4 * (t - 300),
                               error_ev=0.01 + 1e-4 * abs(t - 300),
                               ess={"planar": 400 - abs(t - 300), "pyramid": 380 - abs(t - 300)},
                               poor_overlap=abs(t - 300) > 60) for t in (240, 270, 300, 330, 375)]
    return ReportData(title="Ag6 campaign", system="Ag6", temperature_k=300.0, states=states,
                      status="converged", generations=4, delta_f=dfs, delta_f_temperature=dft_t,
                      labels=labels,
                      parity=parity, fes=fes, flow=flow, spectra=spectra, provenance=prov,
                      warnings=["generation 0: poor overlap between flow and target (ESS < 1%)"])


def _img_sources(page: Path) -> list[str]:
    return re.findall(r"<img src='([^']+)'", page.read_text())


def test_full_report_references_existing_pngs(tmp_path):
    page = write_report(full_report_data(), tmp_path / "report")
    srcs = _img_sources(page)
    assert len(srcs) == 7
    for s in srcs:
        png = page.parent / s
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert imread(png).std() > 0.01  # something is drawn
    text = page.read_text()
    assert "not computed" not in text
    assert "pyramid − planar" in text and "poor overlap" in text
    nums = json.loads((page.parent / "report.json").read_text())["summary"]
    pops = nums["populations"]
    assert sum(v["population"] for v in pops.values()) == pytest.approx(1.0)
    assert pops["planar"]["population"] > pops["pyramid"]["population"]
    assert nums["model_errors"]["planar@3"]["force_mae_mev_per_a"] == pytest.approx(
        0.05 * np.sqrt(2 / np.pi) * 1e3, rel=0.1)


def test_empty_run_renders_not_computed_everywhere(tmp_path):
    page = write_report(ReportData(title="empty"), tmp_path)
    assert _img_sources(page) == []
    assert page.read_text().count("not computed") == 8  # seven figures + provenance
    assert not list((tmp_path / "figures").glob("*.png"))


def test_populations_of_two_states_match_boltzmann():
    kt = KB_EV_PER_K * 300.0
    p = populations({"a": (0.0, 0.0), "b": (0.05, 0.0)}, 300.0)
    assert p["b"][0] == pytest.approx(1 / (1 + np.exp(0.05 / kt)))
    assert p["a"][0] + p["b"][0] == pytest.approx(1.0)
    assert p["b"][1] == pytest.approx(0.0, abs=1e-12)
    p_err = populations({"a": (0.0, 0.0), "b": (0.05, 0.02)}, 300.0)
    assert 0.0 < p_err["b"][1] < 0.2


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed "
                    "(apt-get install -y chromium)")
def test_report_page_in_headless_chromium(tmp_path):
    page = write_report(full_report_data(), tmp_path / "report")
    shot = tmp_path / "shot.png"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--no-first-run", "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}",
           "--window-size=1100,2400", f"--screenshot={shot}", page.as_uri()]
    subprocess.run(cmd, check=True, capture_output=True, timeout=90)
    img = imread(shot)[..., :3]
    assert img.shape[0] >= 2000 and img.shape[1] >= 1000
    # non-blank: many non-background pixels, and the figures' colours are present
    non_white = (img.min(axis=2) < 0.9).mean()
    assert non_white > 0.05
    assert img.std() > 0.05
