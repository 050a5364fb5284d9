"""DDP (2 gloo processes) equals one process on the same global batch; resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from alflow.distributed import DistInfo, spawn
from alflow.mlip import MLIPConfig, train_committee
from alflow.mlip.data import fit_statistics, from_atoms
from alflow.mlip.model import build_model
from alflow.mlip.train import _ddp_member, train_member

sys.path.insert(0, str(Path(__file__).parent))
from test_mlip import emt_frames  # noqa: E402


def test_ddp_two_gloo_ranks_match_one_process(tmp_path):
    data, _ = from_atoms(emt_frames(28, seed=4))
    # 32 channels: with these 24 configurations and 2 epochs the polish lowers the
    # validation loss (and is kept, so it is compared); with 16 it stops after 2 iterations
    cfg = MLIPConfig(dtype="float64", batch_size=8, epochs=2, lr=2e-3, polish_steps=4,
                     builtin={"features": 32})
    stats = fit_statistics(data, cfg.cutoff)
    job = dict(data=data, train_idx=np.arange(24), val_idx=np.arange(24, 28), cfg=cfg,
               stats=stats, seed=11, data_key="k")
    one = train_member(DistInfo(), **job, member_dir=tmp_path / "one")
    two = spawn(_ddp_member, 2, {**job, "member_dir": str(tmp_path / "two")})
    assert one["steps"] == two["steps"] == 6
    polish = [[e["polish"] for e in r["events"] if "polish" in e] for r in (one, two)]
    assert polish[0][0]["kept"] and polish[1][0]["kept"]  # the L-BFGS step ran on both
    a = torch.load(tmp_path / "one" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "two" / "last.pt", weights_only=True)["model"]
    init = build_model(cfg, stats, torch.Generator().manual_seed(11)).state_dict()
    moved = max(float((a[k] - init[k]).abs().max()) for k in a if a[k].is_floating_point())
    assert moved > 1e-4  # training did change the parameters
    diff = max(float((a[k] - b[k]).abs().max()) for k in a if a[k].is_floating_point())
    assert diff < 1e-10, diff
    assert abs(one["val"]["loss"] - two["val"]["loss"]) < 1e-10


def _nan_forces_on_rank1_at_step4(step, tgt):
    """Fault hook: a NaN label in rank 1's slice of step 4 (in one process: in the batch)."""
    dist = torch.distributed
    rank = dist.get_rank() if dist.is_initialized() else 1
    if step == 4 and rank == 1:
        tgt.forces[0, 0, 0] = float("nan")


def test_nan_on_one_rank_rolls_back_every_rank_as_one_process_does(tmp_path):
    data, _ = from_atoms(emt_frames(28, seed=4))
    cfg = MLIPConfig(dtype="float64", batch_size=8, epochs=3, lr=2e-3)
    job = dict(data=data, train_idx=np.arange(24), val_idx=np.arange(24, 28), cfg=cfg,
               stats=fit_statistics(data, cfg.cutoff), seed=5, data_key="k",
               fault=_nan_forces_on_rank1_at_step4)
    one = train_member(DistInfo(), **job, member_dir=tmp_path / "one")
    two = spawn(_ddp_member, 2, {**job, "member_dir": str(tmp_path / "two")})
    for res in (one, two):
        rb = [e for e in res["events"] if "rollback" in e]
        assert res["rollbacks"] == 1 and len(rb) == 1 and "NaN" in rb[0]["reason"]
        assert res["epochs"] == 3
    a = torch.load(tmp_path / "one" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "two" / "last.pt", weights_only=True)["model"]
    assert all(torch.isfinite(v).all() for v in b.values() if v.is_floating_point())
    diff = max(float((a[k] - b[k]).abs().max()) for k in a if a[k].is_floating_point())
    assert diff < 1e-10, diff


def test_auto_ddp_takes_the_measured_faster_rank_count_and_the_same_weights(tmp_path):
    frames = emt_frames(24, seed=6)
    cfg = MLIPConfig(committee_size=1, dtype="float64", batch_size=4, epochs=2, lr=2e-3)
    two = train_committee(frames, tmp_path / "two", cfg, nproc=2)  # auto: 1 member < 2
    meta = json.loads((two / "committee.json").read_text())
    probe = meta["ddp_probe_samples_per_s"]
    assert set(probe) == {"1", "2"} and all(v > 0 for v in probe.values())
    assert meta["ddp_ranks"] == (2 if probe["2"] > probe["1"] else 1)
    one = train_committee(frames, tmp_path / "one", cfg)
    a = torch.load(one / "member_0" / "best.pt", weights_only=True)
    b = torch.load(two / "member_0" / "best.pt", weights_only=True)
    assert max(float((a[k] - b[k]).abs().max()) for k in a if a[k].is_floating_point()) < 1e-10


SCRIPT = """
import sys, pickle, torch
torch.set_num_threads(1)
from alflow.mlip import MLIPConfig, train_committee
frames = pickle.load(open(sys.argv[1], "rb"))
cfg = MLIPConfig.model_validate_json(open(sys.argv[2]).read())
train_committee(frames, sys.argv[3], cfg)
"""


def test_resume_after_sigkill_continues_from_checkpoint(tmp_path):
    import pickle

    torch.set_num_threads(1)
    frames = emt_frames(24, seed=5)
    cfg = MLIPConfig(committee_size=1, dtype="float64", batch_size=8, epochs=12, patience=100,
                     lr=2e-3)
    (tmp_path / "frames.pkl").write_bytes(pickle.dumps(frames))
    (tmp_path / "cfg.json").write_text(cfg.model_dump_json())
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path / "frames.pkl"),
                             str(tmp_path / "cfg.json"), str(out)], env=env)
    last = out / "member_0" / "last.pt"
    killed_at = None
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if last.exists():
            ep = torch.load(last, weights_only=True)["state"]["epoch"]
            if ep >= 3:
                proc.send_signal(signal.SIGKILL)
                killed_at = ep
                break
        time.sleep(0.05)
    proc.wait()
    assert killed_at is not None and proc.returncode == -signal.SIGKILL
    assert not (out / "committee.json").exists()
    train_committee(frames, out, cfg)  # resumes
    member = json.loads((out / "member_0" / "member.json").read_text())
    resumed = [e["resumed_at_epoch"] for e in member["events"] if "resumed_at_epoch" in e]
    assert len(resumed) == 1 and killed_at <= resumed[0] < cfg.epochs
    assert member["epochs"] == cfg.epochs
    # same weights as a run that was never interrupted
    ref = train_committee(frames, tmp_path / "ref", cfg)
    a = torch.load(out / "member_0" / "best.pt", weights_only=True)
    b = torch.load(ref / "member_0" / "best.pt", weights_only=True)
    assert max(float((a[k] - b[k]).abs().max()) for k in a if a[k].is_floating_point()) < 1e-9
    # a finished committee is not retrained
    t = (out / "committee.json").stat().st_mtime_ns
    train_committee(frames, out, cfg)
    assert (out / "committee.json").stat().st_mtime_ns == t
