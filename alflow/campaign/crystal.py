"""The driver of a crystal-polymorph campaign (``kind: crystal``, alflow.campaign.crystal_config).

Every (phase, state point, method) is one task (:func:`apps.crystals.phase_point`): all are
submitted at once to the site's executor (the same site machinery and executor map as the
cluster campaigns, alflow.campaign.sites and alflow.campaign.submit) and checkpointed under
the hash of their inputs (alflow.campaign.tasks), so a resumed run finds every finished task
in ``results/`` and redoes nothing. A task that fails on every attempt is reported in
``status.json``; the others go on. The run directory is a campaign run directory
(alflow.runlayout) whose ``campaign.yaml`` has ``kind: crystal``.

``status.json`` (``alflow status``) holds the task counts and the ΔG tables of
:func:`delta_g_tables`; ``alflow report`` draws them (alflow.campaign.crystal_report).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from alflow.campaign.checkpoint import Checkpoint, atomic_write_text, task_key
from alflow.campaign.crystal_config import (
    CrystalCampaignConfig,
    is_crystal_config,
    load_crystal_campaign,
)
from alflow.campaign.rundir import (
    CONFIG_HEADER,
    DriverLock,
    EventLog,
    RunDir,
    create_run_dir,
    open_run_dir,
    read_lines,
    refuse_other_campaign,
)
from alflow.campaign.submit import Submit
from alflow.campaign.tasks import TaskFailed, Tasks
from alflow.config import read_yaml, validate_model
from alflow.errors import ConfigError

log = logging.getLogger(__name__)

TASK = "crystal_point"
PARETO_K_MAX = 0.7  # above it importance-sampling errors are unreliable (Vehtari et al.)
PHASE_SEED = {"fcc": 0, "hcp": 1000}


@dataclass
class Planned:
    """One task: ``spec`` (the task's input, hashed into ``key``) and its coordinates."""

    method: str
    phase: str
    temperature: float
    pressure: float
    spec: dict[str, Any]
    key: str

    @property
    def label(self) -> str:
        return f"{self.method}:{self.phase}@T={self.temperature:g},P={self.pressure:g}"


def plan(cfg: CrystalCampaignConfig) -> list[Planned]:
    """Every task of the campaign, state point by state point."""
    pot = asdict(cfg.potential.potential())
    settings = {"ti": asdict(cfg.ti.settings()), "flow": asdict(cfg.flows.settings())}
    out = []
    for t, p in cfg.state_points():
        for phase in cfg.phases:
            for method in cfg.methods():
                spec = {"method": method, "potential": pot, "phase": phase,
                        "n_atoms": cfg.n_atoms, "temperature": t, "pressure": p,
                        "settings": settings[method], "seed": cfg.seed + PHASE_SEED[phase]}
                out.append(Planned(method, phase, t, p, spec, task_key(TASK, spec)))
    return out


def config_hash(cfg: CrystalCampaignConfig) -> str:
    """Hash of what changes results (not where they run)."""
    data = cfg.model_dump(mode="json")
    for k in ("site", "executor", "retries"):
        data.pop(k, None)
    return task_key("crystal-campaign", data)


def is_crystal_yaml(path: str | Path) -> bool:
    return is_crystal_config(read_yaml(path))


def is_crystal_run(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a crystal campaign (its stored campaign.yaml)."""
    cfg = RunDir(run_dir).config
    try:
        return cfg.is_file() and is_crystal_config(read_yaml(cfg))
    except ConfigError:
        return False


def load_run_config(run_dir: str | Path) -> CrystalCampaignConfig:
    run = open_run_dir(run_dir)
    return validate_model(CrystalCampaignConfig, read_yaml(run.config), source=str(run.config))


# ------------------------------------------------------------------------------- results
def stored_results(cfg: CrystalCampaignConfig, run: RunDir) -> dict[str, dict[str, Any]]:
    """The finished tasks' results by task key."""
    ck = Checkpoint(run.results)
    out = {}
    for t in plan(cfg):
        got = ck.load(TASK, t.key)
        if got is not None:
            out[t.key] = got[0]
    return out


def _diff(res: Mapping[str, Any] | None, ref: Mapping[str, Any] | None) -> list[float] | None:
    if res is None or ref is None:
        return None
    return [res["g_per_atom"] - ref["g_per_atom"], math.hypot(res["err"], ref["err"])]


def delta_g_tables(cfg: CrystalCampaignConfig,
                   results: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """ΔG = G(phase) − G(reference) per atom ± err, by method, along both scans:
    ``{"temperature_scan": {"pressure": P, "points": [...]}, "pressure_scan": {...}}``;
    each point {"temperature", "pressure", "delta_g": {phase: {"ti": [v, err] | None,
    "flow": ...}}, "g": {method: {phase: [G/N, err, V/N]}}, "ess": {phase: flow ESS
    fraction}, "pareto_k": {phase: flow k̂}}."""
    by = {(t.method, t.phase, t.temperature, t.pressure): results.get(t.key) for t in plan(cfg)}

    def point(t: float, p: float) -> dict[str, Any]:
        dg = {ph: {m: _diff(by.get((m, ph, t, p)), by.get((m, cfg.reference, t, p)))
                   for m in cfg.methods()} for ph in cfg.phases if ph != cfg.reference}
        g = {m: {ph: [r["g_per_atom"], r["err"], r["volume_per_atom"]]
                 for ph in cfg.phases if (r := by.get((m, ph, t, p))) is not None}
             for m in cfg.methods()}
        flows = {ph: r["extra"] for ph in cfg.phases
                 if (r := by.get(("flow", ph, t, p))) is not None}
        return {"temperature": t, "pressure": p, "delta_g": dg, "g": g,
                "ess": {ph: x.get("ess_fraction") for ph, x in flows.items()},
                "pareto_k": {ph: x.get("pareto_k") for ph, x in flows.items()}}

    return {"reference": cfg.reference, "units": cfg.potential.units,
            "temperature_scan": {"pressure": cfg.pressure,
                                 "points": [point(t, cfg.pressure) for t in cfg.temperatures]},
            "pressure_scan": {"temperature": cfg.temperature,
                              "points": [point(cfg.temperature, p) for p in cfg.pressures]}}


# -------------------------------------------------------------------------------- status
def _status(cfg: CrystalCampaignConfig, run: RunDir, state: str,
            failed: Mapping[str, str]) -> dict[str, Any]:
    results = stored_results(cfg, run)
    total = len(plan(cfg))
    return {"kind": "crystal", "name": cfg.name, "run_dir": str(run.root), "state": state,
            "potential": cfg.potential.model_dump(exclude_none=True), "n_atoms": cfg.n_atoms,
            "phases": cfg.phases, "units": cfg.potential.units,
            "tasks": {"total": total, "done": len(results), "failed": len(failed)},
            "failed": dict(failed), "delta_g": delta_g_tables(cfg, results),
            "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def _write_status(run: RunDir, st: dict[str, Any]) -> dict[str, Any]:
    from alflow.campaign.checkpoint import to_jsonable

    st = to_jsonable(st)
    atomic_write_text(run.status_json, json.dumps(st, indent=1, sort_keys=True))
    atomic_write_text(run.status_txt, format_status(st))
    return st


def read_crystal_status(run_dir: str | Path) -> dict[str, Any]:
    """The status of a crystal run directory, recomputed from its checkpoints (live)."""
    from alflow.campaign.status import driver_alive, running_tasks

    run = open_run_dir(run_dir)
    cfg = load_run_config(run.root)
    stored: dict[str, Any] = {}
    with contextlib.suppress(OSError, json.JSONDecodeError):
        stored = json.loads(run.status_json.read_text())
    alive = driver_alive(run)
    state = stored.get("state", "interrupted")
    if state == "running" and not alive:
        state = "interrupted"
    st = _status(cfg, run, state, stored.get("failed") or {})
    st["running"] = running_tasks(run) if alive else []
    return st


def _fmt(v: list[float] | None, digits: int) -> str:
    return "—" if v is None else f"{v[0]:+.{digits}f} ± {v[1]:.{digits}f}"


def format_tables(tables: Mapping[str, Any], methods: list[str]) -> list[str]:
    """ΔG tables as text lines (status and report)."""
    u = tables["units"]
    digits = 5 if u["energy"] == "epsilon" else 6
    lines: list[str] = []
    flagged = False
    for scan, var, fixed, sym in (("temperature_scan", "temperature", "pressure", "T"),
                                  ("pressure_scan", "pressure", "temperature", "P")):
        sc = tables[scan]
        pts = sc["points"]
        if not pts:
            continue
        for phase in pts[0]["delta_g"]:
            lines.append(f"ΔG({phase} − {tables['reference']}) per atom [{u['energy']}] vs "
                         f"{var} [{u[var]}] at {fixed} {sc[fixed]:g} [{u[fixed]}]:")
            head = f"  {sym:>9}" + "".join(f"  {m:>26}" for m in methods)
            lines.append(head + ("  flow − TI" if len(methods) == 2 else ""))
            for pt in pts:
                d = pt["delta_g"][phase]
                row = f"  {pt[var]:>9g}" + "".join(f"  {_fmt(d.get(m), digits):>26}"
                                                   for m in methods)
                if len(methods) == 2 and d.get("ti") and d.get("flow"):
                    sig = math.hypot(d["ti"][1], d["flow"][1])
                    row += f"  {(d['flow'][0] - d['ti'][0]) / sig:+.1f}σ" if sig else ""
                heavy = [ph for ph, k in pt.get("pareto_k", {}).items()
                         if k is not None and k > PARETO_K_MAX]
                if heavy:
                    row += f"  (flow k̂ > {PARETO_K_MAX}: {', '.join(heavy)})"
                    flagged = True
                lines.append(row)
    if flagged:
        lines.append(f"k̂ > {PARETO_K_MAX}: the flow's importance weights are heavy-tailed and "
                     "its error bar is unreliable there; train longer (flows.train_steps)")
    return lines


def format_status(st: Mapping[str, Any]) -> str:
    """What ``alflow status`` prints for a crystal campaign."""
    t = st.get("tasks", {})
    lines = [f"crystal campaign {st.get('name')} in {st.get('run_dir')}",
             f"state: {st.get('state')}",
             f"potential: {st.get('potential')}, {st.get('n_atoms')} atoms, phases "
             f"{', '.join(st.get('phases', []))}",
             f"tasks: {t.get('done', 0)}/{t.get('total', 0)} done, {t.get('failed', 0)} failed"]
    lines += [f"failed: {k}: {v}" for k, v in (st.get("failed") or {}).items()]
    if st.get("running"):
        lines.append(f"submitted, running or queued: {len(st['running'])} task(s)")
    dg = st.get("delta_g")
    if dg:
        methods = sorted({m for sc in ("temperature_scan", "pressure_scan")
                          for pt in dg[sc]["points"] for d in pt["delta_g"].values()
                          for m in d}, key=["ti", "flow"].index)
        lines += format_tables(dg, methods)
    return "\n".join(lines) + "\n"


# -------------------------------------------------------------------------------- driver
@contextlib.contextmanager
def site_submitters(cfg: CrystalCampaignConfig, run: RunDir) -> Iterator[dict[str, Submit]]:
    """The executor map of the campaign's site inside its Parsl session
    (:func:`alflow.campaign.submit.site_session`, as the cluster campaigns')."""
    from alflow.campaign.submit import site_session

    def check(labels: set[str]) -> None:
        if cfg.executor not in labels:
            raise ConfigError(f"executor: label {cfg.executor!r} is not defined by site "
                              f"{cfg.site!r} (it has {', '.join(sorted(labels))})")

    with site_session(cfg.site, run.root, str(run.progress), check) as submitters:
        yield submitters


def _nothing_to_run(fn: Any, *args: Any, **kwargs: Any) -> Any:
    raise AssertionError("a stored task was submitted")


def start(campaign_yaml: str | Path, run_dir: str | Path, site: str | None = None,
          **kw: Any) -> dict[str, Any]:
    """``alflow run`` of a crystal campaign."""
    cfg = load_crystal_campaign(campaign_yaml, site=site)
    run = create_run_dir(run_dir)
    if run.config.exists():
        try:
            old = load_run_config(run.root)
        except ConfigError:
            old = None
        refuse_other_campaign(run.root, old.name if old else None,
                              old is not None and config_hash(old) == config_hash(cfg))
    return execute(cfg, run, **kw)


def resume(run_dir: str | Path, site: str | None = None, **kw: Any) -> dict[str, Any]:
    """``alflow resume`` of a crystal campaign."""
    cfg = load_run_config(run_dir)
    if site is not None:
        cfg.site = site
    return execute(cfg, open_run_dir(run_dir), **kw)


def execute(cfg: CrystalCampaignConfig, run: RunDir,
            submitters: Mapping[str, Submit] | None = None) -> dict[str, Any]:
    """Run every unfinished task; returns the final status. ``submitters``: an executor
    map to use instead of the site's (tests)."""
    from apps.crystals import phase_point

    open_run_dir(run.root)
    with DriverLock(run.lock):
        text = yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
        atomic_write_text(run.config, CONFIG_HEADER + "\n" + text)
        events = EventLog(run.events)
        resumed = any(e.get("event") == "run_start" for e in read_lines(run.events))
        events.emit("run_start", resumed=resumed, site=cfg.site, kind="crystal",
                    config=config_hash(cfg)[:16])
        failed: dict[str, str] = {}
        _write_status(run, _status(cfg, run, "running", failed))
        t0 = time.monotonic()
        checkpoint = Checkpoint(run.results)
        if submitters is None and all(checkpoint.has(TASK, t.key) for t in plan(cfg)):
            submitters = {cfg.executor: _nothing_to_run}  # every task is stored: no workers
        executors = (contextlib.nullcontext(submitters) if submitters is not None
                     else site_submitters(cfg, run))
        with executors as submit_map:
            tasks = Tasks(checkpoint, events, cfg.retries, submit_map)
            todo = {t.label: t for t in plan(cfg)}
            handles = {name: tasks.submit(TASK, t.spec, phase_point, t.spec,
                                          executor=cfg.executor) for name, t in todo.items()}
            for name in tasks.as_completed(handles):
                try:
                    r, _ = tasks.result(handles[name])
                    log.info("%s: G/N = %.6f ± %.6f", name, r["g_per_atom"], r["err"])
                except TaskFailed as err:
                    failed[name] = str(err)
                _write_status(run, _status(cfg, run, "running", failed))
        state = "failed" if failed else "finished"
        events.emit("run_end", state=state, failed=len(failed),
                    wall_s=round(time.monotonic() - t0, 3))
        return _write_status(run, _status(cfg, run, state, failed))


__all__ = ["TASK", "delta_g_tables", "execute", "format_status", "format_tables",
           "is_crystal_run", "is_crystal_yaml", "load_run_config", "plan",
           "read_crystal_status", "resume", "start", "stored_results"]
