"""The convergence rule of a campaign (pure).

Converged when, for the last ``generations`` generations, ΔF moved by less than
``tolerance_kt`` kT from the generation before, the newest error bar is at most
``max_error_kt`` kT, the oracle correction of ΔF lies within its error bar or below the
tolerance (the potential agrees with the oracle), and every state's R-hat is below ``rhat``.
Otherwise stop at ``max_generations`` or once ``max_labels`` labels are stored.
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
    """``history``: one dict per generation with ``value_ev``, ``error_ev``,
    ``correction_ev``, ``correction_error_ev`` (None when not measured) and ``rhat``."""
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


def _not_converged(history: list[dict[str, Any]], cfg: ConvergenceConfig,
                   kt: float) -> str | None:
    if len(history) < cfg.generations + 1:
        return f"needs {cfg.generations + 1} estimates, has {len(history)}"
    last = history[-1]
    if last.get("value_ev") is None:
        return "no ΔF in the last generation"
    if last["error_ev"] > cfg.max_error_kt * kt:
        return (f"error bar {last['error_ev'] / kt:.3f} kT above max_error_kt "
                f"{cfg.max_error_kt:g}")
    for a, b in zip(history[-cfg.generations - 1:-1], history[-cfg.generations:], strict=True):
        if a.get("value_ev") is None or b.get("value_ev") is None:
            return "a recent generation has no ΔF"
        if abs(b["value_ev"] - a["value_ev"]) > cfg.tolerance_kt * kt:
            return (f"ΔF moved by {abs(b['value_ev'] - a['value_ev']) / kt:.3f} kT between "
                    f"generations {a['generation']} and {b['generation']}")
    c, ce = last.get("correction_ev"), last.get("correction_error_ev")
    if c is not None and ce is not None and abs(c) > max(ce, cfg.tolerance_kt * kt):
        return (f"oracle correction {c / kt:+.3f} kT exceeds its error bar "
                f"{ce / kt:.3f} kT and the tolerance")
    rh = last.get("rhat")
    if rh is not None and rh >= cfg.rhat:
        return f"R-hat {rh:.4f} not below {cfg.rhat}"
    return None
