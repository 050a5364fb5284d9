"""The convergence rule of a campaign (pure).

The campaign's answer is ΔF corrected to the oracle when the oracle correction was measured
(else ΔF on the potential), with its full error: the states' free energies on the potential
(BAR, error bootstrapped over whole MCMC walkers) and each state's correction (the
bias-corrected exponential average, jackknife error widened for its few labels,
alflow.estimate.reweight) in quadrature. Converged when, for the last ``generations``
generations, that answer moved by less than ``tolerance_kt`` kT from the generation before
and by less than ``max_move_sigma`` combined standard errors (error bars that hold), its
newest error bar is at most ``max_error_kt`` kT, the oracle correction lies within its error
bar or below the tolerance (the potential agrees with the oracle), every state's correction
is trustworthy (enough effective labels, and an estimated finite-sample bias at most
``max_correction_bias`` of its error: else the exponential average needs more labels), and
every state's R-hat is below ``rhat``. Otherwise stop at ``max_generations`` or once
``max_labels`` labels are stored.

Why the corrected value: with an accurate committee its ΔF still shifts by 0.05–0.09 kT from
one generation's training to the next (lj7, measured against the exact potential), which the
correction removes; the correction criterion separately asks the potential to be right.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from alflow.campaign.config import ConvergenceConfig


@dataclass
class Decision:
    stop: bool
    converged: bool
    reason: str


def decide(history: list[dict[str, Any]], cfg: ConvergenceConfig, kt_ev: float,
           labels_total: int) -> Decision:
    """``history``: one dict per generation with ``generation``, ``value_ev``, ``error_ev``,
    ``correction_ev``, ``correction_error_ev``, ``corrected_ev``, ``corrected_error_ev``
    (None when not measured) and ``rhat``."""
    if history:
        last = history[-1]
        why = _not_converged(history, cfg, kt_ev)
        if why is None:
            return Decision(True, True, f"converged at generation {last['generation']}: ΔF "
                            f"stable within {cfg.tolerance_kt:g} kT for {cfg.generations} "
                            "generation(s), oracle correction within its error bar")
    else:
        why = "no estimate yet"
    if len(history) >= cfg.max_generations:
        return Decision(True, False, f"max_generations ({cfg.max_generations}) reached; "
                        f"not converged: {why}")
    if labels_total >= cfg.max_labels:
        return Decision(True, False, f"max_labels ({cfg.max_labels}) reached; "
                        f"not converged: {why}")
    return Decision(False, False, why)


def answer(entry: dict[str, Any]) -> tuple[float | None, float | None]:
    """The generation's ΔF and error (eV): corrected to the oracle when measured."""
    if entry.get("corrected_ev") is not None and entry.get("corrected_error_ev") is not None:
        return entry["corrected_ev"], entry["corrected_error_ev"]
    return entry.get("value_ev"), entry.get("error_ev")


def _not_converged(history: list[dict[str, Any]], cfg: ConvergenceConfig,
                   kt: float) -> str | None:
    if len(history) < cfg.generations + 1:
        return f"needs {cfg.generations + 1} estimates, has {len(history)}"
    last = history[-1]
    value, error = answer(last)
    if value is None or error is None:
        return "no ΔF in the last generation"
    if error > cfg.max_error_kt * kt:
        return f"error bar {error / kt:.3f} kT above max_error_kt {cfg.max_error_kt:g}"
    for a, b in zip(history[-cfg.generations - 1:-1], history[-cfg.generations:], strict=True):
        va, vb = answer(a)[0], answer(b)[0]
        if va is None or vb is None:
            return "a recent generation has no ΔF"
        if abs(vb - va) > cfg.tolerance_kt * kt:
            return (f"ΔF moved by {abs(vb - va) / kt:.3f} kT between generations "
                    f"{a['generation']} and {b['generation']}")
        ea, eb = answer(a)[1], answer(b)[1]
        sig = cfg.max_move_sigma
        if sig is not None and ea is not None and eb is not None \
                and abs(vb - va) > sig * math.hypot(ea, eb):
            return (f"ΔF moved by {abs(vb - va) / kt:.3f} kT between generations "
                    f"{a['generation']} and {b['generation']}, more than {sig:g} combined "
                    f"standard errors ({math.hypot(ea, eb) / kt:.3f} kT): the error bars do "
                    "not hold")
    c, ce = last.get("correction_ev"), last.get("correction_error_ev")
    if c is not None and ce is not None and abs(c) > max(ce, cfg.tolerance_kt * kt):
        return (f"oracle correction {c / kt:+.3f} kT exceeds its error bar "
                f"{ce / kt:.3f} kT and the tolerance")
    frac = cfg.max_correction_bias
    for name, st in sorted((last.get("states") or {}).items()):
        r = (st or {}).get("correction")
        if not r or frac is None:
            continue
        if not r.get("reliable", True):
            return (f"oracle correction of state {name}: ESS {r.get('ess', 0):.1f} of "
                    f"{r.get('n')} labels, too little overlap to trust it")
        bias, err = abs(r.get("bias_ev") or 0.0), r.get("error_ev") or 0.0
        if bias > frac * err:
            return (f"oracle correction of state {name}: the exponential average's finite-"
                    f"sample bias ({bias / kt:.3f} kT) is more than {frac:g} of its error "
                    f"({err / kt:.3f} kT); it needs more labels or a closer committee")
    rh = last.get("rhat")
    if rh is not None and rh >= cfg.rhat:
        return f"R-hat {rh:.4f} not below {cfg.rhat}"
    return None
