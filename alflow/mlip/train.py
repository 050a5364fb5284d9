"""Training one committee member: energy+force loss, early stopping, LR schedule, DDP,
resume-after-kill checkpoints, and rollback on NaN/exploding loss.

Files of a member directory::

    best.pt       state_dict of the best-validation model (torch.load(weights_only=True))
    last.pt       resume checkpoint: model, optimizer, scheduler, epoch, counters, history
    member.json   metrics and history once the member is done

Loss of a global batch of C configurations with A atoms in all:
``L = w_E/C * sum_c ((E_c - E*_c)/N_c)^2 + w_F/(3A) * sum_{c,i,xyz} (F - F*)^2``.
Every rank computes its share of the global sums over its slice of the batch, normalised by
the GLOBAL counts; DDP averages gradients, so local losses are multiplied by the world size.
With this, N ranks give the same gradients as one process on the whole batch.
"""

from __future__ import annotations

import copy
import inspect
import json
import logging
import math
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from alflow.distributed import DistInfo, all_reduce_sum
from alflow.errors import AlflowError
from alflow.mlip.config import MLIPConfig
from alflow.mlip.data import Batcher, LabelledData, Targets
from alflow.mlip.model import build_model

log = logging.getLogger(__name__)

Fault = Callable[[int, Targets], float | None]
Progress = Callable[[str, int, int, dict], None]


class TrainingDiverged(AlflowError):
    """Training kept producing NaN/exploding losses after the allowed rollbacks."""


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file, fsync, then rename over ``path``."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_json(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def config_hash(cfg: MLIPConfig) -> str:
    """Hash of the settings that change the trained weights (device/parallel excluded)."""
    import hashlib

    d = cfg.model_dump(exclude={"device", "parallel", "committee_size", "inference_dtype"})
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def huber(r: torch.Tensor, delta: float) -> torch.Tensor:
    """Elementwise Huber function scaled to match r² below ``delta``: r² for |r| <= delta,
    delta (2|r| - delta) above (continuous with its first derivative)."""
    a = r.abs()
    return torch.where(a <= delta, r**2, delta * (2 * a - delta))


def batch_loss(model: torch.nn.Module, batch, tgt: Targets, cfg: MLIPConfig,
               n_cfg_global: int, n_atoms_global: float, create_graph: bool = True
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """This rank's share of the global loss, and detached sums (squared/absolute errors)."""
    e = model(batch)
    x = batch.positions
    (g,) = torch.autograd.grad(e.sum(), x, create_graph=create_graph)
    df = (-g - tgt.forces).reshape(-1)
    de = (e - tgt.energy) / tgt.n_atoms
    rho = (lambda r: r**2) if cfg.loss == "mse" else (lambda r: huber(r, cfg.huber_delta))
    loss = (cfg.energy_weight * rho(de).sum() / n_cfg_global
            + cfg.forces_weight * rho(df).sum() / (3.0 * n_atoms_global))
    sums = {"e_sq": (de.detach() ** 2).sum(), "e_abs": de.detach().abs().sum(),
            "f_sq": (df.detach() ** 2).sum(), "f_abs": df.detach().abs().sum()}
    return loss, sums


def ddp_wrap(model: torch.nn.Module, info: DistInfo) -> torch.nn.Module:
    """``model`` in DistributedDataParallel when ``info`` has several ranks, else itself."""
    if info.world_size <= 1:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    # buffers (basis frequencies, e0, scale) are constants: no broadcast before each
    # forward, so the gradient all-reduce is the only collective of a step
    sync = ("forward_sync_buffers" if "forward_sync_buffers"
            in inspect.signature(DDP).parameters else "broadcast_buffers")
    # a (1, F) weight's gradient has strides (1, 1), its bucket view (F, 1): the same
    # memory layout, which DDP reports as a mismatch
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view")
    dev = info.device
    # gradients are views into the all-reduce buckets: no copy in or out of them per step
    return DDP(model, device_ids=[dev.index] if dev.type == "cuda" else None,
               gradient_as_bucket_view=True, **{sync: False})


def make_optimizer(model: torch.nn.Module, cfg: MLIPConfig) -> torch.optim.Optimizer:
    """The training's AMSGrad Adam, fused into one kernel per step where torch offers it
    (CPU and CUDA): every DDP rank repeats the optimizer step, so its cost is work that
    data parallelism does not divide."""
    kw = {"lr": cfg.lr, "weight_decay": cfg.weight_decay, "amsgrad": True}
    try:
        return torch.optim.Adam(model.parameters(), fused=True, **kw)
    except (RuntimeError, TypeError, ValueError):  # a device or dtype without the kernel
        return torch.optim.Adam(model.parameters(), **kw)


def train_step(net: torch.nn.Module, model: torch.nn.Module, opt: torch.optim.Optimizer,
               batch, tgt: Targets, cfg: MLIPConfig, info: DistInfo, n_cfg: int,
               n_atoms: float, factor: float | None = None) -> tuple[torch.Tensor, bool]:
    """One optimizer step on this rank's share of a global batch of ``n_cfg``
    configurations (``n_atoms`` atoms): loss, backward (with DDP the step's only
    collective), gradient clipping, then the step unless the loss or gradient is not
    finite. Returns (this rank's loss, whether the step was taken)."""
    loss, _ = batch_loss(net, batch, tgt, cfg, n_cfg, n_atoms)
    if factor is not None:
        loss = loss * factor
    opt.zero_grad(set_to_none=True)
    (loss * info.world_size).backward()
    # the all-reduced gradient is the same on every rank: a non-finite loss on any rank
    # makes it non-finite, so every rank takes the same decision without another collective
    norm = torch.nn.utils.clip_grad_norm_(
        model.parameters(), cfg.clip_grad if cfg.clip_grad is not None else math.inf)
    ok = bool(torch.isfinite(norm)) and (info.world_size > 1 or bool(torch.isfinite(loss)))
    if ok:
        opt.step()
    return loss, ok


def _slices(idx: np.ndarray, batch_size: int) -> list[np.ndarray]:
    return [idx[k:k + batch_size] for k in range(0, len(idx), batch_size)]


def evaluate_loss(model: torch.nn.Module, batcher: Batcher, idx: np.ndarray, cfg: MLIPConfig,
                  info: DistInfo, n_atoms: np.ndarray) -> dict[str, float]:
    """Loss and per-atom energy / force errors over ``idx`` (split over ranks, all-reduced)."""
    mine = idx[info.rank::info.world_size]
    tot = torch.zeros(5, dtype=torch.float64, device=info.device)
    n_cfg, n_at = len(idx), float(n_atoms[idx].sum()) if len(idx) else 1.0
    for sl in _slices(mine, max(cfg.batch_size, 64)):
        batch, tgt = batcher(sl)
        loss, s = batch_loss(model, batch, tgt, cfg, n_cfg, n_at, create_graph=False)
        tot += torch.stack([loss.detach().double(), s["e_sq"].double(), s["e_abs"].double(),
                            s["f_sq"].double(), s["f_abs"].double()])
    tot = all_reduce_sum(tot).cpu().numpy()
    n_cfg = max(n_cfg, 1)
    return {"loss": float(tot[0]), "e_rmse_per_atom": math.sqrt(tot[1] / n_cfg),
            "e_mae_per_atom": tot[2] / n_cfg, "f_rmse": math.sqrt(tot[3] / (3 * n_at)),
            "f_mae": tot[4] / (3 * n_at)}


def _scheduler(opt: torch.optim.Optimizer, cfg: MLIPConfig):
    if cfg.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, factor=cfg.lr_factor, patience=cfg.lr_patience, min_lr=cfg.min_lr)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs,
                                                          eta_min=cfg.min_lr)
    return None


def _params_finite(model: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def _scale_lr(opt, sched, factor: float) -> float:
    for g in opt.param_groups:
        g["lr"] *= factor
    if sched is not None and hasattr(sched, "base_lrs"):
        sched.base_lrs = [b * factor for b in sched.base_lrs]
    if sched is not None and hasattr(sched, "min_lrs"):
        sched.min_lrs = [min(m, g["lr"]) for m, g in zip(sched.min_lrs, opt.param_groups,
                                                          strict=True)]
    return opt.param_groups[0]["lr"]


def train_member(info: DistInfo, data: LabelledData, train_idx: np.ndarray,
                 val_idx: np.ndarray, cfg: MLIPConfig, stats: dict, member_dir: str | Path,
                 seed: int, data_key: str, init_state: str | Path | None = None,
                 fault: Fault | None = None, progress: Progress | None = None) -> dict:
    """Train one member (this process = one DDP rank of ``info``); returns its metrics.

    ``init_state``: a best.pt to warm-start from. ``fault(step, targets)`` is a test hook that
    may corrupt the targets in place or return a factor multiplied into the loss.
    ``progress(member, epoch, epochs, val_metrics)`` is called after each epoch on rank 0.
    """
    member_dir = Path(member_dir)
    member_dir.mkdir(parents=True, exist_ok=True)
    dev, dtype = info.device, getattr(torch, cfg.dtype)
    model = build_model(cfg, stats, torch.Generator().manual_seed(seed)).to(dev)
    if init_state is not None:
        model.load_state_dict(torch.load(init_state, map_location=dev, weights_only=True))
    batcher = Batcher(data, stats["atomic_numbers"], model.e0.tolist(), cfg.cutoff, dtype, dev)
    n_atoms = np.array([len(z) for z in data.numbers], dtype=float)
    net = ddp_wrap(model, info)
    opt = make_optimizer(model, cfg)
    sched = _scheduler(opt, cfg)
    st: dict[str, Any] = {"epoch": 0, "best_val": math.inf, "bad_epochs": 0, "rollbacks": 0,
                          "step": 0, "history": [], "events": []}
    last, best = member_dir / "last.pt", member_dir / "best.pt"
    key = {"data": data_key, "config": config_hash(cfg), "seed": seed}
    if last.exists():
        ck = torch.load(last, map_location=dev, weights_only=True)
        if ck.get("key") == key:
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            if sched is not None and ck.get("scheduler") is not None:
                sched.load_state_dict(ck["scheduler"])
            st = ck["state"]
            st["events"].append({"resumed_at_epoch": st["epoch"]})
            log.info("%s: resumed at epoch %d", member_dir.name, st["epoch"])
        else:
            log.warning("%s: ignoring last.pt of other data/config", member_dir.name)
    good = _snapshot(model, opt, sched, st)
    if info.world_size > 1:  # ranks start together: no rank's set-up counts as step time
        torch.distributed.barrier()
    t_start = time.perf_counter()
    samples, step_s, step_cpu = 0, 0.0, 0.0
    while st["epoch"] < cfg.epochs and st["bad_epochs"] < cfg.patience:
        epoch = st["epoch"]
        perm = np.random.default_rng([seed, epoch]).permutation(train_idx)
        diverged = False
        net.train()
        for gb in _slices(perm, cfg.batch_size):
            n_cfg, n_at = len(gb), float(n_atoms[gb].sum())
            t_step, c_step = time.perf_counter(), time.process_time()
            batch, tgt = batcher(gb[info.rank::info.world_size])
            factor = fault(st["step"], tgt) if fault is not None else None
            _, ok = train_step(net, model, opt, batch, tgt, cfg, info, n_cfg, n_at, factor)
            if not ok:
                diverged, reason = True, "NaN/inf loss or gradient"
                break
            st["step"] += 1
            samples += n_cfg
            step_s += time.perf_counter() - t_step
            step_cpu += time.process_time() - c_step
        if not diverged:
            val = evaluate_loss(net, batcher, val_idx if len(val_idx) else train_idx, cfg, info,
                                n_atoms)
            if not math.isfinite(val["loss"]) or not _params_finite(model):
                diverged, reason = True, "non-finite validation loss or parameters"
            elif val["loss"] > cfg.explode_factor * st["best_val"]:
                diverged = True
                reason = (f"exploding validation loss {val['loss']:.3g} > "
                          f"{cfg.explode_factor:g} x best {st['best_val']:.3g}")
        if diverged:
            st = _rollback(model, opt, sched, good, st, cfg, member_dir.name, reason, info)
            good = _snapshot(model, opt, sched, st)
            continue
        lr = opt.param_groups[0]["lr"]
        st["history"].append({"epoch": epoch, "lr": lr, **{k: float(v) for k, v in val.items()}})
        if val["loss"] < st["best_val"]:
            st["best_val"], st["bad_epochs"] = val["loss"], 0
            if info.is_main:
                atomic_save(model.state_dict(), best)
        else:
            st["bad_epochs"] += 1
        if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
            sched.step(val["loss"])
        elif sched is not None:
            sched.step()
        st["epoch"] = epoch + 1
        good = _snapshot(model, opt, sched, st)
        if progress is not None and info.is_main:
            progress(member_dir.name, epoch, cfg.epochs, val)
        if info.is_main and (st["epoch"] % cfg.checkpoint_every == 0
                             or st["epoch"] >= cfg.epochs):
            atomic_save({"key": key, "model": model.state_dict(), "optimizer": opt.state_dict(),
                         "scheduler": sched.state_dict() if sched is not None else None,
                         "state": st}, last)
    t_loop = time.perf_counter() - t_start
    if info.world_size > 1:
        torch.distributed.barrier()
    if not best.exists():
        raise TrainingDiverged(f"{member_dir.name}: no finite model was produced")
    model.load_state_dict(torch.load(best, map_location=dev, weights_only=True))
    if cfg.polish_steps and not st.get("polished"):
        _polish(net, model, batcher, train_idx, val_idx, cfg, info, n_atoms, st, best)
        st["polished"] = True
        if info.is_main:
            atomic_save({"key": key, "model": model.state_dict(),
                         "optimizer": opt.state_dict(),
                         "scheduler": sched.state_dict() if sched is not None else None,
                         "state": st}, last)
    final = evaluate_loss(model, batcher, val_idx if len(val_idx) else train_idx, cfg, info,
                          n_atoms)
    out = {"member": member_dir.name, "seed": seed, "epochs": st["epoch"],
           "steps": st["step"], "best_val_loss": st["best_val"], "val": final,
           "rollbacks": st["rollbacks"], "events": st["events"], "n_train": int(len(train_idx)),
           "n_val": int(len(val_idx)), "seconds": time.perf_counter() - t_start,
           "samples_per_s": samples / max(step_s, 1e-9), "step_cpu_s": step_cpu,
           "train_loop_s": t_loop,
           "history": st["history"], "done": True}
    if info.is_main:
        write_json(out, member_dir / "member.json")
    return out


def _polish(net, model, batcher: Batcher, train_idx: np.ndarray, val_idx: np.ndarray,
            cfg: MLIPConfig, info: DistInfo, n_atoms: np.ndarray, st: dict, best: Path) -> None:
    """Full-batch L-BFGS from the best Adam model (``cfg.polish_steps`` iterations, strong
    Wolfe line search). Minibatch Adam stops at its gradient-noise floor; free energies need
    relative energies to ~0.1 kT, which a deterministic full-batch optimiser reaches on small
    label sets. The result replaces ``best`` only if its validation loss is lower and finite.
    """
    vidx = val_idx if len(val_idx) else train_idx
    before = evaluate_loss(net, batcher, vidx, cfg, info, n_atoms)["loss"]
    saved = copy.deepcopy(model.state_dict())
    mine = train_idx[info.rank::info.world_size]
    n_cfg, n_at = len(train_idx), float(n_atoms[train_idx].sum())
    chunks = [batcher(sl) for sl in _slices(mine, max(cfg.batch_size, 256))]
    opt = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=cfg.polish_steps,
                            history_size=50, tolerance_grad=1e-12, tolerance_change=1e-16,
                            line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=False)
        total = torch.zeros((), dtype=torch.float64, device=info.device)
        for batch, tgt in chunks:
            loss, _ = batch_loss(net, batch, tgt, cfg, n_cfg, n_at)
            (loss * info.world_size).backward()
            total += loss.detach().double()
        return all_reduce_sum(total.reshape(1)).reshape(())

    t0 = time.perf_counter()
    try:
        opt.step(closure)
        ok = _params_finite(model)
    except RuntimeError as err:  # a non-finite line search
        log.warning("L-BFGS polish failed (%s); keeping the Adam model", err)
        ok = False
    after = evaluate_loss(net, batcher, vidx, cfg, info, n_atoms)["loss"] if ok else math.inf
    keep = math.isfinite(after) and after < before
    if not keep:
        model.load_state_dict(saved)
    elif info.is_main:
        atomic_save(model.state_dict(), best)
    n_iter = opt.state[next(model.parameters())].get("n_iter", 0)
    st["events"].append({"polish": {"val_before": before, "val_after": after, "kept": keep,
                                    "iterations": n_iter,
                                    "seconds": round(time.perf_counter() - t0, 2)}})
    log.info("L-BFGS polish: validation loss %.3g -> %.3g (%s)", before, after,
             "kept" if keep else "discarded")


def _snapshot(model, opt, sched, st) -> dict:
    return copy.deepcopy({"model": model.state_dict(), "optimizer": opt.state_dict(),
                          "scheduler": sched.state_dict() if sched is not None else None,
                          "state": st})


def _rollback(model, opt, sched, good: dict, cur: dict, cfg: MLIPConfig, name: str,
              reason: str, info: DistInfo) -> dict:
    """Restore the last good state with the learning rate lowered; returns the new state."""
    st = copy.deepcopy(good["state"])
    n = cur["rollbacks"] + 1
    st["events"] = list(cur["events"])
    st["step"] = cur["step"] + 1  # the failed step counts (a transient fault is not replayed)
    if n > cfg.max_rollbacks:
        raise TrainingDiverged(f"{name}: {reason} after {cfg.max_rollbacks} rollbacks "
                               "(lower mlip.lr or check the labels)")
    model.load_state_dict(good["model"])
    opt.load_state_dict(good["optimizer"])
    if sched is not None and good["scheduler"] is not None:
        sched.load_state_dict(good["scheduler"])
    lr = _scale_lr(opt, sched, cfg.rollback_lr_factor)
    st["rollbacks"] = n
    st["events"].append({"rollback": n, "epoch": st["epoch"], "reason": reason, "new_lr": lr})
    if info.is_main:
        log.warning("%s: %s at epoch %d; rolled back to the last good state, lr -> %.3g",
                    name, reason, st["epoch"], lr)
    return st




# --------------------------------------------------------------------------- the committee

FORMAT = "alflow-mlip-committee"


def _member_job(job: dict, threads: int, device: str, member: int) -> dict:
    """One member in a worker process (members trained in parallel)."""
    from alflow.distributed import resolve_device

    torch.set_num_threads(threads)
    info = DistInfo(device=resolve_device(device, member))
    return train_member(info, **job)


def _ddp_member(info: DistInfo, job: dict) -> dict:
    return train_member(info, **job)


def _split(n: int, cfg: MLIPConfig) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(cfg.seed).permutation(n)
    n_val = int(round(cfg.valid_fraction * n))
    if cfg.valid_fraction > 0 and n_val == 0 and n >= 4:
        n_val = 1
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def _warm_start(init_from: Path | None, cfg: MLIPConfig, stats: dict) -> tuple[dict, list]:
    """Previous generation's stats and member weights if its architecture matches."""
    if init_from is None:
        return stats, []
    meta_path = Path(init_from) / "committee.json"
    if not meta_path.exists():
        log.warning("init_from %s has no committee.json; training from scratch", init_from)
        return stats, []
    prev = json.loads(meta_path.read_text())
    pcfg = MLIPConfig.model_validate(prev["config"])
    same = (pcfg.backend == cfg.backend and pcfg.cutoff == cfg.cutoff
            and getattr(pcfg, pcfg.backend) == getattr(cfg, cfg.backend)
            and set(stats["atomic_numbers"]) <= set(prev["stats"]["atomic_numbers"]))
    if not same:
        log.warning("init_from %s has another architecture or elements; training from scratch",
                    init_from)
        return stats, []
    return prev["stats"], [str(Path(init_from) / m / "best.pt") for m in prev["members"]]


def train_committee(atoms_list, out_dir: str | Path, config: MLIPConfig | None = None,
                    nproc: int = 1, init_from: str | Path | None = None,
                    fault: Fault | None = None, progress: Progress | None = None,
                    members: list[int] | None = None) -> Path:
    """Train a committee on labelled ASE Atoms; returns ``out_dir`` (load with :func:`load`).

    Members differ by seed and by the subset of the training set they see
    (``subset_fraction``); all share one validation split and the reference energies fitted
    on the training set. ``nproc`` > 1 trains members in parallel processes or each member
    with DDP (``config.parallel``); under torchrun every member uses the torchrun world.
    Re-running on the same data and config resumes unfinished members from their last
    checkpoint and returns at once when all are done. ``fault`` is a test hook (sequential
    training only; see :func:`train_member`), as is ``progress`` (called after each epoch).
    ``members``: train only these members (indices), e.g. one per task of a task graph; the
    committee (``committee.json``) is written once every member is trained, by the call that
    finds them all done.
    """
    from alflow.distributed import init_from_env, resolve_device, spawn, threads_per_process
    from alflow.errors import InputError
    from alflow.mlip.data import data_hash, fit_statistics, from_atoms

    cfg = config or MLIPConfig()
    data, dropped = from_atoms(list(atoms_list))
    if len(data) < 2:
        raise InputError(f"need at least 2 labelled configurations to train, got {len(data)}"
                         + (f" ({len(dropped)} dropped for bad labels)" if dropped else ""))
    key = data_hash(data)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    run_path = out / "run.json"
    run = {"data_hash": key, "config_hash": config_hash(cfg)}
    if run_path.exists():
        old = json.loads(run_path.read_text())
        if old.get("data_hash") != key or old.get("config_hash") != run["config_hash"]:
            raise InputError(f"{out} holds a committee of other data or settings; "
                             "choose another output directory or delete it")
        if (out / "committee.json").exists():
            return out
    torchrun = int(os.environ.get("WORLD_SIZE", "1")) > 1
    info = init_from_env(cfg.device) if torchrun else DistInfo(device=resolve_device(cfg.device))
    if info.is_main:
        write_json(run, run_path)
    train_idx, val_idx = _split(len(data), cfg)
    stats = fit_statistics(data.subset(train_idx), cfg.cutoff)
    stats, init_states = _warm_start(Path(init_from) if init_from else None, cfg, stats)
    jobs, names = [], []
    for k in range(cfg.committee_size):
        seed = cfg.seed * 1000 + 7919 * k + 1
        rng = np.random.default_rng(seed)
        n_sub = max(1, int(math.ceil(cfg.subset_fraction * len(train_idx))))
        sub = np.sort(rng.choice(train_idx, size=n_sub, replace=False))
        names.append(f"member_{k}")
        jobs.append({"data": data, "train_idx": sub, "val_idx": val_idx, "cfg": cfg,
                     "stats": stats, "member_dir": str(out / names[-1]), "seed": seed,
                     "data_key": key,
                     "init_state": init_states[k % len(init_states)] if init_states else None})
    done = [json.loads((out / n / "member.json").read_text())
            if (out / n / "member.json").exists() else None for n in names]
    todo = [k for k in range(len(jobs)) if done[k] is None
            and (members is None or k in members)]
    mode = cfg.parallel
    if mode == "auto":
        mode = "members" if len(todo) >= nproc else "ddp"
    t0 = time.perf_counter()
    probe: dict = {}
    ranks = None
    if torchrun or nproc <= 1 or not todo:
        for k in todo:
            done[k] = train_member(info, **jobs[k], fault=fault, progress=progress)
    elif mode == "members":
        from concurrent.futures import ProcessPoolExecutor

        import torch.multiprocessing as tmp

        workers = min(nproc, len(todo))
        threads = threads_per_process(workers)
        with ProcessPoolExecutor(workers, mp_context=tmp.get_context("spawn")) as pool:
            futs = {k: pool.submit(_member_job, jobs[k], threads, cfg.device, k) for k in todo}
            for k, fut in futs.items():
                done[k] = fut.result()
    else:
        ranks, threads = nproc, None
        if cfg.parallel == "auto":  # DDP only if it measures faster than one process
            from alflow.mlip.ranks import choose_ranks

            ranks, probe = choose_ranks(jobs[todo[0]], nproc, cfg.device)
            threads = 1 if ranks == 1 else None
        for k in todo:
            done[k] = spawn(_ddp_member, ranks, jobs[k], device=cfg.device, threads=threads)
    if not info.is_main or any(d is None for d in done):
        return out
    ranks_meta = {"ddp_ranks": ranks, "ddp_probe_samples_per_s": probe} if probe else {}
    from alflow.mlip.committee import Committee

    committee = Committee.load_members(out, names, cfg, stats, device="cpu")
    val = committee.metrics(data.subset(val_idx if len(val_idx) else train_idx))
    meta = {"format": FORMAT, "version": 1, "config": cfg.model_dump(), "stats": stats,
            "data_hash": key, "n_configs": len(data), "n_train": int(len(train_idx)),
            "n_val": int(len(val_idx)), "dropped": [list(d) for d in dropped],
            "members": names, "nproc": nproc, "parallel": mode, **ranks_meta,
            "init_from": str(init_from) if init_from else None,
            "train_seconds": time.perf_counter() - t0, "val": val,
            "member_metrics": [{k: v for k, v in d.items() if k != "history"} for d in done],
            "torch": torch.__version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    write_json(meta, out / "committee.json")
    log.info("committee of %d trained in %.1f s: val force MAE %.4f eV/Å", len(names),
             meta["train_seconds"], val["f_mae"])
    return out


__all__ = ["TrainingDiverged", "atomic_save", "batch_loss", "config_hash", "ddp_wrap",
           "evaluate_loss", "huber", "make_optimizer", "train_committee", "train_member",
           "train_step"]
