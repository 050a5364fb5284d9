"""A step's draws are a pure function of its seed: steps that run at once in threads of one
process (the ``local-threads`` site: the states' flows steps, the committee's members) give,
to the last bit, what they give alone, whatever the other threads draw from torch's global
random generator meanwhile."""

from __future__ import annotations

import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from flow_targets import HarmonicFrame
from test_mlip import emt_frames

from alflow.distributed import DistInfo
from alflow.flows.pipeline import StateSamplerConfig, state_free_energy
from alflow.mlip import MLIPConfig
from alflow.mlip.data import fit_statistics, from_atoms
from alflow.mlip.model import build_model
from alflow.mlip.train import train_member
from alflow.rng import drawing_from
from alflow.states import CVStates

T = 50.0
SEEDS = (101, 102)
# Student-t base (gamma draws) on frame coordinates with a dihedral (von Mises draws),
# adaptive MCMC, retraining and BAR: every stage of the flows step draws
FLOWS = {"flow": {"layers": 2, "hidden": 8, "base_dof": 6.0}, "train": {"steps": 8},
         "walkers": 8, "retrain_steps": 4, "samples": 100, "bootstrap": 10, "estimator": "bar",
         "mcmc_config": {"iterations": 3, "adapt_iterations": 1, "local_steps": 2,
                         "global_steps": 1, "train_every": 2, "train": {"steps": 2}}}


@pytest.fixture(scope="module")
def frame():
    target = HarmonicFrame(4, 0.06, T, seed=0)
    return target, target.exact_samples(120, seed=1)


def _flows_step(frame, seed: int, start: threading.Barrier | None = None):
    """One state's flows step: (F eV, the trained flow's parameters (P,))."""
    target, seeds = frame
    if start is not None:
        start.wait()
    everywhere = CVStates({"s": (lambda x: torch.zeros(len(x)), -1.0, 1.0)})
    res = state_free_energy(target, "s", everywhere, target.reference, target.numbers, T,
                            seeds, StateSamplerConfig(**FLOWS), seed=seed)
    return res.free_energy.f_ev, torch.cat([p.detach().flatten()
                                            for p in res.generator.flow.parameters()])


def _neighbour(stop: threading.Event) -> None:
    """A step beside the others that reseeds and draws from torch's global generator."""
    k = 0
    while not stop.is_set():
        torch.manual_seed(k)
        torch.randn(64)
        k += 1


def _in_threads(step, seeds, rounds: int = 3) -> list[dict]:
    """``step(seed, barrier)`` for every seed in threads started together, beside a neighbour
    that draws from the global generator, ``rounds`` times; the interpreter switches threads
    every few microseconds, so that the threads' torch calls interleave finely."""
    out = []
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        for _ in range(rounds):
            out.append(_one_round(step, seeds))
    finally:
        sys.setswitchinterval(switch)
    return out


def _one_round(step, seeds) -> dict:
    """One round of :func:`_in_threads`: {seed: step's result}."""
    start = threading.Barrier(len(seeds) + 1, timeout=120)
    stop = threading.Event()

    def neighbour(start=start, stop=stop):
        start.wait()
        _neighbour(stop)

    with ThreadPoolExecutor(len(seeds) + 1) as pool:
        noise = pool.submit(neighbour)
        futs = {s: pool.submit(step, s, start) for s in seeds}
        try:
            return {s: f.result() for s, f in futs.items()}
        finally:
            stop.set()
            noise.result()


def test_a_flows_step_neither_reads_nor_writes_the_global_generator(frame):
    """The step leaves torch's global generator as it found it, and its result does not
    depend on that generator's state."""
    torch.manual_seed(7)
    before = torch.get_rng_state()
    f_a, p_a = _flows_step(frame, SEEDS[0])
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(8)
    f_b, p_b = _flows_step(frame, SEEDS[0])
    assert f_a == f_b and torch.equal(p_a, p_b)
    f_c, p_c = _flows_step(frame, SEEDS[1])
    assert f_c != f_a and not torch.equal(p_c, p_a)  # the seed does matter


def test_flows_steps_in_threads_match_each_run_alone(frame):
    alone = {s: _flows_step(frame, s) for s in SEEDS}
    for got in _in_threads(lambda s, b: _flows_step(frame, s, b), SEEDS):
        for s in SEEDS:
            assert got[s][0] == alone[s][0]
            assert torch.equal(got[s][1], alone[s][1])


@pytest.fixture(scope="module")
def member_job():
    data, _ = from_atoms(emt_frames(16, seed=4))
    cfg = MLIPConfig(dtype="float64", batch_size=8, epochs=2, builtin={"features": 8})
    stats = fit_statistics(data, cfg.cutoff)
    return dict(data=data, train_idx=np.arange(12), val_idx=np.arange(12, 16), cfg=cfg,
                stats=stats, data_key="k")


def _member(job, root, seed: int, start: threading.Barrier | None = None, tag: str = "alone"):
    if start is not None:
        start.wait()
    out = train_member(DistInfo(), **job, member_dir=root / f"{tag}-{seed}", seed=seed)
    state = torch.load(root / f"{tag}-{seed}" / "best.pt", weights_only=True)
    return out["best_val_loss"], torch.cat([v.flatten() for v in state.values()
                                       if v.is_floating_point()])


def test_committee_members_in_threads_match_each_trained_alone(member_job, tmp_path):
    seeds = (11, 12)
    torch.manual_seed(5)
    before = torch.get_rng_state()
    alone = {s: _member(member_job, tmp_path, s) for s in seeds}
    assert torch.equal(torch.get_rng_state(), before)
    rounds = iter(range(100))
    for got in _in_threads(lambda s, b: _member(member_job, tmp_path, s, b,
                                                f"r{next(rounds)}"), seeds):
        for s in seeds:
            assert got[s][0] == alone[s][0]
            assert torch.equal(got[s][1], alone[s][1])


def test_drawing_from_routes_construction_draws_of_this_thread_only():
    """Module construction under :func:`drawing_from` draws from the given generator: the
    same weights for the same seed, the global generator untouched."""
    def build(seed):
        with drawing_from(torch.Generator().manual_seed(seed)):
            m = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Embedding(4, 2))
            extra = torch.randn(3), torch.empty(2).uniform_(), torch.rand_like(torch.zeros(2))
        return torch.cat([*(p.detach().flatten() for p in m.parameters()), *extra])

    torch.manual_seed(3)
    before = torch.get_rng_state()
    a = build(1)
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(a, build(1)) and not torch.equal(a, build(2))
    with drawing_from(torch.Generator()), pytest.raises(RuntimeError, match="dropout"):
        torch.nn.functional.dropout(torch.ones(4), 0.5)


def test_build_model_draws_from_its_generator(member_job):
    cfg, stats = member_job["cfg"], member_job["stats"]
    torch.manual_seed(0)
    a = build_model(cfg, stats, torch.Generator().manual_seed(1)).state_dict()
    torch.manual_seed(1)
    b = build_model(cfg, stats, torch.Generator().manual_seed(1)).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
