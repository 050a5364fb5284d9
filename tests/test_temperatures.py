"""ΔF at other temperatures by reweighting flow samples (alflow.observables.temperatures),
against harmonic states whose free energies are known exactly at every temperature, and its
place in the report (figure, JSON, HTML, CLI option)."""

import json
import math

import numpy as np
import pytest
from ase.units import kB

from alflow.campaign.flow_samples import campaign_samples
from alflow.errors import InputError
from alflow.flows.coordinates import LOG_8PI2
from alflow.observables.oracle_samples import LabelledSamples
from alflow.observables.report import write_report
from alflow.observables.report_data import ReportData, TemperatureDeltaF
from alflow.observables.temperatures import StateSamples, delta_f_vs_temperature

D = 9  # degrees of freedom (three atoms)
T0 = 300.0  # K, the "campaign" temperature the proposals are tuned to


def _harmonic(name, kappa, e0, n, seed, spread=1.3):
    """Samples of a Gaussian proposal q (variance spread·kT0/κ per dof) for the harmonic state
    U = e0 + κ|x|²/2 (κ eV/Å², e0 eV)."""
    rng = np.random.default_rng(seed)
    var = spread * kB * T0 / kappa
    x = rng.normal(0.0, math.sqrt(var), (n, D))
    r2 = (x**2).sum(1)
    log_q = -r2 / (2 * var) - 0.5 * D * math.log(2 * math.pi * var)
    return StateSamples(name, e0 + 0.5 * kappa * r2, log_q, np.ones(n, bool), 1, T0)


def _exact_f(kappa, e0, t):
    """F(T) = e0 − kT[(D/2) ln(2πkT/κ) + ln 8π²] (eV), the estimator's convention, σ = 1."""
    kt = kB * t
    return e0 - kt * (0.5 * D * math.log(2 * math.pi * kt / kappa) + LOG_8PI2)


def test_free_energy_at_other_temperatures_is_exact_for_harmonic_states():
    a = _harmonic("a", 1.0, -3.0, 20000, 1)
    for t in (240.0, 300.0, 375.0):
        fe = a.free_energy(t, n_bootstrap=100)
        assert fe.err_ev < 5e-3
        assert abs(fe.f_ev - _exact_f(1.0, -3.0, t)) < 4 * fe.err_ev + 1e-4, t
    # the temperature dependence is not a constant shift: −T dF/dT = entropy term (D/2)k ln
    f_low, f_high = a.free_energy(240.0).f_ev, a.free_energy(375.0).f_ev
    exact = _exact_f(1.0, -3.0, 375.0) - _exact_f(1.0, -3.0, 240.0)
    assert abs((f_high - f_low) - exact) < 0.1 * abs(exact)


def test_delta_f_vs_temperature_matches_exact_and_flags_poor_overlap():
    a = _harmonic("a", 1.0, -3.0, 20000, 2)
    b = _harmonic("b", 2.5, -2.95, 20000, 3)
    temps = [240.0, 300.0, 375.0, 3000.0]
    pts = delta_f_vs_temperature({"a": a, "b": b}, "a", "b", temps, n_bootstrap=100)
    assert [p.temperature_k for p in pts] == temps
    for p in pts[:3]:
        exact = 0.05 + kB * p.temperature_k * 0.5 * D * math.log(2.5)
        assert not p.poor_overlap, p
        assert p.ess["a"] > 1000 and p.ess["b"] > 1000
        assert abs(p.delta_f_ev - exact) < 4 * p.error_ev + 1e-4, (p, exact)
        pa, pb = p.populations["a"][0], p.populations["b"][0]
        assert pa + pb == pytest.approx(1.0)
        assert pb / pa == pytest.approx(math.exp(-p.delta_f_ev / (kB * p.temperature_k)),
                                        rel=1e-6)
    # 10× the temperature the proposals were made for: the samples miss the hot ensemble
    hot = pts[3]
    assert hot.poor_overlap and min(hot.ess.values()) < 50
    d = hot.to_dict()
    assert json.loads(json.dumps(d))["poor_overlap"] is True


def _labelled(name, kappa, e0, lam, c, m, seed):
    """m exact Boltzmann samples at T0 of the harmonic model U = e0 + κ|x|²/2, labelled by an
    "oracle" E = U + c + λ|x|²/2 (a harmonic state of stiffness κ + λ, minimum e0 + c)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, math.sqrt(kB * T0 / kappa), (m, D))
    r2 = (x**2).sum(1)
    u = e0 + 0.5 * kappa * r2
    return LabelledSamples(name, u, u + c + 0.5 * lam * r2, T0)


def test_oracle_correction_at_other_temperatures_is_exact_for_harmonic_states():
    """F_oracle(T') − F_model(T') = c + kT'(D/2) ln((κ+λ)/κ): the labelled samples (drawn at
    T0) must be reweighted to T' and averaged at T'. Doing either at T0 instead is 14-22σ off
    at 240 and 375 K with these samples, so the test fails for a wrong temperature."""
    lab = _labelled("a", 1.0, -3.0, 0.3, 0.01, 2000, 7)
    for t in (240.0, 300.0, 375.0):
        r = lab.correction(t)
        exact = 0.01 + kB * t * 0.5 * D * math.log(1.3)
        assert r.temperature_k == t and r.reliable and r.ess > 500
        assert abs(r.correction_ev - exact) < 4 * r.error_ev, (t, r, exact)
        at_t0 = 0.01 + kB * T0 * 0.5 * D * math.log(1.3)  # averaged at T0
        unweighted = 0.01 + kB * t * 0.5 * D * math.log(1 + 0.3 * T0 / t)  # not reweighted
        if t != T0:
            assert min(abs(at_t0 - exact), abs(unweighted - exact)) > 10 * r.error_ev
    # an oracle shifted by a constant: the correction is that constant at every T', no error
    shifted = LabelledSamples("a", lab.model_ev, lab.model_ev + 0.02, T0)
    for t in (240.0, 375.0):
        r = shifted.correction(t)
        assert r.correction_ev == pytest.approx(0.02, abs=1e-12) and r.error_ev < 1e-12
    with pytest.raises(InputError, match="2 model and 3 oracle"):
        LabelledSamples("a", [1.0, 2.0], [1.0, 2.0, 3.0], T0)
    with pytest.raises(InputError, match="at least 2"):
        LabelledSamples("a", [1.0], [1.0], T0).correction(T0)


def test_dft_corrected_delta_f_vs_temperature_matches_exact_and_flags_few_labels():
    a = _harmonic("a", 1.0, -3.0, 20000, 2)
    b = _harmonic("b", 2.5, -2.95, 20000, 3)
    lab = {"a": _labelled("a", 1.0, -3.0, 0.3, 0.01, 2000, 8),
           "b": _labelled("b", 2.5, -2.95, 1.5, -0.02, 2000, 9)}
    temps = [240.0, 300.0, 375.0]
    pts = delta_f_vs_temperature({"a": a, "b": b}, "a", "b", temps, n_bootstrap=100,
                                 labelled=lab)
    for p in pts:
        kt = kB * p.temperature_k
        exact = (-2.95 - 0.02) - (-3.0 + 0.01) + kt * 0.5 * D * math.log(4.0 / 1.3)
        assert p.dft_poor_overlap is False and min(p.dft_ess.values()) > 200
        assert abs(p.dft_delta_f_ev - exact) < 4 * p.dft_error_ev, (p, exact)
        assert p.dft_delta_f_ev == pytest.approx(p.delta_f_ev + p.correction_ev)
        pa, pb = p.dft_populations["a"][0], p.dft_populations["b"][0]
        assert pb / pa == pytest.approx(math.exp(-p.dft_delta_f_ev / kt), rel=1e-6)
        d = json.loads(json.dumps(p.to_dict()))
        assert d["dft_delta_f_ev"] == pytest.approx(p.dft_delta_f_ev)
    # the correction moves ΔF by a temperature-dependent amount, not a constant
    shifts = [p.correction_ev for p in pts]
    assert shifts[2] - shifts[0] > 10 * pts[0].correction_error_ev
    # 5 labels of a stiff oracle: the exponential average rests on one or two samples
    few = {"a": _labelled("a", 1.0, -3.0, 3.0, 0.0, 5, 10), "b": lab["b"]}
    p = delta_f_vs_temperature({"a": a, "b": b}, "a", "b", [300.0], labelled=few)[0]
    assert not p.poor_overlap and p.dft_poor_overlap and p.dft_ess["a"] < 10
    # no labels of one state: no corrected value, flag left undecided
    p = delta_f_vs_temperature({"a": a, "b": b}, "a", "b", [300.0],
                               labelled={"b": lab["b"]})[0]
    assert p.dft_delta_f_ev is None and p.dft_poor_overlap is None and not p.dft_populations


def test_samples_outside_the_state_carry_no_weight_and_round_trip(tmp_path):
    a = _harmonic("a", 1.0, -3.0, 4000, 4)
    outside = np.zeros(4000, bool)
    outside[::2] = True  # half the samples declared outside: F rises by kT ln 2
    half = StateSamples("a", np.where(outside, -1e3, a.energy_ev), a.log_q, ~outside, 1, T0)
    f_all, f_half = a.free_energy(T0).f_ev, half.free_energy(T0).f_ev
    assert abs((f_half - f_all) - kB * T0 * math.log(2)) < 0.01
    path = half.save(tmp_path / "x.npz")
    back = StateSamples.load(path)
    assert back.state == "a" and back.symmetry_number == 1
    np.testing.assert_array_equal(back.inside, half.inside)
    assert back.free_energy(T0).f_ev == f_half
    with pytest.raises(InputError, match="temperature"):
        half.free_energy(0.0)
    # with the estimate's own weights at T0 (as the flows step stores them, e.g. annealed
    # ones): the same F at every T', and exactly the weights' F at T0; round trip
    lw = np.where(~outside, -a.energy_ev / (kB * T0) - a.log_q, -np.inf)
    weighted = StateSamples("a", half.energy_ev, half.log_q, half.inside, 1, T0, 0, lw)
    for t in (240.0, 300.0, 375.0):
        assert weighted.free_energy(t).f_ev == pytest.approx(half.free_energy(t).f_ev,
                                                             abs=1e-12)
    back = StateSamples.load(weighted.save(tmp_path / "w.npz"))
    np.testing.assert_array_equal(back.log_w, lw)
    shift = float(np.max(lw))
    exact = -kB * T0 * (math.log(np.mean(np.exp(lw - shift))) + shift + LOG_8PI2)
    assert back.free_energy(T0).f_ev == pytest.approx(exact, rel=1e-12)
    np.savez(tmp_path / "bad.npz", energy_ev=np.zeros(3))
    with pytest.raises(InputError, match="missing field"):
        StateSamples.load(tmp_path / "bad.npz")
    with pytest.raises(InputError, match="campaign.yaml"):
        campaign_samples(tmp_path)


def test_report_shows_delta_f_vs_temperature(tmp_path):
    a = _harmonic("a", 1.0, -3.0, 5000, 5)
    b = _harmonic("b", 2.5, -2.95, 5000, 6)
    pts = delta_f_vs_temperature({"a": a, "b": b}, "a", "b", [270.0, 300.0, 3000.0],
                                 n_bootstrap=50)
    data = ReportData(temperature_k=T0, states=["a", "b"], delta_f_temperature=[
        TemperatureDeltaF(generation=2, **p.to_dict()) for p in pts])
    page = write_report(data, tmp_path / "rep")
    js = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert js["figures"]["delta_f_temperature"] == "figures/delta_f_temperature.png"
    rows = js["summary"]["delta_f_temperature"]
    assert [r["poor_overlap"] for r in rows] == [False, False, True]
    assert rows[1]["delta_f_ev"] == pytest.approx(pts[1].delta_f_ev)
    html = page.read_text()
    assert "Free-energy difference vs temperature" in html and "POOR" in html
    assert (tmp_path / "rep" / "figures" / "delta_f_temperature.png").stat().st_size > 5000


def test_cli_temperatures_option_rejects_bad_input():
    from alflow.cli.report import _temperatures

    assert _temperatures("250, 300,350") == [250.0, 300.0, 350.0]
    for bad in ("250;300", "-5,300", ""):
        with pytest.raises(InputError, match="--temperatures"):
            _temperatures(bad)


def test_seed_recipe_keeps_the_campaigns_seeds():
    """alflow.seeds is the one recipe of the campaign's seeds; a run directory's draws are
    redrawn from it (campaign_samples), so its values must stay those the campaign used."""
    from alflow.seeds import flow_estimate_seed, flow_stage_seed, step_seed

    assert step_seed(3, "bootstrap") == 3
    assert step_seed(3, "select", 2) == step_seed(3, "train", 2) == 5
    assert step_seed(3, "explore", 2, 1) == 3021
    flows = step_seed(3, "flows", 2, 1)
    assert flows == 3026
    assert [flow_stage_seed(flows, s) for s in ("train", "mcmc", "retrain", "polish",
                                                "estimate", "bar")] \
        == [3026, 3026, 3027, 3028, 3033, 3037]
    # the estimate's draw: after MCMC its own stage; a flow trained on MD alone, the step's
    assert flow_estimate_seed(flows, mcmc=True) == 3033
    assert flow_estimate_seed(flows, mcmc=False) == 3026
    with pytest.raises(ValueError, match="unknown step"):
        step_seed(3, "label", 2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown flow stage"):
        flow_stage_seed(flows, "anneal")  # type: ignore[arg-type]
