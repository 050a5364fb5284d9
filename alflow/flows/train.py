"""Training a Boltzmann generator: forward KL on samples, reverse KL on the energy, a mixture.

Loss (per step) = w · (−mean log q(z_data)) + (1 − w) · mean[log q(z) + U(x(z))/kT − log J(z)]
with w = ``forward_weight``; z ~ q in the second term (reparameterised). Temperatures in K,
energies in eV, kB from ``ase.units``. Data parallel with ``torch.nn.parallel.
DistributedDataParallel`` when a process group is active (``alflow.distributed``): each rank
takes its shard of the samples and its own reverse-KL batch; gradients are averaged.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np
import torch
from ase.units import kB
from pydantic import Field
from torch import nn

from alflow import distributed
from alflow.config import StrictModel
from alflow.errors import InputError
from alflow.flows.generator import BoltzmannGenerator
from alflow.potential import Potential
from alflow.progress import track

log = logging.getLogger(__name__)


class TrainConfig(StrictModel):
    """Flow training options."""

    steps: int = Field(1500, ge=0, description="optimiser steps")
    batch_size: int = Field(256, ge=1, description="forward-KL batch (per rank)")
    reverse_batch: int = Field(256, ge=1, description="reverse-KL flow samples per step (per rank)")
    forward_weight: float = Field(1.0, ge=0, le=1, description="1: forward KL only, 0: reverse "
                                                                "KL only, between: a mixture")
    lr: float = Field(2e-3, gt=0)
    lr_final: float = Field(1e-4, gt=0, description="cosine-annealed to this")
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float = Field(10.0, gt=0)
    energy_clip_kt: float = Field(1e3, gt=0, description="reduced energies above this (kT, "
                                  "relative to the lowest seen) grow only logarithmically")
    seed: int = 0


class _Objective(nn.Module):
    """The loss as a module's forward, so that DistributedDataParallel can wrap it."""

    def __init__(self, bg: BoltzmannGenerator, potential: Potential | None, beta: float,
                 e_ref: float, clip: float):
        super().__init__()
        self.bg = bg
        self.__dict__["potential"] = potential  # never registered as a submodule
        self.beta, self.e_ref, self.clip = beta, e_ref, clip

    def forward(self, z: torch.Tensor | None, n_rev: int, w: float,
                generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        loss = torch.zeros((), dtype=torch.float64)
        info: dict[str, float] = {}
        if z is not None and w > 0:
            nll = -self.bg.flow.log_prob(z).mean()
            loss = loss + w * nll
            info["nll"] = float(nll.detach())
        if w < 1:
            zs, logq = self.bg.flow.rsample(n_rev, generator)
            x, logj = self.bg.coords.inverse(zs)
            u = self.beta * (self.potential.energy(x).double() - self.e_ref)
            u = torch.where(u > self.clip, self.clip + torch.log1p((u - self.clip).clamp_min(0)),
                            u)
            ok = self.bg.coords.valid(zs) & torch.isfinite(u)
            terms = torch.where(ok, logq + u - logj, torch.zeros_like(u))
            rkl = terms.sum() / ok.sum().clamp_min(1)
            loss = loss + (1 - w) * rkl
            info["reverse_kl"] = float(rkl.detach())
        return loss, info


def train_flow(bg: BoltzmannGenerator, samples: np.ndarray | None = None,
               potential: Potential | None = None, temperature_k: float | None = None,
               config: TrainConfig | dict[str, Any] | None = None,
               symmetrise: bool = True) -> dict[str, Any]:
    """Train ``bg`` in place; returns a history {"loss": [...], "seconds": s, ...}.

    samples (B, N, 3) Å: configurations of the state (MD, MCMC) for the forward KL; they are
    relabelled and symmetrised (see :meth:`BoltzmannGenerator.prepare`). potential and
    temperature_k (K) are needed when ``forward_weight < 1``. Under an initialised process
    group the step runs data-parallel (DDP) and each rank uses its shard of the samples.
    """
    cfg = config if isinstance(config, TrainConfig) else TrainConfig(**(config or {}))
    w = cfg.forward_weight
    if w > 0 and samples is None:
        raise InputError("train_flow: forward KL (forward_weight > 0) needs samples")
    if w < 1 and (potential is None or temperature_k is None):
        raise InputError("train_flow: reverse KL (forward_weight < 1) needs potential and "
                         "temperature_k")
    info = distributed.current()
    dev = next(bg.flow.parameters()).device
    z_data = None
    if samples is not None:
        z_data = bg.prepare(samples, symmetrise=symmetrise).to(dev)
        if info.world_size > 1:
            z_data = z_data[info.rank::info.world_size]
    beta = 1.0 / (kB * temperature_k) if temperature_k else 0.0
    e_ref = 0.0
    if potential is not None and w < 1:
        ref = torch.as_tensor(bg.coords.reference, dtype=torch.float64, device=dev)[None]
        e_ref = float(potential.energy(ref).double().item())
    obj = _Objective(bg, potential, beta, e_ref, cfg.energy_clip_kt)
    model: nn.Module = obj
    if info.world_size > 1:
        model = nn.parallel.DistributedDataParallel(
            obj, device_ids=[dev.index] if dev.type == "cuda" else None)
    opt = torch.optim.Adam(bg.flow.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, cfg.steps), cfg.lr_final)
    g = torch.Generator(device=dev).manual_seed(cfg.seed * 1000 + info.rank)
    t0 = time.perf_counter()
    hist: dict[str, Any] = {"loss": []}
    bg.flow.train()
    with track("flow training", cfg.steps, "step", enabled=info.is_main) as bar:
        for step in range(cfg.steps):
            zb = None
            if z_data is not None:
                idx = torch.randint(0, len(z_data), (min(cfg.batch_size, len(z_data)),),
                                    generator=g, device=dev)
                zb = z_data[idx]
            loss, terms = model(zb, cfg.reverse_batch, w, g)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(bg.flow.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            if not math.isfinite(float(loss.detach())):
                raise FloatingPointError(f"flow training diverged at step {step}")
            if step % 50 == 0 or step == cfg.steps - 1:
                hist["loss"].append(float(loss.detach()))
                log.debug("step %d loss %.4f %s", step, float(loss.detach()), terms)
            bar.advance()
    bg.flow.eval()
    hist["seconds"] = time.perf_counter() - t0
    hist["steps"] = cfg.steps
    return hist


def _ddp_worker(info: distributed.DistInfo, bg_dir: str, samples: np.ndarray | None,
                potential: Potential | None, temperature_k: float | None,
                cfg: dict[str, Any]) -> dict[str, Any]:
    bg = BoltzmannGenerator.load(bg_dir, device=str(info.device))
    hist = train_flow(bg, samples, potential, temperature_k, cfg)
    # DDP keeps the replicas identical: record the spread of a parameter checksum over ranks
    check = torch.stack([p.detach().double().sum() for p in bg.flow.parameters()]).sum()
    if info.world_size > 1:
        import torch.distributed as dist

        gathered = [torch.zeros_like(check) for _ in range(info.world_size)]
        dist.all_gather(gathered, check)
        hist["rank_param_spread"] = float(max(gathered) - min(gathered))
    hist["world_size"] = info.world_size
    if info.is_main:
        bg.save(bg_dir)
    return hist


def train_flow_distributed(bg: BoltzmannGenerator, out_dir: str, nproc: int,
                           samples: np.ndarray | None = None,
                           potential: Potential | None = None,
                           temperature_k: float | None = None,
                           config: TrainConfig | dict[str, Any] | None = None,
                           device: str = "cpu") -> tuple[BoltzmannGenerator, dict[str, Any]]:
    """Train with DDP in ``nproc`` fresh processes (gloo on CPU, nccl on CUDA); the trained
    generator is saved to ``out_dir`` and returned. ``potential`` must be picklable."""
    cfg = config.model_dump() if isinstance(config, TrainConfig) else dict(config or {})
    bg.save(out_dir)
    hist = distributed.spawn(_ddp_worker, nproc, str(out_dir), samples, potential,
                             temperature_k, cfg, device=device)
    return BoltzmannGenerator.load(out_dir), hist


__all__ = ["TrainConfig", "train_flow", "train_flow_distributed"]
