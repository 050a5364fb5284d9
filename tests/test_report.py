"""The report renders from hand-built data; the page opens in headless Chromium."""

import html
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
    assert "ΔF = F(pyramid) − F(planar)" in text and "poor overlap" in text
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
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not "
                                    "installed (apt-get install -y chromium)")

# Run in the page by Chromium: what it renders, as JSON in a <pre id='probe'>
_PROBE = """<script>
window.addEventListener('load', () => {
const sections = {};
for (const s of document.querySelectorAll('section')) {
  sections[s.id || s.querySelector('h2').innerText] = {
    text: s.innerText, overflows: s.scrollWidth > s.clientWidth,
    tables: [...s.querySelectorAll('table')].map(t => [...t.rows].map(
      r => [...r.cells].map(c => c.innerText)))};
}
const out = {text: document.body.innerText, sections: sections,
             images: [...document.images].map(i => [i.getAttribute('src'),
                                                    i.complete && i.naturalWidth > 0])};
const pre = document.createElement('pre');
pre.id = 'probe';
pre.textContent = JSON.stringify(out);
document.body.appendChild(pre);
});
</script>"""


def browser_view(page: Path, tmp: Path, width: int = 1280) -> dict:
    """What headless Chromium shows of a report page at ``width`` px: the page's text
    (``innerText``), per section its text, whether its content overflows horizontally and
    its tables' cells, and each image with whether it loaded."""
    probe = page.with_name("probe.html")
    probe.write_text(page.read_text().replace("</body>", _PROBE + "</body>"))
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--no-first-run", f"--user-data-dir={tmp / 'profile'}",
           f"--window-size={width},1000", "--virtual-time-budget=5000", "--dump-dom",
           probe.as_uri()]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=90).stdout
    m = re.search(r'<pre id="probe">(.*?)</pre>', out, re.S)
    assert m, "the page did not run its probe"
    return json.loads(html.unescape(m.group(1)))


@needs_chromium
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


def lj7_report_data() -> ReportData:
    """The lj7 quickstart's numbers as its run directory gives them (eV): a Lennard-Jones
    oracle, BAR estimates, 12 selected and 32 oracle-correction labels per generation."""
    kt = KB_EV_PER_K * 18.0
    per_state = {"pbp": 0.031, "coh": 0.0042}
    dfs = [DeltaFPoint(generation=g, state="coh", reference="pbp", delta_f_ev=v * kt,
                       error_ev=e * kt, correction_ev=c * kt, correction_error_ev=ce * kt,
                       dft_delta_f_ev=d * kt, dft_error_ev=de * kt, temperature_k=18.0,
                       method="BAR", ess_fraction=per_state,
                       rhat=r, final=g == 1)
           for g, v, e, c, ce, d, de, r in ((0, 1.730, 0.033, 0.138, 0.084, 1.867, 0.090, 1.009),
                                            (1, 1.811, 0.032, 0.083, 0.020, 1.894, 0.038, 1.006))]
    labels = [LabelCounts(generation=0, selected=62, labelled=94, correction=32),
              LabelCounts(generation=1, selected=12, labelled=44, correction=32)]
    prov = Provenance(run_dir="/runs/lj7", dft_method="ase:lj",
                      config={"estimate": {"reweight_samples": 16},
                              "convergence": {"rhat": 1.01}})
    return ReportData(title="alflow campaign: lj7", temperature_k=18.0, states=["pbp", "coh"],
                      oracle="ase:lj", status="finished (converged)", generations=2,
                      delta_f=dfs, labels=labels, provenance=prov)


@needs_chromium
def test_lj7_report_reads_in_the_browser(tmp_path):
    """Every number of the ΔF section keeps its significant digits (kT and meV), the answer's
    estimator and ESS are shown, the oracle is named (no "DFT" for a Lennard-Jones oracle),
    the labels beyond the selected ones are explained, and nothing overflows the page."""
    data = lj7_report_data()
    page = write_report(data, tmp_path / "report")
    view = browser_view(page, tmp_path)
    text = view["text"]
    kt_mev = 1e3 * KB_EV_PER_K * 18.0
    assert "DFT" not in text
    assert not re.search(r"± 0(\.0+)?(?![.\d])", text)  # no error rounded away to zero
    df = view["sections"]["delta_f"]
    answer = next(line for line in df["text"].split("\n") if line.startswith("ΔF = F("))
    assert "ΔF = F(coh) − F(pbp) at 18 K" in answer
    assert f"1.894 ± 0.038 kT = {1.894 * kt_mev:.3f} ± {0.038 * kt_mev:.3f} meV" in answer
    assert "corrected to the oracle (LJ, ase:lj)" in answer and "generation 1" in answer
    header, *rows = df["tables"][0]
    assert header[:4] == ["generation", "ΔF on the committee", "correction to LJ",
                          "ΔF corrected to LJ"]
    final = dict(zip(header, rows[1], strict=True))
    assert final["generation"] == "1 (answer)"
    assert final["ΔF corrected to LJ"].split("\n") == [
        "1.894 ± 0.038 kT", f"{1.894 * kt_mev:.3f} ± {0.038 * kt_mev:.3f} meV"]
    assert final["correction to LJ"].startswith("0.083 ± 0.020 kT")
    assert final["estimator"] == "BAR"
    assert final["ESS / flow samples"].split("\n") == ["pbp: 3.1 %", "coh: 0.42 %"]
    assert final["R-hat"] == "1.006"
    assert "convergence rule asks for less than 1.01" in df["text"]
    labels = view["sections"]["labels"]
    assert labels["text"].startswith("Labels by the oracle (LJ) per generation")
    header, *rows = labels["tables"][0]
    assert dict(zip(header, rows[1], strict=True)) == {
        "generation": "1", "selected": "12", "labelled: selected": "12",
        "labelled: oracle-correction samples": "32", "failed": "0", "stored": "44"}
    assert "16 per state asked" in labels["text"]
    assert not [s for s, v in view["sections"].items() if v["overflows"]]
    assert view["images"] and all(ok for _, ok in view["images"])


def test_plus_minus_keeps_the_errors_significant_digits():
    from alflow.observables.report import duration_text, energy_text, fmt_pm

    assert fmt_pm(0.00294, 0.000059) == "0.002940 ± 0.000059"
    assert fmt_pm(1.8943, 0.0384, "kT") == "1.894 ± 0.038 kT"
    assert fmt_pm(3.5, 6.6) == "3.5 ± 6.6" and fmt_pm(5.2, 10.3) == "5 ± 10"
    assert fmt_pm(-0.012, 13.1) == "0 ± 13" and fmt_pm(-0.4, 0.1) == "-0.40 ± 0.10"
    assert fmt_pm(2.0, None) == "2" and fmt_pm(None) == "—" and fmt_pm(float("nan")) == "—"
    kt = KB_EV_PER_K * 18.0
    assert energy_text(1.894 * kt, 0.038 * kt, kt) == (
        f"1.894 ± 0.038 kT\n{1.894 * kt * 1e3:.3f} ± {0.038 * kt * 1e3:.3f} meV")
    assert energy_text(0.003, 0.0004, None) == "3.00 ± 0.40 meV"
    assert [duration_text(s) for s in (0.034, 16.4, 185, 7620)] == [
        "0.034 s", "16 s", "3 min 05 s", "2 h 07 min"]


def test_science_modules_import_no_campaign_cli_apps_or_parsl():
    """Layers point one way: observables, flows and the estimators import neither the campaign,
    the CLI, the Parsl apps nor Parsl, not even inside a function (their source is read)."""
    import ast

    import alflow

    root = Path(alflow.__file__).parent
    files = [*(root / "observables").glob("*.py"), *(root / "flows").glob("*.py"),
             root / "estimate.py", root / "psis.py", root / "seeds.py", root / "runlayout.py"]
    bad = []
    for f in files:
        for node in ast.walk(ast.parse(f.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            bad += [f"{f.name}: {n}" for n in names
                    if n.split(".")[0] in ("apps", "parsl")
                    or n.startswith(("alflow.campaign", "alflow.cli"))]
    assert bad == []
