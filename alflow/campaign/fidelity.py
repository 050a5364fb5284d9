"""Multi-fidelity campaigns: a cheap oracle's stage, then the expensive oracle's.

With a ``pretrain`` section, generations ``0 .. P-1`` (``P = pretrain.generations``) are a
campaign on the cheap oracle: its labels (``pretrain.budget`` selected per generation), its
committee, its flows and its ΔF corrected to the cheap oracle. From generation ``P`` on, labels
are the campaign's ``oracle`` (the expensive one): generation ``P`` labels the user's structures
and the configurations the cheap committee is least sure of (exploring with the cheap stage's
committee and flows), its flows start from the cheap stage's last flows, and the committee
is carried to the expensive labels by ``pretrain.mode``:

- ``transfer``: the previous committee's weights fine-tuned on every expensive label
  (alflow.mlip.transfer.finetune_committee, reference energies shifted first);
- ``delta``: every configuration the expensive oracle labels is labelled by the cheap one too;
  a committee on every cheap label plus a committee of the difference (expensive − cheap) on
  the configurations both labelled (alflow.mlip.transfer.SumModel).

Both oracles' labels live in the one label store, told apart by method name (a label's key
hashes its method, so neither oracle ever labels a configuration twice). ΔF of the expensive
generations is corrected to the expensive oracle by reweighting, and every generation says
which oracle its ΔF is corrected to (``oracle``). The convergence rule sees the expensive
generations only, and ``convergence.max_labels`` counts the expensive oracle's labels.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from alflow.campaign.config import CampaignConfig
from alflow.campaign.decide import Decision, decide
from alflow.campaign.labels import in_training
from alflow.campaign.pause import pause_point
from alflow.campaign.system import bootstrap_positions
from alflow.dataset import LabelStore
from alflow.labelling import LabellerConfig
from alflow.seeds import step_seed
from alflow.select import SelectionConfig

if TYPE_CHECKING:
    from alflow.campaign.generation import Context
    from alflow.campaign.tasks import Result


def cheap_stage(cfg: CampaignConfig, g: int) -> bool:
    """Whether generation ``g`` is labelled by the cheap oracle."""
    return cfg.pretrain is not None and g < cfg.pretrain.generations


def expensive_stage(cfg: CampaignConfig, g: int) -> bool:
    """Whether generation ``g`` is an expensive generation of a multi-fidelity campaign."""
    return cfg.pretrain is not None and g >= cfg.pretrain.generations


def oracle_config(cfg: CampaignConfig, g: int) -> LabellerConfig:
    """The oracle labelling generation ``g`` (and correcting its ΔF)."""
    if cheap_stage(cfg, g):
        assert cfg.pretrain is not None
        return cfg.pretrain.labeller_config()
    return cfg.oracle.labeller_config()


def oracle_name(cfg: CampaignConfig, g: int) -> str:
    """The method name (e.g. ``pyscf:pbe/def2-svp``) of generation ``g``'s oracle."""
    return oracle_config(cfg, g).name


def method_filter(cfg: CampaignConfig, g: int) -> str | None:
    """The method name generation ``g``'s selection deduplicates against (None: one oracle,
    every stored label)."""
    return oracle_name(cfg, g) if cfg.pretrain is not None else None


def selection(cfg: CampaignConfig, g: int) -> SelectionConfig:
    """The selection settings of generation ``g`` (a cheap generation's own budget)."""
    if cheap_stage(cfg, g) and cfg.pretrain.budget is not None:  # type: ignore[union-attr]
        return cfg.selection.model_copy(update={"budget": cfg.pretrain.budget})  # type: ignore
    return cfg.selection


def init_flows(cfg: CampaignConfig, g: int, prev: dict[str, Any] | None
               ) -> dict[str, tuple[str, str]]:
    """The flows the first expensive generation's flows start from: per state the cheap
    stage's last flow (directory, checkpoint key), where it has one; else none."""
    if cfg.pretrain is None or g != cfg.pretrain.generations or not prev:
        return {}
    dirs, keys = prev.get("flow_dirs") or {}, prev.get("flow_keys") or {}
    return {s: (d, keys[s]) for s, d in dirs.items() if d and s in keys}


def first_labels(ctx: Context, g: int, pos: np.ndarray, tags: list[dict[str, Any]]
                 ) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """The first expensive generation also labels the user's structures (the minima: at least
    one label per state, whatever the selection finds)."""
    cfg = ctx.cfg
    if cfg.pretrain is None or g != cfg.pretrain.generations:
        return pos, tags
    x0, states = bootstrap_positions(ctx.system, 0, 1.0, step_seed(cfg.seed, "bootstrap"))
    extra = [{"state": s, "generation": g, "purpose": "bootstrap"} for s in states]
    if len(tags) == 0:
        return x0, extra
    return np.concatenate([x0, np.asarray(pos).reshape(-1, *x0.shape[1:])]), extra + tags


def label(ctx: Context, positions: np.ndarray, tags: list[dict[str, Any]], g: int) -> list:
    """Label ``positions`` with generation ``g``'s oracle (records of that oracle); in the
    expensive stage of ``delta`` mode the cheap oracle labels them first (the pairs the
    difference committee trains on)."""
    from alflow.campaign.generation import label_batch

    cfg = ctx.cfg
    if expensive_stage(cfg, g) and cfg.pretrain.mode == "delta":  # type: ignore[union-attr]
        label_batch(ctx, positions, tags, g, cfg.pretrain.labeller_config())  # type: ignore
    return label_batch(ctx, positions, tags, g, oracle_config(cfg, g))


def _records(store: LabelStore, method: str, g: int) -> list:
    return [r for r in store.records(status="ok", method=method) if in_training(r.tags, g)]


def _pos_key(positions: np.ndarray) -> bytes:
    return np.round(np.asarray(positions, dtype=float), 8).tobytes()


def training_pairs(store: LabelStore, expensive: str, cheap: str, g: int
                   ) -> tuple[list, list]:
    """The expensive labels training generation ``g`` that the cheap oracle labelled too, and
    those cheap labels, in the same order."""
    lo = {_pos_key(r.positions): r for r in _records(store, cheap, g)}
    hi = [r for r in _records(store, expensive, g) if _pos_key(r.positions) in lo]
    return hi, [lo[_pos_key(r.positions)] for r in hi]


def train(ctx: Context, g: int, prev: dict[str, Any], base: dict[str, Any]
          ) -> tuple[str, str]:
    """The committee of expensive generation ``g`` (``pretrain.mode``), warm-started from the
    previous generation's; returns its model directory and checkpoint key."""
    from alflow.campaign.generation import keys_hash

    cfg, tasks = ctx.cfg, ctx.tasks
    pre = cfg.pretrain
    assert pre is not None
    hi, lo = cfg.oracle.labeller_config().name, pre.labeller_config().name
    keys = sorted(r.key for r in _records(ctx.store, hi, g))
    inputs = {**base, "stage": "expensive", "mode": pre.mode, "mlip": cfg.mlip,
              "finetune": pre.finetune, "init": prev["model_key"], "data": keys_hash(keys)}
    seed = step_seed(cfg.seed, "train", g)
    out = str(ctx.run.models(g))
    if pre.mode == "transfer":
        h = tasks.submit("finetune", inputs, finetune_step, str(ctx.run.dataset), out,
                         {**cfg.mlip, **pre.finetune}, prev["model_dir"], seed, g,
                         str(ctx.run.root), hi, executor=cfg.executors["train"])
    else:
        inputs["cheap_data"] = keys_hash(sorted(r.key for r in _records(ctx.store, lo, g)))
        first = g == pre.generations  # the previous committee is the cheap stage's own
        base_init = prev["model_dir"] if first else str(Path(prev["model_dir"]) / "base")
        delta_init = None if first else str(Path(prev["model_dir"]) / "delta")
        h = tasks.submit("delta", inputs, delta_step, str(ctx.run.dataset), out, cfg.mlip,
                         pre.finetune, base_init, delta_init, seed, g, str(ctx.run.root),
                         hi, lo, executor=cfg.executors["train"])
    js, _ = tasks.result(h)
    return js["model_dir"], h.key


def finetune_step(dataset: str, out_dir: str, mlip: dict[str, Any], init_from: str,
                  seed: int, generation: int, run_root: str, method: str) -> Result:
    """Transfer learning (a worker's task): the committee ``init_from`` fine-tuned on every
    label of ``method`` that trains ``generation``."""
    from alflow.mlip import MLIPConfig
    from alflow.mlip.transfer import finetune_committee

    pause_point("train", generation, run_root)
    t0 = time.time()
    atoms = [r.to_atoms() for r in _records(LabelStore(dataset, create=False), method,
                                             generation)]
    path = finetune_committee(atoms, out_dir, MLIPConfig(**{"seed": seed, **mlip}), init_from)
    return {"model_dir": str(path), "n_train": len(atoms), "oracle": method,
            "_t0": t0, "_t1": time.time()}, {}


def delta_step(dataset: str, out_dir: str, mlip: dict[str, Any], finetune: dict[str, Any],
               base_init: str, delta_init: str | None, seed: int, generation: int,
               run_root: str, expensive: str, cheap: str) -> Result:
    """Δ-learning (a worker's task): a committee on every cheap label (``out_dir/base``,
    warm-started from ``base_init``), one on the difference expensive − cheap of the pairs
    (``out_dir/delta``), and ``out_dir/committee.json`` naming their sum."""
    from alflow.mlip import MLIPConfig, train_committee
    from alflow.mlip.transfer import difference_atoms, write_delta_committee

    pause_point("train", generation, run_root)
    t0 = time.time()
    store = LabelStore(dataset, create=False)
    cheap_atoms = [r.to_atoms() for r in _records(store, cheap, generation)]
    hi, lo = training_pairs(store, expensive, cheap, generation)
    out = Path(out_dir)
    base = train_committee(cheap_atoms, out / "base", MLIPConfig(**{"seed": seed, **mlip}),
                           init_from=Path(base_init))
    diff = difference_atoms([r.to_atoms() for r in hi], [r.to_atoms() for r in lo])
    delta = train_committee(diff, out / "delta",
                            MLIPConfig(**{"seed": seed, **mlip, **finetune}),
                            init_from=Path(delta_init) if delta_init else None)
    write_delta_committee(out, base, delta, {"oracle": expensive, "cheap_oracle": cheap,
                                             "n_pairs": len(hi)})
    return {"model_dir": str(out), "n_train": len(hi), "n_cheap": len(cheap_atoms),
            "oracle": expensive, "_t0": t0, "_t1": time.time()}, {}


def decision(cfg: CampaignConfig, g: int, history: list[dict[str, Any]],
             store: LabelStore) -> Decision:
    """The convergence rule (alflow.campaign.decide) after generation ``g``: with one oracle
    on every generation and every label; with a cheap stage, never during it, then on the
    expensive generations and the expensive oracle's labels."""
    if cfg.pretrain is None:
        return decide(history, cfg.convergence, cfg.kt_ev, len(store))
    if cheap_stage(cfg, g):
        return Decision(False, False, f"cheap stage ({oracle_name(cfg, g)}): generation "
                        f"{g + 1} of {cfg.pretrain.generations}")
    main = [h for h in history if h["generation"] >= cfg.pretrain.generations]
    hi = cfg.oracle.labeller_config().name
    n = store.summary()["by_method"].get(hi, {})
    return decide(main, cfg.convergence, cfg.kt_ev, n.get("ok", 0) + n.get("failed", 0))


__all__ = ["cheap_stage", "decision", "delta_step", "expensive_stage", "finetune_step",
           "first_labels", "init_flows", "label", "method_filter", "oracle_config",
           "oracle_name", "selection", "train", "training_pairs"]
