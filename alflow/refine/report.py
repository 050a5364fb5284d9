"""Writing a refinement's results: ``result.json`` and the plots ``loss.png`` (loss and
parameters per iteration) and ``observables.png`` (each observable before and after, with its
error bars, against its target). Matplotlib with the Agg backend (no display)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def write_result(doc: dict, out: str | Path) -> list[Path]:
    """Write ``out/result.json`` and the plots; returns the paths written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "result.json"
    path.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    return [path, plot_loss(doc, out / "loss.png"), plot_observables(doc, out / "observables.png")]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_loss(doc: dict, path: Path) -> Path:
    """Loss (log scale) and each parameter relative to its start, per iteration."""
    plt = _pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax1.semilogy(doc["loss"], "o-", ms=3)
    ax1.set(xlabel="iteration", ylabel="loss")
    names = doc["trainable"] if isinstance(doc["trainable"], list) else list(doc["parameters"])
    for name in names:
        vals = [h["parameters"][name] for h in doc["iterations"]] + [doc["parameters"][name]]
        ax2.plot(np.asarray(vals) / doc["initial_parameters"][name], label=name)
    ax2.set(xlabel="iteration", ylabel="parameter / initial value")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_observables(doc: dict, path: Path) -> Path:
    """One panel per observable: target, before and after with error bars."""
    plt = _pyplot()
    obs = doc["observables"]
    fig, axes = plt.subplots(1, len(obs), figsize=(4.5 * len(obs), 3.5), squeeze=False)
    for ax, (name, entry) in zip(axes[0], obs.items(), strict=True):
        if name in ("rdf", "vdos"):
            x = np.asarray(entry["r_angstrom" if name == "rdf" else "frequency_thz"])
            ax.plot(x, entry["target"], "k-", lw=2, label="target")
            for key, style in (("before", "C1--"), ("after", "C0-")):
                if key in entry:
                    y, e = np.asarray(entry[key]["value"]), np.asarray(entry[key]["error"])
                    ax.plot(x, y, style, label=key)
                    ax.fill_between(x, y - e, y + e, color=style[:2], alpha=0.3)
            ax.set(xlabel="r (Å)" if name == "rdf" else "frequency (THz)",
                   ylabel="g(r)" if name == "rdf" else "VDOS (1/THz)")
        else:
            labels, vals, errs = [], [], []
            for key in ("before", "after"):
                if key in entry:
                    labels.append(key)
                    vals.append(entry[key]["value"])
                    errs.append(entry[key]["error"])
            ax.errorbar(range(len(vals)), vals, yerr=errs, fmt="o", capsize=4)
            if entry.get("target") is not None:
                ax.axhline(entry["target"], color="k", label="target")
            ax.set_xticks(range(len(vals)), labels)
            ax.set(ylabel=f"value ({doc.get('units', {}).get(name, '')})")
        ax.set_title(name)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
