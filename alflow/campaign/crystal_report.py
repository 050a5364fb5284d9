"""``alflow report`` of a crystal campaign: ΔG(T) and ΔG(P) with error bars, TI and flows side
by side (PNG figures, an HTML page, a text table and report.json).

``RUN_DIR/report/``: ``index.html``, ``report.txt``, ``report.json`` (the ΔG tables of
:func:`alflow.campaign.crystal.delta_g_tables` with the campaign's settings) and
``figures/delta_g_temperature.png``, ``figures/delta_g_pressure.png``. Points whose tasks
have not finished are left out (and listed as such).
"""

from __future__ import annotations

import html
import json
import time
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from alflow.campaign.checkpoint import atomic_write_text, to_jsonable
from alflow.campaign.crystal import (
    delta_g_tables,
    format_tables,
    load_run_config,
    plan,
    stored_results,
)
from alflow.campaign.rundir import open_run_dir

STYLE = {"ti": ("o", "Einstein-crystal TI"), "flow": ("s", "NPT flow")}
COLORS = ["#1f77b4", "#d62728", "#2ca02c"]


def scan_figure(tables: dict[str, Any], scan: str) -> Figure | None:
    """ΔG per atom vs the scanned variable, one series per (phase, method); None when no
    point has both phases."""
    var, fixed = (("temperature", "pressure") if scan == "temperature_scan"
                  else ("pressure", "temperature"))
    sc, u = tables[scan], tables["units"]
    fig = Figure(figsize=(5.5, 3.8))
    ax = fig.add_subplot()
    drawn = False
    phases = list(sc["points"][0]["delta_g"]) if sc["points"] else []
    for i, phase in enumerate(phases):
        for j, (method, (marker, name)) in enumerate(STYLE.items()):
            pts = [(pt[var], *pt["delta_g"][phase][method]) for pt in sc["points"]
                   if pt["delta_g"][phase].get(method)]
            if not pts:
                continue
            x, y, e = zip(*pts, strict=True)
            off = 0.006 * (max(x) - min(x) or 1) * (j - 0.5)  # methods side by side
            ax.errorbar([v + off for v in x], y, yerr=e, marker=marker, capsize=3,
                        ls="-" if method == "ti" else "--", color=COLORS[i % len(COLORS)],
                        label=f"{phase} − {tables['reference']}, {name}")
            drawn = True
    if not drawn:
        return None
    ax.axhline(0, color="#888", lw=0.8)
    ax.set_xlabel(f"{var} [{u[var]}]")
    ax.set_ylabel(f"ΔG per atom [{u['energy']}]")
    ax.set_title(f"at {fixed} {sc[fixed]:g} [{u[fixed]}]", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _table_html(tables: dict[str, Any], methods: list[str]) -> str:
    u = tables["units"]
    out = []
    for scan, var in (("temperature_scan", "temperature"), ("pressure_scan", "pressure")):
        for phase in (tables[scan]["points"][0]["delta_g"] if tables[scan]["points"] else []):
            head = "".join(f"<th>ΔG {html.escape(STYLE[m][1])}</th><th>G/N {m} "
                           f"({html.escape(phase)}, {html.escape(tables['reference'])})</th>"
                           for m in methods)
            rows = []
            for pt in tables[scan]["points"]:
                cells = []
                for m in methods:
                    d = pt["delta_g"][phase].get(m)
                    g = pt["g"].get(m, {})
                    cells.append("<td>" + ("—" if d is None else f"{d[0]:+.5g} ± {d[1]:.2g}")
                                 + "</td><td>" + ", ".join(
                                     f"{g[p][0]:.6g} ± {g[p][1]:.2g}" if p in g else "—"
                                     for p in (phase, tables["reference"])) + "</td>")
                ks = pt.get("pareto_k", {})
                ess = ", ".join(f"{p} {v:.3f}" + (f" (k̂ {ks[p]:.2f})" if ks.get(p) is not None
                                                  else "")
                                for p, v in pt["ess"].items() if v is not None)
                rows.append(f"<tr><td>{pt[var]:g}</td>{''.join(cells)}<td>{ess}</td></tr>")
            out.append(f"<h3>ΔG({html.escape(phase)} − {html.escape(tables['reference'])}) "
                       f"vs {var} [{html.escape(u[var])}], energies in "
                       f"{html.escape(u['energy'])} per atom</h3><table border=1 "
                       f"cellpadding=3><tr><th>{var}</th>{head}<th>flow ESS fraction (k̂)</th>"
                       f"</tr>{''.join(rows)}</table>")
    out.append("<p>k̂: the Pareto shape of the flow's importance weights; above 0.7 the "
               "flow's error bar is unreliable (train longer: flows.train_steps).</p>")
    return "\n".join(out)


def write_crystal_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the report of the crystal campaign in ``run_dir`` into ``out`` (default
    ``RUN_DIR/report``); returns the path of index.html."""
    run = open_run_dir(run_dir)
    cfg = load_run_config(run.root)
    out = Path(out) if out is not None else run.root / "report"
    (out / "figures").mkdir(parents=True, exist_ok=True)
    results = stored_results(cfg, run)
    tables = delta_g_tables(cfg, results)
    methods = cfg.methods()
    figures = {}
    for scan in ("temperature_scan", "pressure_scan"):
        fig = scan_figure(tables, scan)
        if fig is not None:
            name = f"figures/delta_g_{scan.split('_')[0]}.png"
            fig.savefig(out / name, dpi=110)
            figures[scan] = name
    missing = [t.label for t in plan(cfg) if t.key not in results]
    text = format_tables(tables, methods)
    if missing:
        text.append(f"not computed yet ({len(missing)}): " + ", ".join(missing))
    atomic_write_text(out / "report.txt", "\n".join(text) + "\n")
    data = {"name": cfg.name, "config": cfg.model_dump(mode="json"), "delta_g": tables,
            "missing": missing, "figures": figures,
            "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    atomic_write_text(out / "report.json", json.dumps(to_jsonable(data), indent=1))
    imgs = "".join(f'<p><img src="{html.escape(f)}" alt="{html.escape(s)}"></p>'
                   for s, f in figures.items())
    pot = cfg.potential
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>"
            f"{html.escape(cfg.name)}</title></head><body><h1>{html.escape(cfg.name)}: crystal "
            f"phases</h1><p>potential {html.escape(str(pot.model_dump(exclude_none=True)))}, "
            f"{cfg.n_atoms} atoms per cell, phases {', '.join(cfg.phases)}; ΔG = G(phase) − "
            f"G({cfg.reference}) per atom; units: {html.escape(str(pot.units))}. TI: "
            f"Einstein-crystal integration at the volume where ⟨P⟩ = P; flow: NPT flow "
            f"({cfg.flows.box} box), importance sampling. Absolute G of the two methods follow "
            f"different conventions; ΔG is comparable.</p>{imgs}"
            f"{_table_html(tables, methods)}"
            + (f"<p>not computed yet: {html.escape(', '.join(missing))}</p>" if missing else "")
            + "</body></html>\n")
    atomic_write_text(out / "index.html", page)
    return out / "index.html"


__all__ = ["scan_figure", "write_crystal_report"]
