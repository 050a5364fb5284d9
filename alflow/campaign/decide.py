"""The convergence rule of a campaign (pure).

The campaign's answer is ΔF corrected to the oracle when the oracle correction was measured
(else ΔF on the potential). Converged when, for the last ``generations`` generations, that
answer moved by less than ``tolerance_kt`` kT from the generation before, its newest error bar
is at most ``max_error_kt`` kT, the oracle correction lies within its error bar or below the
tolerance (the potential agrees with the oracle), and every state's R-hat is below ``rhat``.
Otherwise stop at ``max_generations`` or once ``max_labels`` labels are stored.

Why the corrected value: with an accurate committee its ΔF still shifts by 0.05–0.09 kT from
one generation's training to the next (lj7, measured against the exact potential), which the
correction removes; the correction criterion separately asks the potential to be right.
"""

from __future__ import annotations

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
    c, ce = last.get("correction_ev"), last.get("correction_error_ev")
    if c is not None and ce is not None and abs(c) > max(ce, cfg.tolerance_kt * kt):
        return (f"oracle correction {c / kt:+.3f} kT exceeds its error bar "
                f"{ce / kt:.3f} kT and the tolerance")
    rh = last.get("rhat")
    if rh is not None and rh >= cfg.rhat:
        return f"R-hat {rh:.4f} not below {cfg.rhat}"
    return None
