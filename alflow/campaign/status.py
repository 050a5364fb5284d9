"""A campaign's status: its public schema (:class:`CampaignStatus`, what ``status.json`` and
``alflow status --json`` hold) and reading it from a run directory (no lock needed; safe while
running).

``status.json`` is written by the driver after every generation; the live figures (labels,
oracle calls, running tasks, warnings) are recomputed from the label store, the oracle journal
and the event log, and a campaign whose driver is gone without finishing is reported
``interrupted``. Energies in eV, temperatures in K.
"""

from __future__ import annotations

import fcntl
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from alflow.campaign.rundir import RunDir, oracle_calls, read_lines
from alflow.config import format_validation_error
from alflow.errors import InputError


class _Public(BaseModel):
    """Only the fields a model names are published; internal keys (``_t0``...) are dropped."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class CorrectionStatus(_Public):
    """A state's correction from the potential to the oracle (alflow.estimate.Reweighting)."""

    correction_ev: float | None = None
    error_ev: float | None = None
    ess: float | None = None
    ess_fraction: float | None = None
    n: int | None = None
    method: str | None = None
    reliable: bool | None = None
    pareto_k: float | None = None
    bias_ev: float | None = None  # the finite-sample bias the estimate removed


class StateStatus(_Public):
    """One state's flows step of one generation."""

    f_ev: float | None = None
    err_ev: float | None = None
    ess_fraction: float | None = None
    flow_ess_fraction: float | None = None
    pareto_k: float | None = None
    inside_fraction: float | None = None
    symmetry_number: int | None = None
    rhat: float | None = Field(None, description="max over the MCMC's CVs (MD energy without)")
    md_rhat: float | None = None
    mcmc_rhat: float | None = None
    acceptance: float | None = Field(None, description="flow moves of the MCMC")
    local_acceptance: float | None = Field(None, description="MALA moves")
    flow_dir: str | None = None
    md_frames: int | None = None
    md_frames_used: int | None = None
    md_seconds: float | None = None
    train_seconds: float | None = None
    mcmc_seconds: float | None = None
    estimate_seconds: float | None = None
    correction: CorrectionStatus | None = None


class GenerationStatus(_Public):
    """ΔF of one generation: on the potential, the oracle correction and the corrected value."""

    generation: int
    value_ev: float | None = None
    error_ev: float | None = None
    correction_ev: float | None = None
    correction_error_ev: float | None = None
    corrected_ev: float | None = None
    corrected_error_ev: float | None = None
    oracle: str | None = Field(None, description="the oracle this generation labels with and "
                               "corrects ΔF to (method name)")
    rhat: float | None = None
    labels_total: int | None = None
    states: dict[str, StateStatus] = Field(default_factory=dict)


class DeltaFStatus(_Public):
    from_: str = Field(alias="from")
    to: str
    value_ev: float | None = None
    error_ev: float | None = None
    dft_corrected_ev: float | None = None
    dft_corrected_error_ev: float | None = None
    corrected_to: str | None = Field(None, description="the oracle (method name) "
                                     "dft_corrected_ev is corrected to")


class LabelCounts(_Public):
    ok: int = 0
    failed: int = 0


class CampaignStatus(_Public):
    """``status.json`` and ``alflow status --json`` (documented in docs/campaign.md)."""

    name: str
    run_dir: str
    state: Literal["running", "finished", "failed", "interrupted"]
    generation: int | None = None
    converged: bool = False
    stop_reason: str = ""
    labels: LabelCounts = Field(default_factory=LabelCounts)
    labels_by_oracle: dict[str, LabelCounts] = Field(
        default_factory=dict, description="the same per oracle (method name): a multi-"
        "fidelity campaign's cheap and expensive labels")
    oracle_calls: int = 0
    temperature_k: float
    kt_ev: float
    delta_f: DeltaFStatus
    history: list[GenerationStatus] = Field(default_factory=list)
    running: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list, description="what the driver noticed "
                                "and the user should act on (e.g. blocks that cannot start)")
    model_dir: str | None = Field(None, description="the latest finished committee "
                                  "(alflow.mlip.load(model_dir) is its ASE calculator)")
    updated: str = ""


def public_status(status: dict[str, Any]) -> dict[str, Any]:
    """``status`` reduced to the public schema (JSON types, NaN as null)."""
    from alflow.campaign.checkpoint import to_jsonable

    return CampaignStatus.model_validate(to_jsonable(status)).model_dump(mode="json",
                                                                         by_alias=True)


def driver_alive(run: RunDir) -> bool:
    """Whether a driver holds the run directory's lock."""
    if not run.lock.exists():
        return False
    with open(run.lock) as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
    return False


def running_tasks(run: RunDir) -> list[str]:
    """Tasks started since the last run_start that have not finished or failed for good."""
    open_: dict[str, str] = {}
    for e in read_lines(run.events):
        ev = e.get("event")
        if ev == "run_start":
            open_.clear()
        elif ev == "task_start":
            open_[e["key"]] = e["task"]
        elif ev in ("task_done", "task_cached"):
            open_.pop(e.get("key"), None)
    return sorted(open_.values())


def warnings(run: RunDir) -> list[str]:
    """Messages of ``warning`` events since the last run start (one per kind)."""
    out: dict[str, str] = {}
    for e in read_lines(run.events):
        if e.get("event") == "run_start":
            out.clear()
        elif e.get("event") == "warning":
            out[str(e.get("kind"))] = str(e.get("message"))
    return list(out.values())


def stored_status(run: RunDir) -> dict[str, Any]:
    """status.json as written by the driver; InputError if it is missing or damaged."""
    if not run.status_json.exists():
        raise InputError(f"{run.root} is not a campaign run directory (no status.json)")
    fix = ("the driver rewrites it: `alflow resume " + str(run.root) + "` (or wait for the "
           "running driver's next generation)")
    try:
        data = json.loads(run.status_json.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{run.status_json}: damaged (not complete JSON: {err}); {fix}") \
            from None
    try:
        return CampaignStatus.model_validate(data).model_dump(mode="json", by_alias=True)
    except ValidationError as err:
        raise InputError(format_validation_error(err, str(run.status_json))
                         + f"\n  {fix}") from None


def by_oracle(summary: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Label counts per method name from a LabelStore summary."""
    return {name: {"ok": m.get("ok", 0), "failed": m.get("failed", 0)}
            for name, m in summary.get("by_method", {}).items()}


def latest_model_dir(run: RunDir) -> str | None:
    """The directory of the newest generation's finished committee (its committee.json is
    written last), or None."""
    for g in reversed(run.model_generations()):
        if (run.models(g) / "committee.json").exists():
            return str(run.models(g))
    return None


def read_status(run_dir: str | Path) -> dict[str, Any]:
    """The public status of a run directory, with live counts (schema: CampaignStatus)."""
    run = RunDir(run_dir)
    st = stored_status(run)
    if run.dataset.exists():
        from alflow.dataset import LabelStore

        summary = LabelStore(run.dataset, create=False).summary()
        by = summary["by_status"]
        st["labels"] = {"ok": by.get("ok", 0), "failed": by.get("failed", 0)}
        st["labels_by_oracle"] = by_oracle(summary)
    st["oracle_calls"] = oracle_calls(run)
    alive = driver_alive(run)
    if st.get("state") == "running" and not alive:
        st["state"] = "interrupted"
        st["stop_reason"] = "the driver stopped before finishing; run 'alflow resume'"
    st["running"] = running_tasks(run) if alive else []
    st["warnings"] = warnings(run)
    st["model_dir"] = latest_model_dir(run)
    return public_status(st)
