"""How many DDP ranks train a member fastest here and now: measured, not assumed.

DDP gives the one-process weights exactly (see :mod:`alflow.mlip.train`), so the number of
ranks changes only the speed. Two ranks pay when each has both work enough between
all-reduces and a core of its own at every one of them; on a node shared with other jobs,
or with small batches, one process is faster. :func:`choose_ranks` times a few training
steps of a throwaway model both ways (fresh processes, as the training uses) and keeps the
faster.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch

from alflow.distributed import DistInfo, all_reduce_sum, spawn
from alflow.mlip.data import Batcher
from alflow.mlip.model import build_model
from alflow.mlip.train import _slices, ddp_wrap, make_optimizer, train_step

log = logging.getLogger(__name__)


def probe_rate(info: DistInfo, job: dict, steps: int, warmup: int = 2) -> float:
    """Training samples/s of ``steps`` training steps (:func:`~alflow.mlip.train.train_step`,
    after ``warmup`` steps) of a fresh model
    on the data of a member ``job`` (the keyword arguments of ``train_member``); nothing is
    written. Every rank returns the rate of the ranks' mean step time (steps are in
    lockstep)."""
    cfg, stats = job["cfg"], job["stats"]
    model = build_model(cfg, stats, torch.Generator().manual_seed(job["seed"])).to(info.device)
    net = ddp_wrap(model, info)
    batcher = Batcher(job["data"], stats["atomic_numbers"], model.e0.tolist(), cfg.cutoff,
                      getattr(torch, cfg.dtype), info.device)
    n_atoms = np.array([len(z) for z in job["data"].numbers], dtype=float)
    opt = make_optimizer(model, cfg)
    perm = np.random.default_rng(job["seed"]).permutation(job["train_idx"])
    batches = _slices(perm, cfg.batch_size)[:warmup + steps]
    if info.world_size > 1:
        torch.distributed.barrier()
    seconds, samples = 0.0, 0
    for k, gb in enumerate(batches):
        t0 = time.perf_counter()
        batch, tgt = batcher(gb[info.rank::info.world_size])
        train_step(net, model, opt, batch, tgt, cfg, info, len(gb), float(n_atoms[gb].sum()))
        if k >= min(warmup, len(batches) - 1):
            seconds += time.perf_counter() - t0
            samples += len(gb)
    mean = all_reduce_sum(torch.tensor([seconds], dtype=torch.float64,
                                       device=info.device)) / info.world_size
    return samples / max(float(mean), 1e-9)


def choose_ranks(job: dict, nproc: int, device: str = "cpu", steps: int = 16
                 ) -> tuple[int, dict[str, float]]:
    """``nproc`` if DDP over ``nproc`` ranks (cores / nproc threads each) measures faster
    than one process with one thread, else 1; and the measured samples/s by rank count."""
    n_batches = len(_slices(np.asarray(job["train_idx"]), job["cfg"].batch_size))
    if nproc <= 1 or n_batches < 3:
        return max(nproc, 1), {}
    rates = {str(nproc): spawn(probe_rate, nproc, job, steps, device=device),
             "1": spawn(probe_rate, 1, job, steps, device=device, threads=1)}
    ranks = nproc if rates[str(nproc)] > rates["1"] else 1
    log.info("DDP probe: %s samples/s by ranks; training with %d", rates, ranks)
    return ranks, {k: round(v, 1) for k, v in rates.items()}


__all__ = ["choose_ranks", "probe_rate"]
