"""The campaign driver: the generation loop, resume, the lock, events, status and progress.

``run_campaign(cfg, run_dir)`` starts (or continues) a campaign in ``run_dir``; ``resume``
reads the resolved configuration stored there and continues. Resuming is simply running
again: every finished step is found in the checkpoint store by the hash of its inputs and
every finished label in the label store, so only unfinished work is redone.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from alflow.campaign.checkpoint import Checkpoint, atomic_write_text, task_key
from alflow.campaign.config import CampaignConfig, check_executors, load_campaign
from alflow.campaign.fidelity import decision
from alflow.campaign.generation import Context, run_generation
from alflow.campaign.labels import ingest_pending
from alflow.campaign.pause import pause_point
from alflow.campaign.rundir import (
    CONFIG_HEADER,
    DriverLock,
    EventLog,
    RunDir,
    create_run_dir,
    open_run_dir,
    oracle_calls,
    read_lines,
    refuse_other_campaign,
    write_status,
)
from alflow.campaign.status import (
    by_oracle,
    latest_model_dir,
    public_status,
    stored_status,
    warnings,
)
from alflow.campaign.submit import Submit, inline_submitters, site_session
from alflow.campaign.system import build_system
from alflow.campaign.tasks import TaskFailed, Tasks
from alflow.config import read_yaml, validate_model
from alflow.dataset import LabelStore
from alflow.errors import AlflowError, InputError
from alflow.progress import Board, ConsoleSink, set_sink

log = logging.getLogger(__name__)


def config_hash(cfg: CampaignConfig) -> str:
    """Hash of everything that changes results (not the site: where work runs is not what)."""
    data = cfg.model_dump(mode="json", by_alias=True)
    data.pop("site", None)
    data.pop("executors", None)
    if data.get("pretrain") is None:  # one oracle: the hash of configs written before it
        data.pop("pretrain", None)
    return task_key("campaign", data)


def save_config(cfg: CampaignConfig, run: RunDir) -> None:
    text = yaml.safe_dump(cfg.model_dump(mode="json", by_alias=True), sort_keys=False)
    atomic_write_text(run.config, CONFIG_HEADER + "\n" + text)


def load_run_config(run_dir: str | Path) -> CampaignConfig:
    """The resolved configuration stored in a run directory alflow created."""
    run = open_run_dir(run_dir)
    if not run.config.exists():
        raise InputError(f"{run.root}: the run directory has no campaign.yaml (it is written "
                         "when a run starts); start it again with alflow run CAMPAIGN.yaml "
                         f"--dir {run.root}")
    return validate_model(CampaignConfig, read_yaml(run.config), source=str(run.config))


def _history_entry(summary: dict[str, Any]) -> dict[str, Any]:
    keys = ("generation", "value_ev", "error_ev", "correction_ev", "correction_error_ev",
            "corrected_ev", "corrected_error_ev", "oracle", "rhat", "labels_total", "states")
    return {k: summary.get(k) for k in keys}


def _delta_f_text(summary: dict[str, Any], kt_ev: float) -> str:
    """One line for the log: ΔF on the potential and corrected to the oracle, in kT and meV."""
    v, e = summary.get("value_ev"), summary.get("error_ev")
    if v is None or e is None:
        return "no ΔF"
    out = f"ΔF {v / kt_ev:.3f} ± {e / kt_ev:.3f} kT ({1e3 * v:.3f} ± {1e3 * e:.3f} meV)"
    c, ce = summary.get("corrected_ev"), summary.get("corrected_error_ev")
    if c is not None and ce is not None:
        out += f", corrected to the oracle {c / kt_ev:.3f} ± {ce / kt_ev:.3f} kT"
        if summary.get("oracle"):
            out += f" ({summary['oracle']})"
    return out


def build_status(cfg: CampaignConfig, run: RunDir, store: LabelStore | None,
                 history: list[dict[str, Any]], state: str, converged: bool,
                 stop_reason: str = "", running: list[str] | None = None) -> dict[str, Any]:
    full = store.summary() if store is not None else {}
    summ = full.get("by_status", {})
    last = next((h for h in reversed(history) if h.get("value_ev") is not None), None)
    df = cfg.system.delta_f
    delta = {"from": df.from_, "to": df.to, "value_ev": None, "error_ev": None,
             "dft_corrected_ev": None, "dft_corrected_error_ev": None, "corrected_to": None}
    if last:
        delta.update(value_ev=last["value_ev"], error_ev=last["error_ev"],
                     corrected_to=last.get("oracle") if last.get("corrected_ev") is not None
                     else None,
                     dft_corrected_ev=last.get("corrected_ev"),
                     dft_corrected_error_ev=last.get("corrected_error_ev"))
    return public_status({
        "name": cfg.name, "run_dir": str(run.root), "state": state,
        "generation": history[-1]["generation"] if history else None,
        "converged": converged, "stop_reason": stop_reason,
        "labels": {"ok": summ.get("ok", 0), "failed": summ.get("failed", 0)},
        "labels_by_oracle": by_oracle(full),
        "oracle_calls": oracle_calls(run), "temperature_k": cfg.temperature_k,
        "kt_ev": cfg.kt_ev, "delta_f": delta, "history": history,
        "running": running or [], "warnings": warnings(run),
        "model_dir": latest_model_dir(run),
        "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})


@contextlib.contextmanager
def _executors(cfg: CampaignConfig, run: RunDir, inline: bool, progress_dir: str,
               warn: Callable[[str], None]) -> Iterator[dict[str, Submit]]:
    """The executor map of the campaign's site (:mod:`alflow.campaign.submit`) inside its
    Parsl session, its workers' progress bars in ``progress_dir``; ``inline``: every step
    called in the driver. On a ``slurm`` site with the driver in a Slurm job, a
    :class:`~alflow.campaign.blocks.BlockWatch` reports blocks that cannot start beside the
    driver's job through ``warn``."""
    if inline:
        yield inline_submitters(cfg.executors.values())
        return
    with site_session(cfg.site, run.root, progress_dir,
                      lambda labels: check_executors(cfg, labels), warn) as submitters:
        yield submitters


def _warner(run: RunDir, events: EventLog) -> Callable[[str], None]:
    """Report a warning in the driver's log, the event log and status.json."""

    def warn(message: str) -> None:
        log.warning(message)
        events.emit("warning", kind="blocks_pending", message=message)
        with contextlib.suppress(AlflowError):
            st = stored_status(run)
            write_status(run, public_status({**st, "warnings": warnings(run)}))

    return warn


def start(campaign_yaml: str | Path, run_dir: str | Path, site: str | None = None,
          **kw: Any) -> dict[str, Any]:
    """``alflow run``: validate the campaign, create ``run_dir`` and run it."""
    cfg = load_campaign(campaign_yaml, site=site)
    run = create_run_dir(run_dir)
    if run.config.exists():
        old = load_run_config(run.root)
        refuse_other_campaign(run.root, old.name, config_hash(old) == config_hash(cfg))
    return execute(cfg, run, **kw)


def resume(run_dir: str | Path, site: str | None = None, **kw: Any) -> dict[str, Any]:
    """``alflow resume``: continue the campaign stored in ``run_dir``."""
    cfg = load_run_config(run_dir)
    if site is not None:
        cfg.site = site
    return execute(cfg, open_run_dir(run_dir), **kw)


def execute(cfg: CampaignConfig, run: RunDir, inline: bool = False,
            progress: bool | None = None,
            submitters: Mapping[str, Submit] | None = None) -> dict[str, Any]:
    """Run generations until the convergence rule stops the campaign; returns the status.
    ``run`` is a directory alflow created (``create_run_dir`` / ``open_run_dir``);
    ``submitters``: an executor map to run the steps with instead of the site's (tests)."""
    open_run_dir(run.root)  # never write into a directory without the marker
    with DriverLock(run.lock):
        save_config(cfg, run)
        events = EventLog(run.events)
        resumed = any(e.get("event") == "run_start" for e in read_lines(run.events))
        events.emit("run_start", resumed=resumed, site=cfg.site, config=config_hash(cfg)[:16])
        store = LabelStore(run.dataset)
        n = ingest_pending(store, run.pending)
        if n:
            events.emit("labels_recovered", count=n)
        system = build_system(cfg)
        checkpoint = Checkpoint(run.results)
        history: list[dict[str, Any]] = []
        status = build_status(cfg, run, store, history, "running", False)
        write_status(run, status)
        t_start = time.monotonic()
        console = ConsoleSink(progress)
        set_sink(console)  # the driver's own bars (labels; steps run inline)
        shutil.rmtree(run.progress, ignore_errors=True)  # bars of a dead run's workers
        executors = (contextlib.nullcontext(submitters) if submitters is not None else
                     _executors(cfg, run, inline, str(run.progress), _warner(run, events)))
        with Board(run.progress, console), executors as submit_map:
            tasks = Tasks(checkpoint, events, cfg.retries, submit_map)
            ctx = Context(cfg, run, system, store, tasks, events, config_hash(cfg))
            prev = None
            g = 0
            while True:
                log.info("generation %d", g)
                t_gen, epoch_gen = time.monotonic(), time.time()
                try:
                    summary = run_generation(ctx, g, prev)
                except TaskFailed as err:
                    events.emit("campaign_failed", generation=g, error=str(err))
                    status = build_status(cfg, run, store, history, "failed", False, str(err))
                    write_status(run, status)
                    raise
                wall = time.monotonic() - t_gen
                summary["wall_s"] = wall
                # time inside tasks (union over parallel tasks): wall - task_s is the overhead
                summary["task_s"] = tasks.busy_seconds(epoch_gen, time.time())
                history.append(_history_entry(summary))
                d = decision(cfg, g, history, store)
                events.emit("decision", generation=g, stop=d.stop, converged=d.converged,
                            reason=d.reason, wall_s=round(wall, 3),
                            task_s=round(summary["task_s"], 3))
                status = build_status(cfg, run, store, history,
                                      "finished" if d.stop else "running", d.converged,
                                      d.reason if d.stop else "")
                write_status(run, status)
                log.info("generation %d: %s; %s", g, _delta_f_text(summary, cfg.kt_ev),
                         d.reason)
                if d.stop:
                    break
                pause_point("generation", g, run.root)
                prev = summary
                g += 1
        events.emit("run_end", converged=status["converged"], reason=status["stop_reason"],
                    wall_s=round(time.monotonic() - t_start, 3))
        return status
