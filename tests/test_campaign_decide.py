"""The convergence rule (alflow.campaign.decide) on the histories of two measured lj7
quickstart runs (values in kT, kT = 1 here) and on the cases each criterion guards."""

from alflow.campaign.config import ConvergenceConfig
from alflow.campaign.decide import decide

RULE = ConvergenceConfig(tolerance_kt=0.1, max_error_kt=0.1, generations=1, rhat=1.01,
                         max_generations=5, max_labels=400)


def _gen(g, value, error, corrected=None, corrected_error=None, rhat=1.005):
    c = None if corrected is None else corrected - value
    ce = None if corrected_error is None else (corrected_error**2 - error**2) ** 0.5
    return {"generation": g, "value_ev": value, "error_ev": error, "correction_ev": c,
            "correction_error_ev": ce, "corrected_ev": corrected,
            "corrected_error_ev": corrected_error, "rhat": rhat}


def test_seed_one_quickstart_converges_at_generation_two_by_its_corrected_answer():
    """Seed 1: the committee's ΔF moved 0.118 kT between generations 1 and 2 (its error
    against the exact potential went from +0.063 to -0.023 kT), the corrected answer 0.052."""
    h = [_gen(0, 1.979, 0.027, 2.003, 0.080, 1.004),
         _gen(1, 2.022, 0.027, 1.952, 0.048, 1.0103)]
    d = decide(h, RULE, 1.0, 138)
    assert not d.stop and "R-hat 1.0103" in d.reason
    h.append(_gen(2, 1.905, 0.026, 1.900, 0.051, 1.008))
    d = decide(h, RULE, 1.0, 182)
    assert d.stop and d.converged, d.reason


def test_each_criterion_blocks_convergence():
    base = [_gen(0, 1.80, 0.03, 1.85, 0.05), _gen(1, 1.82, 0.03, 1.87, 0.05)]
    assert decide(base, RULE, 1.0, 100).converged
    moved = [base[0], _gen(1, 1.82, 0.03, 2.00, 0.05)]
    assert "moved by 0.150" in decide(moved, RULE, 1.0, 100).reason
    noisy = [base[0], _gen(1, 1.82, 0.03, 1.87, 0.15)]
    assert "error bar" in decide(noisy, RULE, 1.0, 100).reason
    wrong = [_gen(0, 1.60, 0.03, 1.85, 0.05), _gen(1, 1.62, 0.03, 1.87, 0.05)]
    assert "oracle correction +0.250" in decide(wrong, RULE, 1.0, 100).reason
    mixing = [base[0], {**base[1], "rhat": 1.02}]
    assert "R-hat" in decide(mixing, RULE, 1.0, 100).reason
    assert "needs 2" in decide(base[:1], RULE, 1.0, 100).reason


def test_without_oracle_correction_the_potential_value_is_judged_and_caps_stop():
    h = [_gen(0, 1.80, 0.03), _gen(1, 1.95, 0.03)]
    d = decide(h, RULE, 1.0, 100)
    assert not d.stop and "moved by 0.150" in d.reason
    h = [_gen(g, 1.8 + 0.2 * g, 0.03) for g in range(5)]
    d = decide(h, RULE, 1.0, 100)
    assert d.stop and not d.converged and "max_generations" in d.reason
    d = decide(h[:2], RULE, 1.0, 400)
    assert d.stop and not d.converged and "max_labels" in d.reason
