"""One generation of a campaign as a Parsl task graph.

::

    explore(state) x S  ──▶ select ──▶ label x M ──▶ train committee ──▶ flows(state) x S
      (gpu, parallel)      (driver)   (dft, parallel)     (gpu)           (gpu, parallel)
                                                                              │
    decide ◀── ΔF ± σ, corrected to the oracle ◀── label reweighting samples ◀┘

Generation 0 replaces explore+select by the user's structures and random displacements of
them. Each step is submitted as soon as its inputs exist; steps that do not depend on each
other (the states, the labels) run at once on their executors. The reweighting labels of a
state are submitted as soon as that state's flows step returns (a driver thread waits for
them), so they run while the other states' flows steps do. Every result is checkpointed
under the hash of its inputs (which include the hash of the dataset a step reads), so a
resumed generation reruns only what had not finished.
"""

from __future__ import annotations

import hashlib
import logging
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np

from alflow.campaign import fidelity, steps
from alflow.campaign.checkpoint import task_key
from alflow.campaign.config import CampaignConfig
from alflow.campaign.labels import clear_pending, in_training, label_task
from alflow.campaign.pause import pause_point
from alflow.campaign.rundir import EventLog, RunDir
from alflow.campaign.system import System, bootstrap_positions
from alflow.campaign.tasks import TaskFailed, Tasks, in_background
from alflow.dataset import LabelStore
from alflow.labelling import LabellerConfig, label_many
from alflow.progress import track
from alflow.seeds import step_seed
from alflow.select import select, select_boundary

log = logging.getLogger(__name__)


@dataclass
class Context:
    """Everything a generation needs; built by the runner."""

    cfg: CampaignConfig
    run: RunDir
    system: System
    store: LabelStore
    tasks: Tasks
    events: EventLog
    cfg_hash: str


def training_keys(store: LabelStore, generation: int) -> list[str]:
    """Keys of the labels the committee of ``generation`` trains on (see ``in_training``)."""
    return sorted(r.key for r in store.records(status=None) if in_training(r.tags, generation))


def keys_hash(keys: list[str]) -> str:
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()


def label_batch(ctx: Context, positions: np.ndarray, tags: list[dict[str, Any]],
                generation: int, lcfg: LabellerConfig | None = None) -> list:
    """Label configurations on the ``label`` executor with ``lcfg`` (default: the oracle);
    each label is stored as it arrives. Tasks lost to a worker failure are resubmitted up to
    ``retries`` times."""
    cfg = ctx.cfg
    lcfg = lcfg or cfg.oracle.labeller_config()
    executor = cfg.executors["label"]
    atoms = [ctx.system.atoms(x) for x in positions]
    if not atoms:
        return []
    run_root = str(ctx.run.root)
    done = [0]
    new = [0]

    on_executor = ctx.tasks.submit_fn(executor)

    def submit(fn, a, config, t, key):  # label_many's unit of work -> our journalled task
        return on_executor(label_task, a, config, t, key, run_root, cfg.retries)

    def on_result(i, rec, cached):
        done[0] += 1
        if not cached:
            new[0] += 1
            ctx.tasks.add_interval(rec.provenance.get("task_t0"), rec.provenance.get("task_t1"))
            ctx.events.emit("label", key=rec.key[:16], status=rec.status,
                            reason=rec.reason[:200], attempts=rec.provenance.get("attempts"),
                            **{"generation": generation, **rec.tags})
            if new[0] == 2:
                pause_point("label", generation, run_root)
        bar.set(done[0])

    todo_atoms, todo_tags = atoms, tags
    records: list = []
    purpose = tags[0].get("purpose", "") if tags else ""
    for attempt in range(cfg.retries + 1):
        done[0] = 0
        with track(f"gen {generation} {purpose} labels", len(todo_atoms), "label") as bar:
            recs = label_many(todo_atoms, lcfg, ctx.store, todo_tags, submit=submit,
                              on_result=on_result, commit_interval_s=0.0)
        clear_pending(ctx.run.pending, [r.key for r in recs])
        lost = [i for i, r in enumerate(recs) if r.provenance.get("lost")]
        records += [r for r in recs if not r.provenance.get("lost")]
        if not lost:
            break
        ctx.events.emit("label_tasks_lost", generation=generation, count=len(lost),
                        attempt=attempt)
        todo_atoms = [todo_atoms[i] for i in lost]
        todo_tags = [todo_tags[i] for i in lost]
    return records


def _existing_positions(store: LabelStore, generation: int,
                        method: str | None = None) -> np.ndarray | None:
    """Positions of every label (of ``method``; None: any) made before ``generation``
    (dedup against them)."""
    pos = [r.positions for r in store.records(status=None, method=method)
           if int(r.tags.get("generation", 0)) < generation]
    return np.array(pos) if pos else None


def run_generation(ctx: Context, g: int, prev: dict[str, Any] | None) -> dict[str, Any]:
    """Run generation ``g`` (``prev``: the previous generation's summary) and return its
    summary (model, flows, ΔF, corrections, counts)."""
    ctx.events.emit("generation_start", generation=g)
    base = {"config": ctx.cfg_hash, "generation": g}
    pos, tags, sel_counts = (_bootstrap(ctx) if g == 0 else
                             _explore_and_select(ctx, g, prev, base))
    pos, tags = fidelity.first_labels(ctx, g, pos, tags)
    recs = fidelity.label(ctx, pos, tags, g) if len(tags) else []
    model_dir, model_key = (fidelity.train(ctx, g, prev, base)
                            if prev and fidelity.expensive_stage(ctx.cfg, g)
                            else _train(ctx, g, prev, base))
    per_state, rw, flow_keys = _flows_and_corrections(ctx, g, model_dir, model_key, base,
                                                      fidelity.init_flows(ctx.cfg, g, prev))
    summary = steps.summarise(ctx.cfg, g, per_state, rw)
    summary.update(model_dir=model_dir, model_key=model_key,
                   oracle=fidelity.oracle_name(ctx.cfg, g),
                   flow_dirs={s: per_state[s].get("flow_dir") for s in per_state},
                   flow_keys=flow_keys, selection=sel_counts,
                   labels_failed_this_generation=sum(r.status != "ok" for r in recs),
                   labels_total=len(ctx.store))
    ctx.events.emit("generation_done", generation=g, **{k: summary.get(k) for k in (
        "value_ev", "error_ev", "correction_ev", "correction_error_ev", "rhat",
        "labels_total")})
    return summary


def _bootstrap(ctx: Context) -> tuple[np.ndarray, list[dict[str, Any]], dict[str, int]]:
    """Generation 0's configurations to label: the user's structures and random
    displacements of them (positions, tags, selection counts)."""
    b = ctx.cfg.exploration.bootstrap
    pos, states = bootstrap_positions(ctx.system, b.displaced, b.displacement,
                                      step_seed(ctx.cfg.seed, "bootstrap"))
    tags = [{"state": s, "generation": 0, "purpose": "bootstrap"} for s in states]
    return pos, tags, {"candidates": len(pos), "selected": len(pos)}


def _explore_and_select(ctx: Context, g: int, prev: dict[str, Any], base: dict[str, Any]
                        ) -> tuple[np.ndarray, list[dict[str, Any]], dict[str, int]]:
    """Explore every state at once on the previous committee (and flows), then select what
    to label (alflow.select; checkpointed): positions, tags, selection counts."""
    cfg, tasks = ctx.cfg, ctx.tasks
    names = list(cfg.system.states)
    handles = {s: tasks.submit("explore", {**base, "state": s, "model": prev["model_key"],
                                           "flows": prev.get("flow_keys", {}).get(s)},
                               steps.explore, prev["model_dir"],
                               prev.get("flow_dirs", {}).get(s), ctx.system, s,
                               cfg.exploration, cfg.temperature_k, cfg.selection.trust_upper,
                               step_seed(cfg.seed, "explore", g, names.index(s)),
                               cfg.system.states,
                               executor=cfg.executors["explore"]) for s in names}
    cand_pos, cand_fd, cand_state, cand_cv, cand_en, cand_flow = [], [], [], [], [], []
    cand_sd, cand_lq, cand_as = [], [], []
    for s, h in handles.items():
        try:
            _, arr = tasks.result(h)
        except TaskFailed as err:
            ctx.events.emit("state_skipped", generation=g, state=s, step="explore",
                            error=str(err))
            continue
        cand_pos.append(arr["positions"])
        cand_fd.append(arr["force_dev"])
        cand_cv.append(arr["cv"])
        cand_en.append(arr["energy"])
        m = len(arr["positions"])
        cand_flow.append(arr.get("from_flow", np.zeros(m, dtype=bool)))
        cand_sd.append(arr.get("energy_std", np.full(m, np.nan)))
        cand_lq.append(arr.get("log_q", np.full(m, np.nan)))
        cand_as.append(arr.get("assigned", np.full(m, -2, dtype=np.int64)))
        cand_state += [s] * len(arr["positions"])
    if not cand_pos:
        raise TaskFailed(f"generation {g}: exploration failed for every state")
    skey = task_key("select", {**base, "explore": [h.key for h in handles.values()]})
    stored = tasks.checkpoint.load("select", skey)
    if stored is None:
        allpos, fd = np.concatenate(cand_pos), np.concatenate(cand_fd)
        scfg = fidelity.selection(cfg, g)
        existing = _existing_positions(ctx.store, g, fidelity.method_filter(cfg, g))
        sel = select(allpos, fd, cand_state, scfg, cv=np.concatenate(cand_cv),
                     existing=existing, seed=step_seed(cfg.seed, "select", g),
                     from_flow=np.concatenate(cand_flow), energy=np.concatenate(cand_en),
                     kt_ev=cfg.kt_ev, energy_std=np.concatenate(cand_sd),
                     log_q=np.concatenate(cand_lq))
        indices, counts = list(sel.indices), dict(sel.counts)
        if scfg.strategy in ("uncertainty", "free_energy"):
            # the committee's state boundaries: MD frames it puts outside their own state
            assigned = np.concatenate(cand_as)
            md = np.flatnonzero(assigned >= -1)
            edge = select_boundary(
                allpos[md], [cand_state[i] for i in md],
                [names[k] if k >= 0 else None for k in assigned[md]], scfg.boundary_budget,
                scfg, force_dev=fd[md], existing=np.concatenate(
                    [*([] if existing is None else [existing]), allpos[sel.indices]]),
                seed=step_seed(cfg.seed, "select", g))
            indices += [int(md[i]) for i in edge.indices]
            counts.update(edge.counts, selected=len(indices))
        chosen = allpos[indices]
        chosen_states = [cand_state[i] for i in indices]
        tasks.checkpoint.save("select", skey, {"counts": counts, "states": chosen_states},
                              {"positions": chosen.reshape(-1, *allpos.shape[1:])})
        ctx.events.emit("selected", generation=g, **counts)
        stored = tasks.checkpoint.load("select", skey)
    js, arr = stored
    tags = [{"state": s, "generation": g, "purpose": "explore"} for s in js["states"]]
    return arr.get("positions", np.zeros((0,))), tags, js["counts"]


def _train(ctx: Context, g: int, prev: dict[str, Any] | None, base: dict[str, Any]
           ) -> tuple[str, str]:
    """Train this generation's committee, warm-started from the previous one: one task per
    member, all at once, then the committee from them. Returns its model directory and
    checkpoint key."""
    from alflow.mlip import MLIPConfig

    cfg, tasks = ctx.cfg, ctx.tasks
    inputs = {**base, "data": keys_hash(training_keys(ctx.store, g)), "mlip": cfg.mlip,
              "init": prev["model_key"] if prev else None}
    args = (str(ctx.run.dataset), str(ctx.run.models(g)), cfg.mlip,
            prev["model_dir"] if prev else None, step_seed(cfg.seed, "train", g), g,
            str(ctx.run.root))
    executor = cfg.executors["train"]
    if tasks.checkpoint.load("train", task_key("train", inputs)) is None:
        size = MLIPConfig(**cfg.mlip).committee_size
        members = [tasks.submit("train_member", {**inputs, "member": k}, steps.train_member,
                                *args, k, executor=executor) for k in range(size)]
        for h in members:
            tasks.result(h)
    h = tasks.submit("train", inputs, steps.train, *args, executor=executor)
    js, _ = tasks.result(h)
    return js["model_dir"], h.key


def _flows_and_corrections(ctx: Context, g: int, model_dir: str, model_key: str,
                           base: dict[str, Any], init: dict[str, tuple[str, str]] | None = None
                           ) -> tuple[dict[str, dict[str, Any]], dict[str, Any], dict[str, str]]:
    """Every state's flows step at once on the new committee; the oracle labels of a state's
    Boltzmann samples (its correction to the oracle) are submitted as soon as that state's
    step returns, so they run while other states' steps do. Returns the states' results (in
    the states' order), their oracle/model energies and their checkpoint keys. ``init``: per
    state a flow (directory, checkpoint key) whose weights the training starts from."""
    cfg, tasks = ctx.cfg, ctx.tasks
    names = list(cfg.system.states)
    sp = cfg.exploration.sampler
    md_for_flows = steps.seed_md_config(cfg)
    init = init or {}
    fh = {s: tasks.submit("flows", {**base, "state": s, "model": model_key,
                                    "sampler": sp.model_dump(),
                                    **({"init_flow": init[s][1]} if s in init else {})},
                          steps.flows, model_dir, ctx.system, s, str(ctx.run.flows(g, s)),
                          sp, md_for_flows, cfg.temperature_k, cfg.system.states,
                          cfg.estimate.reweight_samples, cfg.estimate.bootstrap,
                          step_seed(cfg.seed, "flows", g, names.index(s)),
                          **({"init_flow": init[s][0]} if s in init else {}),
                          executor=cfg.executors["flows"]) for s in names}
    per_state: dict[str, dict[str, Any]] = {}
    rw_jobs: dict[str, Future] = {}
    last: Future | None = None
    for s in tasks.as_completed(fh):
        try:
            js, arr = tasks.result(fh[s])
        except TaskFailed as err:
            ctx.events.emit("state_skipped", generation=g, state=s, step="flows",
                            error=str(err))
            continue
        per_state[s] = js
        # one reweighting batch after the other: a configuration two states share is
        # labelled once (the later batch finds it in the store)
        rw_jobs[s] = last = in_background(_reweight_state, ctx, g, s, arr, after=last)
    rw = {s: out for s, job in rw_jobs.items() if (out := job.result()) is not None}
    per_state = {s: per_state[s] for s in names if s in per_state}
    return per_state, rw, {s: fh[s].key for s in per_state}


def _reweight_state(ctx: Context, g: int, state: str, arrays: dict[str, np.ndarray]
                    ) -> dict[str, list[float]] | None:
    """Label the first ``reweight_samples`` model-Boltzmann samples of ``state`` (from its
    flows step's ``arrays``) with the oracle; return the oracle and model energies (eV) of
    those labelled ok, in sample order, or None when there is nothing to label."""
    n = ctx.cfg.estimate.reweight_samples
    x = arrays.get("reweight_positions")
    if n == 0 or x is None or len(x) == 0:
        return None
    x = x[:n]
    tags = [{"state": state, "generation": g, "purpose": "reweight"} for _ in range(len(x))]
    recs = fidelity.label(ctx, x, tags, g)
    by_key = {r.key: r for r in recs}
    from alflow.labelling import make_labeller

    keyer = make_labeller(fidelity.oracle_config(ctx.cfg, g))
    out: dict[str, list[float]] = {"oracle_ev": [], "model_ev": []}
    for i, xi in enumerate(x):
        rec = by_key.get(keyer.key(ctx.system.atoms(xi)))
        if rec is None or rec.status != "ok":
            continue
        out["oracle_ev"].append(rec.energy)
        out["model_ev"].append(float(arrays["reweight_model_energy"][i]))
    return out
