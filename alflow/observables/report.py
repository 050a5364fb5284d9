"""The campaign report: PNG figures (matplotlib, no pyplot state) and one HTML page + JSON.

Figure functions are pure: :class:`ReportData` in, ``matplotlib.figure.Figure`` (or None
when there is nothing to show) out. :func:`write_report` saves them and writes
``index.html`` and ``report.json`` into an output directory; a missing section is rendered
as "not computed", never an error.
"""

from __future__ import annotations

import html
import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from alflow.observables.report_data import (
    LOW_ESS_FRACTION,
    DeltaFPoint,
    ReportData,
    final_delta_f,
    oracle_name,
    populations,
)
from alflow.observables.spectra import KB_EV_PER_K

log = logging.getLogger(__name__)

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf"]
DPI = 110


def _state_color(states: list[str], state: str) -> str:
    return COLORS[states.index(state) % len(COLORS)] if state in states else "#444444"


def _states(data: ReportData, present: list[str]) -> list[str]:
    extra = [s for s in present if s not in data.states]
    return list(data.states) + sorted(set(extra))


def _kt_ev(data: ReportData) -> float | None:
    return KB_EV_PER_K * data.temperature_k if data.temperature_k else None


def _energy_axis(data: ReportData) -> tuple[float, str]:
    """(eV per unit, unit) of ΔF axes: kT at the campaign temperature when known, else meV."""
    kt = _kt_ev(data)
    return (kt, "kT") if kt else (1e-3, "meV")


def fig_delta_f(data: ReportData) -> Figure | None:
    """ΔF vs generation, on the committee (the flows' estimate) and corrected to the oracle,
    with 1σ error bars, in kT (meV without a temperature)."""
    pts = [p for p in data.delta_f if p.delta_f_ev is not None or p.dft_delta_f_ev is not None]
    if not pts:
        return None
    scale, unit = _energy_axis(data)
    oracle = oracle_name(data.oracle)
    fig = Figure(figsize=(6.4, 3.8), layout="constrained")
    ax = fig.add_subplot()
    states = _states(data, [p.state for p in pts])
    warn_label = "poor overlap"
    for state in states:
        sp = sorted((p for p in pts if p.state == state), key=lambda p: p.generation)
        if not sp:
            continue
        c = _state_color(states, state)
        ref = sp[0].reference
        g = [p.generation for p in sp if p.delta_f_ev is not None]
        if g:
            ax.errorbar(g, [p.delta_f_ev / scale for p in sp if p.delta_f_ev is not None],
                        yerr=[(p.error_ev or 0) / scale for p in sp if p.delta_f_ev is not None],
                        color=c, marker="o", capsize=3,
                        label=f"{state} − {ref} on the committee")
        gd = [p for p in sp if p.dft_delta_f_ev is not None]
        if gd:
            ax.errorbar([p.generation + 0.08 for p in gd],
                        [p.dft_delta_f_ev / scale for p in gd],
                        yerr=[(p.dft_error_ev or 0) / scale for p in gd], color=c, marker="s",
                        mfc="white", ls="--", capsize=3,
                        label=f"{state} − {ref} corrected to {oracle}")
        warn = [p for p in sp if p.overlap_warning and p.delta_f_ev is not None]
        if warn:
            ax.scatter([p.generation for p in warn], [p.delta_f_ev / scale for p in warn], s=160,
                       facecolors="none", edgecolors="orange", linewidths=1.5, label=warn_label)
            warn_label = None
    ax.axhline(0.0, color="0.7", lw=0.8)
    ax.set_xlabel("generation")
    ax.set_ylabel(f"ΔF ({unit})")
    t = f" at {data.temperature_k:g} K" if data.temperature_k else ""
    ax.set_title(f"Free-energy difference{t}")
    gens = sorted({p.generation for p in pts})
    ax.set_xticks(gens)
    if len(gens) == 1:
        ax.set_xlim(gens[0] - 1, gens[0] + 1)
    ax.legend(fontsize=8)
    return fig


def _temperature_series(ax, t: list[float], v: list[float], err: list[float],
                        poor: list[bool], color: str, marker: str, ls: str, label: str,
                        warn_label: str | None) -> str | None:
    """One ΔF(T) series: line, 1σ bars, open and circled where the overlap is poor; returns
    the poor-overlap legend label if it is still unused."""
    ax.plot(t, v, color=color, lw=0.8, ls=ls, alpha=0.7, marker=marker, ms=5, label=label)
    for bad in (False, True):
        i = [k for k, p in enumerate(poor) if p == bad]
        if i:
            ax.errorbar([t[k] for k in i], [v[k] for k in i], yerr=[err[k] for k in i],
                        color=color, marker=marker, ls="none", mfc="white" if bad else color,
                        capsize=3)
    i = [k for k, p in enumerate(poor) if p]
    if i:
        ax.scatter([t[k] for k in i], [v[k] for k in i], s=160, facecolors="none",
                   edgecolors="orange", linewidths=1.5, label=warn_label)
        return None
    return warn_label


def fig_delta_f_temperature(data: ReportData) -> Figure | None:
    """ΔF vs temperature (reweighted flow samples of the last generation; circles, solid) and,
    where oracle labels exist, corrected to the oracle (squares, dashed, shifted right by 1 % of
    the temperature range for legibility), with 1σ error bars; points with poor overlap drawn
    open and circled."""
    pts = [p for p in data.delta_f_temperature if p.delta_f_ev is not None]
    if not pts:
        return None
    oracle = oracle_name(data.oracle)
    fig = Figure(figsize=(6.4, 3.8), layout="constrained")
    ax = fig.add_subplot()
    states = _states(data, [p.state for p in pts])
    temps = [p.temperature_k for p in pts]
    dodge = 0.01 * ((max(temps) - min(temps)) or max(temps))
    warn: str | None = "poor overlap (ESS below threshold)"
    for state in dict.fromkeys(p.state for p in pts):
        sp = sorted((p for p in pts if p.state == state), key=lambda p: p.temperature_k)
        c, name = _state_color(states, state), f"{state} − {sp[0].reference}"
        warn = _temperature_series(
            ax, [p.temperature_k for p in sp], [1e3 * p.delta_f_ev for p in sp],
            [1e3 * (p.error_ev or 0.0) for p in sp], [p.poor_overlap for p in sp], c, "o", "-",
            f"{name} on the committee", warn)
        dp = [p for p in sp if p.dft_delta_f_ev is not None]
        if dp:
            warn = _temperature_series(
                ax, [p.temperature_k + dodge for p in dp], [1e3 * p.dft_delta_f_ev for p in dp],
                [1e3 * (p.dft_error_ev or 0.0) for p in dp],
                [bool(p.dft_poor_overlap) for p in dp], c, "s", "--",
                f"{name} corrected to {oracle}", warn)
    if data.temperature_k:
        ax.axvline(data.temperature_k, color="0.6", ls=":", lw=1, label="campaign temperature")
    ax.axhline(0.0, color="0.7", lw=0.8)
    ax.set_xlabel("temperature (K)")
    ax.set_ylabel("ΔF (meV)")
    g = pts[0].generation
    ax.set_title("Free-energy difference vs temperature"
                 + (f" (flows of generation {g})" if g is not None else ""))
    ax.legend(fontsize=8)
    return fig


def fig_labels(data: ReportData) -> Figure | None:
    """Oracle labels per generation: configurations selected for labelling (left bar) and the
    records stored (right bar, stacked: selected configurations labelled, Boltzmann samples
    labelled for the oracle correction, failures)."""
    if not data.labels:
        return None
    rows = sorted(data.labels, key=lambda r: r.generation)
    g = np.array([r.generation for r in rows], float)
    fig = Figure(figsize=(6.4, 3.4), layout="constrained")
    ax = fig.add_subplot()
    w = 0.36
    bars = ax.bar(g - w / 2, [r.selected for r in rows], width=w, color="#9ecae1",
                  label="selected for labelling")
    ax.bar_label(bars, fontsize=7, padding=1)
    bottom = np.zeros(len(rows))
    for name, color, vals in (
            ("labelled: selected", "#2ca02c", [r.labelled - r.correction for r in rows]),
            ("labelled: oracle-correction samples", "#98df8a", [r.correction for r in rows]),
            ("failed", "#d62728", [r.failed for r in rows])):
        bars = ax.bar(g + w / 2, vals, width=w, bottom=bottom, color=color, label=name)
        bottom += np.asarray(vals, float)
    ax.bar_label(bars, labels=[f"{b:.0f}" for b in bottom], fontsize=7, padding=1)
    ax.set_xticks(g)
    ax.set_xlabel("generation")
    ax.set_ylabel("configurations")
    ax.set_title(f"Labels by the oracle ({oracle_name(data.oracle)}) per generation")
    ax.set_ylim(0, 1.15 * max(1.0, float(bottom.max()), max(r.selected for r in rows)))
    ax.legend(fontsize=8)
    return fig


def fig_parity(data: ReportData) -> Figure | None:
    """Committee vs oracle per state: energies per atom (left), force components (right)."""
    rows = [p for p in data.parity if p.energy_dft_ev or p.force_dft]
    if not rows:
        return None
    oracle = oracle_name(data.oracle)
    fig = Figure(figsize=(7.6, 3.0 * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), 2, squeeze=False)
    states = _states(data, [p.state for p in rows])
    for (ax_e, ax_f), p in zip(axes, rows, strict=True):
        c = _state_color(states, p.state)
        err = p.errors()
        gen = f", generation {p.generation}" if p.generation is not None else ""
        for ax, x, y, unit, key in (
            (ax_e, np.divide(p.energy_dft_ev, p.n_atoms), np.divide(p.energy_model_ev, p.n_atoms),
             "energy (eV/atom)", "energy"),
            (ax_f, np.asarray(p.force_dft), np.asarray(p.force_model), "force (eV/Å)", "force"),
        ):
            if x.size == 0:
                ax.text(0.5, 0.5, "not computed", ha="center", va="center",
                        transform=ax.transAxes, color="0.5")
                ax.set_axis_off()
                continue
            if key == "energy":  # per-atom energies relative to the oracle's mean, meV/atom
                shift = float(np.mean(x))
                x, y = 1e3 * (x - shift), 1e3 * (y - shift)
                unit = f"energy − ⟨E_{oracle}⟩ (meV/atom)"
            lo, hi = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
            pad = 0.05 * (hi - lo or 1.0)
            ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.6", lw=0.8)
            ax.scatter(x, y, s=8, alpha=0.6, color=c, edgecolors="none")
            ax.set_xlim(lo - pad, hi + pad)
            ax.set_ylim(lo - pad, hi + pad)
            ax.set_aspect("equal")
            ax.set_xlabel(f"{oracle} {unit}")
            ax.set_ylabel(f"model {unit}")
            if key == "energy":
                txt = (f"MAE {err['energy_mae_mev_per_atom']:.2f} meV/atom\n"
                       f"RMSE {err['energy_rmse_mev_per_atom']:.2f} meV/atom")
            else:
                txt = (f"MAE {err['force_mae_mev_per_a']:.1f} meV/Å\n"
                       f"RMSE {err['force_rmse_mev_per_a']:.1f} meV/Å")
            ax.text(0.04, 0.96, txt, transform=ax.transAxes, va="top", fontsize=8,
                    bbox=dict(fc="white", ec="0.8"))
            ax.set_title(f"{p.state}: {key}{gen}", fontsize=10)
    return fig


def fig_fes(data: ReportData) -> Figure | None:
    """Free-energy surfaces along CVs from metadynamics (1-D curves or 2-D contour maps)."""
    if not data.fes:
        return None
    n = len(data.fes)
    fig = Figure(figsize=(6.0 * min(n, 2), 3.8 * ((n + 1) // 2)), layout="constrained")
    fig.get_layout_engine().set(wspace=0.12)
    axes = fig.subplots((n + 1) // 2, min(n, 2), squeeze=False).ravel()
    for ax, s in zip(axes, data.fes, strict=False):
        f = np.asarray(s.free_energy_ev, float)
        f = f - np.nanmin(f)
        if f.ndim == 1:
            ax.plot(s.axes[0], f, color="#1f77b4")
            ax.set_xlabel(s.cv_names[0])
            ax.set_ylabel("F (eV)")
        else:
            x, y = np.asarray(s.axes[0]), np.asarray(s.axes[1])
            top = float(np.nanpercentile(f, 90)) or float(np.nanmax(f)) or 1.0
            levels = np.linspace(0.0, top, 21)  # colour the basins, not the high walls
            cs = ax.contourf(x, y, f.T, levels=levels, cmap="viridis", extend="max")
            ax.contour(x, y, f.T, levels=levels[::2], colors="white", linewidths=0.4)
            fig.colorbar(cs, ax=ax, label="F (eV)", format="%.2f")
            ax.set_xlabel(s.cv_names[0])
            ax.set_ylabel(s.cv_names[1])
        t = f" ({s.temperature_k:g} K)" if s.temperature_k else ""
        ax.set_title((s.label or "metadynamics") + t, fontsize=10)
    for ax in axes[n:]:
        ax.set_axis_off()
    return fig


def fig_flow(data: ReportData) -> Figure | None:
    """Flow/MCMC diagnostics per state vs generation: ESS, acceptance, R-hat."""
    if not data.flow:
        return None
    fig = Figure(figsize=(9.6, 3.0), layout="constrained")
    axes = fig.subplots(1, 3)
    states = _states(data, [d.state for d in data.flow])
    # the ESS fraction is comparable across runs; the absolute ESS when that is all there is
    ess_attr = "ess_fraction" if any(d.ess_fraction is not None for d in data.flow) else "ess"
    for state in states:
        rows = sorted((d for d in data.flow if d.state == state), key=lambda d: d.generation)
        if not rows:
            continue
        c = _state_color(states, state)
        for ax, attr in zip(axes, (ess_attr, "acceptance", "rhat"), strict=True):
            scale = 100.0 if attr == "ess_fraction" else 1.0  # the ESS fraction in percent
            pts = [(d.generation, scale * getattr(d, attr)) for d in rows
                   if getattr(d, attr) is not None]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", color=c, label=state)
    axes[0].set_ylabel("effective sample size" if ess_attr == "ess"
                       else "ESS (% of the flow samples)")
    axes[1].set_ylabel("flow acceptance rate")
    axes[1].set_ylim(0, 1)
    axes[2].set_ylabel("R-hat")
    axes[2].axhline(1.01, color="orange", ls="--", lw=1, label="1.01")
    gens = sorted({d.generation for d in data.flow})
    for ax in axes:
        ax.set_xlabel("generation")
        ax.set_xticks(gens)
        if len(gens) == 1:
            ax.set_xlim(gens[0] - 1, gens[0] + 1)
    axes[2].legend(fontsize=8)
    return fig


def fig_spectra(data: ReportData) -> Figure | None:
    """Averaged absorption spectra per state, overlaid, with the bootstrap band of the mean."""
    if not data.spectra:
        return None
    fig = Figure(figsize=(9.6, 3.8), layout="constrained")
    ax, ax_c = fig.subplots(1, 2, gridspec_kw={"width_ratios": [2.2, 1]})
    states = _states(data, [s.state for s in data.spectra])
    top = 0.0
    for s in data.spectra:
        a = s.spectrum
        c = _state_color(states, s.state)
        x = np.asarray(a.grid_ev)
        ax.fill_between(x, a.band_lo, a.band_hi, color=c, alpha=0.25, lw=0)
        ax.plot(x, a.intensity, color=c, lw=1.5,
                label=f"{s.state} (n={a.n_samples}, ESS={a.ess:.0f})")
        if np.isfinite(a.complete_below_ev):
            ax.axvline(a.complete_below_ev, color=c, ls=":", lw=1)
        if a.l1_changes:
            ax_c.plot(np.arange(2, len(a.l1_changes) + 2), 100 * np.asarray(a.l1_changes),
                      marker="o", ms=3, color=c, label=s.state)
        top = max(top, float(np.max(a.band_hi)) if a.band_hi else 0.0)
    ax.set_xlabel("excitation energy (eV)")
    ax.set_ylabel("absorption (oscillator strength / eV)")
    w = data.spectra[0].spectrum
    ax.set_title(f"Absorption spectra ({w.shape}, width {w.width_ev:g} eV); "
                 "dotted: states complete below", fontsize=10)
    ax.set_ylim(0, top * 1.08 if top > 0 else 1)
    ax.legend(fontsize=8)
    tol = 100 * w.tolerance
    ax_c.axhline(tol, color="orange", ls="--", lw=1, label=f"{tol:g} %")
    ax_c.set_ylim(bottom=0)
    ax_c.set_xlabel("samples in the average")
    ax_c.set_ylabel("L1 change on adding one (%)")
    ax_c.set_title("Convergence of the average", fontsize=10)
    ax_c.legend(fontsize=8)
    return fig


FIGURES: dict[str, tuple[str, Callable[[ReportData], Figure | None]]] = {
    "delta_f": ("Free-energy difference", fig_delta_f),
    "delta_f_temperature": ("Free-energy difference vs temperature", fig_delta_f_temperature),
    "labels": ("Labels by the oracle ({oracle}) per generation", fig_labels),
    "parity": ("Committee errors against the oracle ({oracle})", fig_parity),
    "fes": ("Free-energy surfaces from metadynamics", fig_fes),
    "flow": ("Sampler diagnostics", fig_flow),
    "spectra": ("Absorption spectra", fig_spectra),
}


def summary_numbers(data: ReportData) -> dict[str, Any]:
    """The headline numbers: final ΔF (on the committee and corrected to the oracle),
    populations, model errors, spectra peaks."""
    out: dict[str, Any] = {"temperature_k": data.temperature_k, "states": data.states,
                           "oracle": data.oracle}
    final = final_delta_f(data)
    out["delta_f_final"] = {s: p.model_dump() for s, p in final.items()}
    if data.temperature_k and final:
        for key, val, err in (("populations", "delta_f_ev", "error_ev"),
                              ("populations_dft", "dft_delta_f_ev", "dft_error_ev")):
            df: dict[str, tuple[float, float]] = {}
            ref = next(iter(final.values())).reference
            df[ref] = (0.0, 0.0)
            for s, p in final.items():
                if getattr(p, val) is not None:
                    df[s] = (getattr(p, val), getattr(p, err) or 0.0)
            if len(df) > 1:
                out[key] = {s: {"population": v, "error": e}
                            for s, (v, e) in populations(df, data.temperature_k).items()}
    out["delta_f_temperature"] = [p.model_dump() for p in data.delta_f_temperature]
    out["model_errors"] = {f"{p.state}@{p.generation}": p.errors() for p in data.parity}
    out["spectra"] = {s.state: {"peaks_ev": s.spectrum.peaks_ev, "n_samples": s.spectrum.n_samples,
                                "ess": s.spectrum.ess,
                                "samples_to_converge": s.spectrum.samples_to_converge,
                                "complete_below_ev": s.spectrum.complete_below_ev}
                      for s in data.spectra}
    return out


CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;background:#f6f7f9;
color:#222}
header{background:#20344c;color:#fff;padding:18px 32px}header h1{margin:0;font-size:24px}
header p{margin:4px 0 0;color:#c9d6e6}
main{max-width:1200px;margin:0 auto;padding:16px 32px}
section{background:#fff;border:1px solid #dde2e8;border-radius:6px;padding:12px 20px;
margin:16px 0}
h2{font-size:18px;margin:4px 0 10px;color:#20344c}
img{max-width:100%;height:auto;display:block;margin:6px 0}
table{border-collapse:collapse;font-size:14px;margin:6px 12px 6px 0;display:inline-table;
vertical-align:top}
td,th{border:1px solid #dde2e8;padding:4px 8px;text-align:left;white-space:nowrap}
th{background:#eef2f6}
.answer{font-size:17px;margin:6px 0 10px}.answer b{font-size:19px}
ul.notes{font-size:13px;color:#444;margin:4px 0 8px;padding-left:20px}
.missing{color:#888;font-style:italic}.warn{color:#a15c00}
pre{background:#f1f3f5;padding:8px;overflow-x:auto;font-size:12px;max-height:360px}
"""


def fmt_pm(value: float | None, error: float | None = None, unit: str = "",
           sig: int = 3) -> str:
    """``value ± error unit`` with the error to two significant digits and the value to the
    same decimal place (a value without a usable error: ``sig`` significant digits); "—" for
    no value."""
    if value is None or not math.isfinite(value):
        return "—"
    if error is None or not math.isfinite(error) or error <= 0:
        text = f"{value:.{sig}g}"
    else:
        nd = max(0, 1 - math.floor(math.log10(error)))
        text = f"{value:.{nd}f} ± {error:.{nd}f}"
    if text.startswith("-") and float(text.split(" ")[0]) == 0.0:
        text = text[1:]  # a value that rounds to zero has no sign
    return text + (f" {unit}" if unit else "")


def energy_text(value_ev: float | None, error_ev: float | None, kt_ev: float | None) -> str:
    """An energy difference in kT (when ``kt_ev`` is known) and in meV, one per line."""
    if value_ev is None or not math.isfinite(value_ev):
        return "—"
    mev = fmt_pm(1e3 * value_ev, None if error_ev is None else 1e3 * error_ev, "meV")
    if not kt_ev:
        return mev
    return fmt_pm(value_ev / kt_ev, None if error_ev is None else error_ev / kt_ev,
                  "kT") + "\n" + mev


def duration_text(seconds: float) -> str:
    """A duration a person reads at a glance: "42 s", "3 min 05 s", "2 h 07 min"."""
    s = round(seconds)
    if s < 60:
        return f"{seconds:.2g} s" if seconds < 10 else f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def _table(header: list[str], rows: list[list[str]]) -> str:
    """An HTML table of escaped text; a newline in a cell is a line break."""
    def cell(text: str, tag: str) -> str:
        return f"<{tag}>" + html.escape(text).replace("\n", "<br>") + f"</{tag}>"

    th = "".join(cell(h, "th") for h in header)
    tr = "".join("<tr>" + "".join(cell(c, "td") for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{tr}</table>"


def _notes(items: list[str]) -> str:
    return "<ul class='notes'>" + "".join(f"<li>{html.escape(x)}</li>" for x in items) + "</ul>"


def _pct(entry: dict[str, float] | list[float | None] | None) -> str:
    """A population ``{"population": p, "error": σ}`` or ``[p, σ]`` in percent."""
    if isinstance(entry, dict):
        entry = [entry.get("population"), entry.get("error")]
    if not entry or entry[0] is None:
        return "—"
    err = entry[1] if len(entry) > 1 else None
    return fmt_pm(100 * entry[0], None if err is None else 100 * err, "%")


def _ess_fraction_text(p: DeltaFPoint) -> str:
    if p.ess_fraction:
        return "\n".join(f"{k}: {fmt_pm(100 * v, sig=2)} %" for k, v in p.ess_fraction.items())
    return "\n".join(f"{k}: {v:.0f}" for k, v in p.ess.items()) or "—"


def _config_value(data: ReportData, *path: str) -> Any:
    node: Any = data.provenance.config if data.provenance else {}
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    return node


def _delta_f_section(data: ReportData, final: dict[str, DeltaFPoint],
                     numbers: dict[str, Any]) -> str:
    """The campaign's answer in words, ΔF per generation, populations, and what each column
    means."""
    kt = _kt_ev(data)
    oracle, method = oracle_name(data.oracle), data.oracle or "not recorded"
    at = (f" at {data.temperature_k:g} K (kT = {fmt_pm(1e3 * kt)} meV)"
          if data.temperature_k and kt else "")
    out = []
    for s, p in final.items():
        name = f"ΔF = F({s}) − F({p.reference})"
        if p.dft_delta_f_ev is not None:
            head, rest = (p.dft_delta_f_ev, p.dft_error_ev), (
                f"corrected to the oracle ({oracle}, {method}); on the committee MLIP alone "
                + energy_text(p.delta_f_ev, p.error_ev, kt).replace("\n", " = "))
        else:
            head, rest = (p.delta_f_ev, p.error_ev), "on the committee MLIP (no correction " \
                "to the oracle was measured)"
        out.append(f"<p class='answer'>{html.escape(name + at)}: <b>"
                   + html.escape(energy_text(*head, kt).replace("\n", " = "))
                   + f"</b>, {html.escape(rest)}; generation {p.generation}"
                   + (f", {html.escape(data.status)}" if data.status else "")
                   + ". Errors are one standard deviation.</p>")
    rows = []
    for p in sorted(data.delta_f, key=lambda p: (p.state, p.generation)):
        has = p.delta_f_ev is not None
        rows.append([f"{p.generation}" + (" (answer)" if final.get(p.state) is p else ""),
                     energy_text(p.delta_f_ev, p.error_ev, kt),
                     energy_text(p.correction_ev, p.correction_error_ev, kt),
                     energy_text(p.dft_delta_f_ev, p.dft_error_ev, kt),
                     p.method or "—", _ess_fraction_text(p),
                     fmt_pm(p.rhat, sig=4),
                     ("POOR" if p.overlap_warning else "ok") if has else "—"])
    out.append(_table(["generation", "ΔF on the committee", f"correction to {oracle}",
                       f"ΔF corrected to {oracle}", "estimator", "ESS / flow samples",
                       "R-hat", "overlap"], rows))
    pops, pops_dft = numbers.get("populations", {}), numbers.get("populations_dft", {})
    if pops or pops_dft:
        names = list(dict.fromkeys([*pops, *pops_dft]))
        out.append(_table(["state", "population on the committee",
                           f"population corrected to {oracle}"],
                          [[n, _pct(pops.get(n)), _pct(pops_dft.get(n))] for n in names]))
    n_rw = _config_value(data, "estimate", "reweight_samples")
    rhat = _config_value(data, "convergence", "rhat")
    out.append(_notes([
        "ΔF on the committee: the flows' estimate of F(to) − F(from) on that generation's "
        "committee MLIP, with its bootstrap error. Estimator: IS, importance sampling of flow "
        "samples (annealed IS: carried toward the Boltzmann distribution first); BAR, "
        "Bennett's acceptance ratio between flow samples and the MCMC walkers.",
        f"correction to {oracle}: for each state, the exponential average of E_{oracle} − "
        f"E_MLIP over Boltzmann samples of the committee labelled by the oracle ({method}"
        + (f"; {n_rw} per state" if n_rw else "") + "); the column shows to − from.",
        f"ΔF corrected to {oracle} = ΔF on the committee + correction, errors in quadrature. "
        "The row marked 'answer' is the campaign's result.",
        "ESS / flow samples: Kish effective sample size of each state's importance weights "
        f"as a percentage of the flow samples drawn (overlap POOR below "
        f"{100 * LOW_ESS_FRACTION:g} % with importance sampling).",
        "R-hat: split R-hat of the sampler's chains, maximum over states and observables"
        + (f"; the convergence rule asks for less than {rhat}." if rhat else "."),
        "Populations: p_i ∝ exp(−ΔF_i / kT) of the answer, ± from Gaussian draws of ΔF."]))
    return "".join(out)


def _temperature_tables(data: ReportData) -> str:
    """ΔF(T') on the committee and corrected to the oracle with ESS and overlap flags;
    populations; what the columns mean."""
    points = data.delta_f_temperature
    oracle = oracle_name(data.oracle)

    def flag(poor: bool | None) -> str:
        return "—" if poor is None else ("POOR" if poor else "ok")

    def ess(e: dict[str, float | None]) -> str:
        return "\n".join(f"{k}: {v:.0f}" for k, v in e.items() if v is not None) or "—"

    out = _table(
        ["T (K)", "ΔF on the committee", "ESS per state", "overlap",
         f"ΔF corrected to {oracle}", f"ESS of the {oracle} labels", f"{oracle} overlap"],
        [[f"{p.temperature_k:g}", energy_text(p.delta_f_ev, p.error_ev,
                                                KB_EV_PER_K * p.temperature_k),
          ess(p.ess), flag(p.poor_overlap),
          energy_text(p.dft_delta_f_ev, p.dft_error_ev, KB_EV_PER_K * p.temperature_k),
          ess(p.dft_ess), flag(p.dft_poor_overlap)] for p in points])
    rows = [[f"{p.temperature_k:g}", s, _pct(v), _pct(p.dft_populations.get(s))]
            for p in points for s, v in p.populations.items()]
    if rows:
        out += _table(["T (K)", "state", "population on the committee",
                       f"population corrected to {oracle}"], rows)
    p0 = points[0]
    out += _notes([
        f"ΔF = F({p0.state}) − F({p0.reference}) at each temperature T' by reweighting the "
        f"flow samples of generation {p0.generation} (drawn at the campaign temperature); kT "
        "is the one at T'.",
        "ESS per state: Kish effective sample size of the reweighted samples; overlap POOR "
        "below 50: the value and its error bar are not to be trusted.",
        f"Corrected to {oracle}: the oracle-labelled samples reweighted to T'; their ESS is at "
        "most the number of labels per state, POOR below 10."])
    return out


def _labels_table(data: ReportData) -> str:
    oracle = oracle_name(data.oracle)
    rows = [[str(r.generation), str(r.selected), str(r.labelled - r.correction),
             str(r.correction), str(r.failed), str(r.labelled + r.failed)]
            for r in sorted(data.labels, key=lambda r: r.generation)]
    n_rw = _config_value(data, "estimate", "reweight_samples")
    strategy = _config_value(data, "selection", "strategy") or "uncertainty"
    how = {"free_energy": "by Boltzmann weight × the committee's energy variance (their share "
           "of the oracle correction's variance)",
           "random": "at random among MD frames",
           "md_frames": "among MD frames by the committee's force deviation (trust window)",
           "lowest_energy": "as the lowest-energy flow proposals"}.get(
        strategy, "by the committee's force deviation (trust window)")
    return _table(["generation", "selected", "labelled: selected",
                   "labelled: oracle-correction samples", "failed", "stored"], rows) + _notes([
        f"selected: configurations picked for labelling, {how} (generation 0: the given "
        "structures and their random displacements).",
        "oracle-correction samples: Boltzmann samples of each state on the committee "
        + (f"({n_rw} per state asked) " if n_rw else "")
        + f"labelled by {oracle} to correct ΔF to the oracle; they join the next "
        "generation's training set.",
        "Counts are records in the label store: a configuration already stored is not "
        "labelled again, so repeats among the samples count once."])


def _provenance_html(data: ReportData) -> str:
    p = data.provenance
    if p is None:
        return '<p class="missing">not computed</p>'
    rows = [["run directory", p.run_dir], ["created", p.created], ["site", p.site or "—"],
            ["oracle", p.dft_method or "—"], ["alflow", p.alflow_version or "—"]]
    rows += [[k, v] for k, v in sorted(p.versions.items())]
    out = _table(["item", "value"], rows)
    if p.resources:
        out += "<h3>Resources by executor</h3>" + _table(
            ["executor", "tasks", "time inside tasks", "core time"],
            [[r.resource_class, str(r.tasks), duration_text(3600 * r.wall_hours),
              duration_text(3600 * r.core_hours)] for r in p.resources]) + _notes([
            "Summed over the executor's tasks (several may run at once); core time counts the "
            "cores each task holds where the site says so."])
    else:
        out += '<p class="missing">resource usage: not recorded</p>'
    if p.config:
        out += ("<details><summary>campaign configuration</summary><pre>"
                + html.escape(json.dumps(p.config, indent=1, default=str)) + "</pre></details>")
    return out


def _parity_table(data: ReportData) -> str:
    rows = [[p.state, "—" if p.generation is None else str(p.generation),
             str(len(p.energy_dft_ev))] +
            [fmt_pm(p.errors().get(k)) if k in p.errors() else "—"
             for k in ("energy_mae_mev_per_atom", "energy_rmse_mev_per_atom",
                       "force_mae_mev_per_a", "force_rmse_mev_per_a")]
            for p in data.parity]
    return _table(["state", "committee of generation", "labels", "E MAE (meV/atom)",
                   "E RMSE (meV/atom)", "F MAE (meV/Å)", "F RMSE (meV/Å)"], rows) + _notes([
        f"The committee's mean prediction against {oracle_name(data.oracle)} on every label "
        "of the state (energies per atom, force components)."])


def render_html(data: ReportData, figures: dict[str, str | None], numbers: dict[str, Any]) -> str:
    """The page: one section per figure (``figures[name]`` a relative PNG path or None)."""
    t = f"{data.temperature_k:g} K" if data.temperature_k else "temperature not set"
    oracle = oracle_name(data.oracle)
    sub = " · ".join(x for x in (data.system, ", ".join(data.states), t,
                                 f"oracle {data.oracle}" if data.oracle else "",
                                 f"{data.generations} generation(s)", data.status) if x)
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
             f"<title>{html.escape(data.title)}</title><style>{CSS}</style></head><body>",
             f"<header><h1>{html.escape(data.title)}</h1><p>{html.escape(sub)}</p></header><main>"]
    if data.warnings:
        parts.append("<section><h2>Warnings</h2><ul>" + "".join(
            f"<li class='warn'>{html.escape(w)}</li>" for w in data.warnings) + "</ul></section>")
    final = final_delta_f(data)
    for name, (title, _) in FIGURES.items():
        title = title.format(oracle=oracle)
        parts.append(f"<section id='{name}'><h2>{html.escape(title)}</h2>")
        if name == "delta_f" and final:
            parts.append(_delta_f_section(data, final, numbers))
        if name == "delta_f_temperature" and data.delta_f_temperature:
            parts.append(_temperature_tables(data))
        if name == "labels" and data.labels:
            parts.append(_labels_table(data))
        if name == "parity" and data.parity:
            parts.append(_parity_table(data))
        if name == "spectra" and data.spectra:
            rows = [[s.state, s.method or "—", str(s.spectrum.n_samples),
                     fmt_pm(s.spectrum.ess),
                     ", ".join(f"{x:.2f}" for x in s.spectrum.peaks_ev[:6]) or "—",
                     fmt_pm(s.spectrum.complete_below_ev),
                     "not reached" if s.spectrum.samples_to_converge is None
                     else str(s.spectrum.samples_to_converge)]
                    for s in data.spectra]
            tol = 100 * data.spectra[0].spectrum.tolerance
            parts.append(_table(["state", "method", "samples", "ESS", "peaks (eV)",
                                 "complete below (eV)", f"samples to < {tol:g}% L1"], rows)
                         + _notes([
                             "ESS: Kish effective number of samples of the Boltzmann weights "
                             "of the averaged spectra.",
                             "complete below: below this energy every sample's computed "
                             "excited states are complete (above it the average misses "
                             "states).",
                             f"samples to < {tol:g}% L1: samples after which adding one more "
                             f"changes the averaged spectrum by less than {tol:g} % (L1)."]))
        if name == "flow" and data.flow:
            parts.append(_notes([
                "ESS: Kish effective sample size of each state's importance weights (flow "
                "samples), as a percentage of the samples drawn.",
                "flow acceptance: acceptance rate of the flow's independence Metropolis–"
                "Hastings moves in the MCMC (empty without MCMC).",
                "R-hat: split R-hat of the chains (MCMC walkers, or the MD seed replicas "
                "without MCMC); below 1.01 the chains agree."]))
        src = figures.get(name)
        if src:
            parts.append(f"<img src='{html.escape(src)}' alt='{html.escape(title)}'>")
        else:
            parts.append("<p class='missing'>not computed</p>")
        parts.append("</section>")
    parts.append("<section id='provenance'><h2>Provenance</h2>" + _provenance_html(data)
                 + "</section>")
    parts.append(f"<p style='color:#888;font-size:12px'>written by alflow report, "
                 f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; numbers in "
                 "report.json</p></main></body></html>")
    return "\n".join(parts)


def write_report(data: ReportData, out_dir: str | Path) -> Path:
    """Write ``index.html``, ``report.json`` and ``figures/*.png`` into ``out_dir``; returns
    the HTML path. A figure that fails to draw is logged and shown as "not computed"."""
    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    figures: dict[str, str | None] = {}
    for name, (_, fn) in FIGURES.items():
        png = out / "figures" / f"{name}.png"
        png.unlink(missing_ok=True)
        try:
            fig = fn(data)
        except Exception as err:  # a bad section must not lose the rest of the report
            log.warning("figure %s failed: %s", name, err)
            data.warnings.append(f"figure '{name}' could not be drawn: {err}")
            fig = None
        if fig is None:
            figures[name] = None
            continue
        fig.savefig(png, dpi=DPI)
        figures[name] = f"figures/{name}.png"
    numbers = summary_numbers(data)
    (out / "report.json").write_text(json.dumps(
        {"summary": numbers, "data": data.model_dump(), "figures": figures}, indent=1,
        default=str))
    page = out / "index.html"
    page.write_text(render_html(data, figures, numbers))
    return page
