"""Build :class:`ReportData` from a campaign run directory (layout: docs/campaign.md).

Sources, each optional (a missing or unreadable one leaves its section empty and adds a
warning; it never stops the report):

- ``campaign.yaml``: name, temperature, states, oracle method (provenance);
- ``status.json``: ΔF history per generation (``value_ev``, ``error_ev``, ``corrected_ev``,
  ``corrected_error_ev``, per-state ``states.<name>.{ess, acceptance, rhat}``) and the final,
  oracle-corrected ΔF;
- ``events.jsonl``: ``generation_done`` (ΔF, correction, R-hat per generation), ``selected``
  (selection counts), ``task_start``/``task_done`` (wall time per executor);
- ``dataset.h5``: labels per generation (ok / failed; ``purpose: reweight`` marks the samples
  labelled for the oracle correction) and the oracle side of the parity plots;
- ``results/flows-*.json``: per-state sampler diagnostics (ESS, acceptance, R-hat);
- ``results/*.json`` holding ``fes``, and ``fes*.json`` files (``alflow.sampling.metad.FES``
  ``to_dict``: ``cv_names``, ``grid``, ``free_energy_ev``): free-energy surfaces along CVs;
- ``flows/genNNN/<state>/is_samples.npz`` (or, for older runs, the flow and ``models/genNNN``,
  resampled once and cached in ``temperatures/``) for ΔF at other temperatures, and the flows
  checkpoints' oracle-labelled samples for its correction to the oracle
  (alflow.observables.temperatures, alflow.observables.oracle_samples);
- ``spectra.h5``: TDDFT spectra per state (``alflow spectra RUN_DIR``);
- ``models/genNNN``: the last committee, evaluated on the labels for the parity plots.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from alflow.observables.report_data import (
    LOW_ESS_FRACTION,
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
)
from alflow.runlayout import RunLayout

log = logging.getLogger(__name__)


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def _read_lines(path: Path) -> list[dict[str, Any]]:
    out = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:  # a torn last line of a killed driver
                continue
    return out


def _num(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) else None


class _Loader:
    def __init__(self, run_dir: Path, temperatures: list[float] | None = None):
        self.run = RunLayout(run_dir)
        self.root = self.run.root
        self.temperatures = temperatures
        self.data = ReportData()
        self.config: dict[str, Any] = {}
        self.status: dict[str, Any] = {}
        self.events: list[dict[str, Any]] = []
        self._flow_rows: dict[tuple[int, str], FlowDiagnostics] = {}

    def section(self, name: str, fn) -> None:
        try:
            fn()
        except Exception as err:  # one unreadable source must not lose the report
            log.warning("report section %s: %s", name, err, exc_info=True)
            self.data.warnings.append(f"{name}: could not be read ({type(err).__name__}: "
                                      f"{err})")

    # -- sources --------------------------------------------------------------------------
    def basics(self) -> None:
        cfg_path = self.run.config
        if cfg_path.exists():
            self.config = yaml.safe_load(cfg_path.read_text()) or {}
        if self.run.status_json.exists():
            self.status = _read_json(self.run.status_json)
        self.events = _read_lines(self.run.events)
        d = self.data
        name = self.config.get("name") or self.status.get("name") or self.root.name
        d.title = f"alflow campaign: {name}"
        d.temperature_k = _num(self.config.get("temperature_k") or
                               self.status.get("temperature_k"))
        states = (self.config.get("system") or {}).get("states") or {}
        d.states = list(states)
        d.system = str((self.config.get("system") or {}).get("name", ""))
        oracle = self.config.get("oracle") or {}
        d.oracle = str((oracle.get("method") if isinstance(oracle, dict) else oracle) or "")
        st = self.status.get("state", "")
        d.status = st + (f" ({self.status['stop_reason']})" if self.status.get("stop_reason")
                         else "")
        if self.status.get("converged"):
            d.status += ", converged"
        gens = [e.get("generation") for e in self.events if e.get("event") == "generation_done"]
        d.generations = len(set(gens))

    def delta_f(self) -> None:
        final = self.status.get("delta_f") or {}
        ref = final.get("from") or (self.data.states[0] if self.data.states else "A")
        to = final.get("to") or (self.data.states[1] if len(self.data.states) > 1 else "B")
        by_gen: dict[int, dict[str, Any]] = {}
        for h in self.status.get("history") or []:
            by_gen[int(h["generation"])] = dict(h)
        for e in self.events:
            if e.get("event") == "generation_done" and e.get("generation") is not None:
                by_gen.setdefault(int(e["generation"]), {}).update(
                    {k: v for k, v in e.items() if v is not None})
        steps = self._flows_results()
        for g, h in sorted(by_gen.items()):
            value, err = _num(h.get("value_ev")), _num(h.get("error_ev"))
            dft = _num(h.get("dft_corrected_ev", h.get("corrected_ev")))
            dft_err = _num(h.get("dft_corrected_error_ev", h.get("corrected_error_ev")))
            corr, corr_err = _num(h.get("correction_ev")), _num(h.get("correction_error_ev"))
            if dft is None and value is not None and corr is not None:
                dft = value + corr
                dft_err = float(np.hypot(err or 0.0, corr_err or 0.0))
            # the campaign's answer (status.json delta_f) is the generation whose value it is
            is_final = bool(final) and value is not None and \
                _num(final.get("value_ev")) == value
            if is_final and final.get("dft_corrected_ev") is not None:
                dft = _num(final.get("dft_corrected_ev"))
                dft_err = _num(final.get("dft_corrected_error_ev")) or dft_err
            ess = {k: float(v) for k, v in (h.get("ess") or {}).items() if _num(v) is not None}
            ess_frac: dict[str, float] = {}
            per_state = h.get("states") if isinstance(h.get("states"), dict) else {}
            for s, info in per_state.items():
                if isinstance(info, dict):
                    if _num(info.get("ess")) is not None:
                        ess.setdefault(s, float(info["ess"]))
                    if _num(info.get("ess_fraction")) is not None:
                        ess_frac[s] = float(info["ess_fraction"])
                    self._flow_rows[(g, s)] = _flow_row(g, s, info)
            results = {s: {**steps.get((g, s), {}), **info} for s, info in per_state.items()
                       if isinstance(info, dict)}
            results = results or {s: r for (gg, s), r in steps.items() if gg == g}
            method = str(h.get("method") or _estimator(results))
            overlap = bool(h.get("overlap_warning", False)) or (
                value is not None and "BAR" not in method
                and any(f < LOW_ESS_FRACTION for f in ess_frac.values()))
            self.data.delta_f.append(DeltaFPoint(
                generation=g, state=to, reference=ref, delta_f_ev=value, error_ev=err,
                dft_delta_f_ev=dft, dft_error_ev=dft_err, correction_ev=corr,
                correction_error_ev=corr_err, method=method, ess=ess, ess_fraction=ess_frac,
                rhat=_num(h.get("rhat")), overlap_warning=overlap,
                temperature_k=self.data.temperature_k, final=is_final))
            if overlap:
                self.data.warnings.append(
                    f"generation {g}: poor overlap in the ΔF estimate (an effective sample "
                    f"size below {100 * LOW_ESS_FRACTION:g} % of the flow samples)")

    def _flows_results(self) -> dict[tuple[int, str], dict[str, Any]]:
        """(generation, state) -> the newest flows-step result in ``results/`` (it holds what
        status.json leaves out, e.g. which estimator gave F)."""
        found: dict[tuple[int, str], tuple[float, dict[str, Any]]] = {}
        if not self.run.results.is_dir():
            return {}
        for r in self.run.step_results("flows"):
            if r.generation is None or r.state is None:
                continue
            t = r.path.stat().st_mtime
            if (r.generation, r.state) not in found or t > found[(r.generation, r.state)][0]:
                found[(r.generation, r.state)] = (t, r.result)
        return {k: v for k, (_, v) in found.items()}

    def labels(self) -> None:
        counts: dict[int, LabelCounts] = {}

        def row(g: int) -> LabelCounts:
            return counts.setdefault(g, LabelCounts(generation=g))

        path = self.run.dataset
        if path.exists():
            from alflow.dataset import LabelStore

            for rec in LabelStore(path, create=False).records(status=None):
                g = rec.tags.get("generation")
                if g is None:
                    continue
                r = row(int(g))
                if rec.status != "ok":
                    r.failed += 1
                    continue
                r.labelled += 1
                if rec.tags.get("purpose") == "reweight":
                    r.correction += 1
        for e in self.events:
            if e.get("event") == "selected" and e.get("generation") is not None:
                row(int(e["generation"])).selected = int(e.get("selected", 0))
        for r in counts.values():  # generation 0 (bootstrap) has no selection event
            if r.selected == 0:
                r.selected = r.labelled - r.correction + r.failed
        self.data.labels = [counts[g] for g in sorted(counts)]

    def flows(self) -> None:
        res = self.run.results
        if not res.is_dir():
            return
        for (g, s), result in self._flows_results().items():
            self._flow_rows.setdefault((g, s), _flow_row(g, s, result))
        fes_files = sorted(res.glob("*.json")) + sorted(
            p for p in self.root.rglob("fes*.json") if "runinfo" not in p.parts)
        for path in fes_files:
            js = _read_json(path)
            if not isinstance(js, dict):
                continue
            fes = js.get("fes") if "fes" in js else js
            if not isinstance(fes, dict) or fes.get("free_energy_ev") is None:
                continue
            label = fes.get("label") or (path.stem.split("-")[0] if "fes" in js
                                          else str(path.relative_to(self.root).parent))
            if js.get("state"):
                label = f"{label} ({js['state']})"
            self.data.fes.append(FreeEnergySurface(
                label=label, cv_names=list(fes.get("cv_names") or ["CV"]),
                axes=fes.get("axes") or fes["grid"],
                free_energy_ev=np.array(fes["free_energy_ev"], dtype=float).tolist(),
                temperature_k=_num(fes.get("temperature_k"))))

    def flow_table(self) -> None:
        rows = [r for r in self._flow_rows.values()
                if any(v is not None for v in (r.ess, r.ess_fraction, r.acceptance, r.rhat))]
        self.data.flow = sorted(rows, key=lambda r: (r.generation, r.state))

    def temperature(self) -> None:
        if not self.run.flows_root.is_dir():
            return
        from alflow.campaign.flow_samples import campaign_samples
        from alflow.observables.oracle_samples import campaign_labelled
        from alflow.observables.temperatures import default_temperatures, delta_f_vs_temperature

        samples, info = campaign_samples(self.root)
        temps = self.temperatures or default_temperatures(info["temperature_k"])
        labelled = {}
        try:
            labelled = campaign_labelled(self.root, info["config"], info["generation"])
        except Exception as err:  # the MLIP-level values are still worth showing
            log.warning("oracle-labelled samples: %s", err, exc_info=True)
            self.data.warnings.append(f"ΔF vs temperature: the oracle-labelled samples could "
                                      f"not be read ({type(err).__name__}: {err})")
        pts = delta_f_vs_temperature(samples, info["from"], info["to"], temps,
                                     labelled=labelled)
        self.data.delta_f_temperature = [
            TemperatureDeltaF(generation=info["generation"], **p.to_dict()) for p in pts]
        poor = [f"{p.temperature_k:g}" for p in pts if p.poor_overlap]
        if poor:
            self.data.warnings.append(f"ΔF vs temperature: poor overlap (ESS below the "
                                      f"threshold) at {', '.join(poor)} K")
        poor = [f"{p.temperature_k:g}" for p in pts if p.dft_poor_overlap]
        if poor:
            self.data.warnings.append(f"ΔF vs temperature corrected to the oracle: poor "
                                      f"overlap (ESS of the labelled samples or of the flows "
                                      f"below the threshold) at {', '.join(poor)} K")

    def spectra(self) -> None:
        path = self.run.spectra
        if not path.exists():
            return
        from alflow.observables.spectra_campaign import state_spectra

        for state, method, avg in state_spectra(path, self.data.states):
            self.data.spectra.append(StateSpectrum(state=state, method=method, spectrum=avg))

    def parity(self) -> None:
        models = self.run.model_generations()
        path = self.run.dataset
        if not models or not path.exists():
            return
        gen = models[-1]
        model_dir = self.run.models(gen)
        try:
            from alflow.mlip import load_potential
        except ImportError:
            self.data.warnings.append("parity plots: alflow.mlip is not available")
            return
        from alflow.dataset import LabelStore

        by_state: dict[str, list] = defaultdict(list)
        for a in LabelStore(path, create=False).read_atoms(status="ok",
                                                           method=self._parity_method()):
            by_state[str(a.info.get("state", "all"))].append(a)
        for state, atoms in by_state.items():
            numbers = atoms[0].numbers
            atoms = [a for a in atoms if np.array_equal(a.numbers, numbers)]
            pot = load_potential(model_dir, numbers)
            x = np.stack([a.positions for a in atoms])
            e_m, f_m = [], []
            for i in range(0, len(x), 256):
                out = _evaluate(pot, x[i:i + 256])
                e_m.append(out[0])
                f_m.append(out[1])
            self.data.parity.append(Parity(
                state=state, generation=gen, n_atoms=len(numbers),
                energy_dft_ev=[a.get_potential_energy() for a in atoms],
                energy_model_ev=np.concatenate(e_m).tolist(),
                force_dft=np.concatenate([a.get_forces().ravel() for a in atoms]).tolist(),
                force_model=np.concatenate([f.ravel() for f in f_m]).tolist()))

    def _parity_method(self) -> str | None:
        """The labels the parity plots compare against: with a cheap oracle's stage
        (``pretrain``) the expensive oracle's only, else every label (None)."""
        oracle = self.config.get("oracle") or {}
        if not self.config.get("pretrain") or not isinstance(oracle, dict):
            return None
        from alflow.labelling import parse_method

        return parse_method(str(oracle.get("method")), **(oracle.get("options") or {})).name

    def provenance(self) -> None:
        import alflow

        versions: dict[str, str] = {"python": platform.python_version()}
        for mod in ("numpy", "torch", "pyscf", "ase", "parsl", "h5py"):
            try:
                versions[mod] = __import__(mod).__version__
            except Exception:  # noqa: BLE001 - an optional package may be absent
                continue
        oracle = self.config.get("oracle") or {}
        method = oracle.get("method") if isinstance(oracle, dict) else None
        executor_of: dict[str, str] = {}
        by_class: dict[str, ResourceUsage] = {}
        for e in self.events:
            if e.get("event") == "task_start":
                executor_of[str(e.get("key"))] = str(e.get("executor", "cpu"))
            elif e.get("event") == "task_done":
                cls = executor_of.get(str(e.get("key")), "cpu")
                r = by_class.setdefault(cls, ResourceUsage(resource_class=cls))
                r.tasks += 1
                r.wall_hours += float(e.get("seconds") or 0.0) / 3600.0
        cores = _cores_per_class(self.config)
        for r in by_class.values():
            r.core_hours = r.wall_hours * cores.get(r.resource_class, 1)
        site = self.config.get("site")
        self.data.provenance = Provenance(
            run_dir=str(self.root.resolve()),
            created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            alflow_version=getattr(alflow, "__version__", ""), versions=versions,
            dft_method=str(method or ""), config=self.config,
            resources=sorted(by_class.values(), key=lambda r: r.resource_class),
            site=site if isinstance(site, str) else str((site or {}).get("kind", "")))


def _estimator(per_state: dict[str, Any]) -> str:
    """How the flows step estimated the states' F, from what its results hold: BAR between
    flow samples and the MCMC walkers (``is_f_ev`` kept beside it), annealed or plain
    importance sampling of flow samples."""
    names = []
    for info in per_state.values():
        if not isinstance(info, dict):
            continue
        if info.get("is_f_ev") is not None or info.get("n_target") is not None:
            names.append("BAR")
        elif info.get("anneal_acceptance") is not None:
            names.append("annealed IS")
        else:
            names.append("IS")
    return " / ".join(dict.fromkeys(names))


def _flow_row(g: int, state: str, info: dict[str, Any]) -> FlowDiagnostics:
    return FlowDiagnostics(generation=g, state=state, ess=_num(info.get("ess")),
                           ess_fraction=_num(info.get("ess_fraction")),
                           pareto_k=_num(info.get("pareto_k")),
                           acceptance=_num(info.get("acceptance", info.get("flow_acceptance"))),
                           rhat=_num(info.get("rhat")))


def _cores_per_class(config: dict[str, Any]) -> dict[str, int]:
    """Cores one task of each executor uses, from the site config where it says so."""
    site = config.get("site")
    out: dict[str, int] = {}
    if isinstance(site, dict):
        for name, spec in (site.get("executors") or site.get("resources") or {}).items():
            if isinstance(spec, dict):
                n = spec.get("cores_per_task") or spec.get("cores_per_worker") or 1
                out[str(name)] = int(n)
    return out


def _evaluate(pot, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Energies (B,) eV and forces (B, N, 3) eV/Å of a batched Potential."""
    import torch

    from alflow.potential import evaluate

    out = evaluate(pot, torch.as_tensor(x, dtype=torch.float64))
    return (out.energy.detach().cpu().numpy().astype(float),
            out.forces.detach().cpu().numpy().astype(float))


def load_report_data(run_dir: str | Path,
                     temperatures: list[float] | None = None) -> ReportData:
    """Read everything a report shows from ``run_dir``; never raises for missing parts.
    ``temperatures`` (K): where ΔF is reweighted to (default: 0.8-1.25 × the campaign's)."""
    ld = _Loader(Path(run_dir), temperatures)
    for name in ("basics", "delta_f", "labels", "flows", "flow_table", "temperature",
                 "spectra", "parity", "provenance"):
        ld.section(name, getattr(ld, name))
    return ld.data
