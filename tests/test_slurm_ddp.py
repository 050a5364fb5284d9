"""DDP training under Slurm: a Parsl app on the `slurm` site's gpu class launches torchrun with
2 processes (the one-process-per-device layout of a GPU node; gloo on CPU) inside the block job."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.cluster import Octahedron
from ase.io import write
from parsl import bash_app
from parsl.app.errors import BashExitFailure
from slurm_support import require_slurm, site_overrides

from alflow.campaign.sites import load_site, parsl_session
from alflow.mlip import MLIPConfig, train_committee

pytestmark = pytest.mark.slurm

SCRIPT = """
import json, os, sys
import torch
import torch.distributed as dist
torch.set_num_threads(1)
from ase.io import read
from alflow.distributed import finish, init_from_env
from alflow.mlip import MLIPConfig, train_committee
info = init_from_env("cpu")            # the process group torchrun's environment describes
seen = {"rank": dist.get_rank(), "world": dist.get_world_size(), "backend": dist.get_backend(),
        "job": os.environ.get("SLURM_JOB_ID")}
cfg = MLIPConfig.model_validate_json(open(sys.argv[2]).read())
train_committee(read(sys.argv[1], ":"), sys.argv[3], cfg)
json.dump(seen, open(sys.argv[4] + f".{seen['rank']}", "w"))
finish()   # no rank exits while a peer is still in a collective (gloo would abort it)
"""


@bash_app(executors=["gpu"])
def torchrun_train(script, frames, cfg, out, seen, stdout=None, stderr=None):
    import shlex
    import sys
    from pathlib import Path

    torchrun = Path(sys.executable).parent / "torchrun"
    args = [str(torchrun), "--standalone", "--nproc-per-node", "2", script, frames, cfg, out, seen]
    return "OMP_NUM_THREADS=1 " + " ".join(shlex.quote(a) for a in args)


def _frames(n: int, seed: int) -> list:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        a = Octahedron("Ag", 2)
        a.positions += rng.normal(0, 0.15, a.positions.shape)
        a.calc = EMT()
        e, f = a.get_potential_energy(), a.get_forces()
        a.calc = SinglePointCalculator(a, energy=e, forces=f)
        out.append(a)
    return out


def test_two_process_gloo_ddp_training_inside_a_slurm_job(tmp_path):
    require_slurm()
    frames = _frames(20, seed=3)   # 2 validation frames: one per rank
    cfg = MLIPConfig(committee_size=1, dtype="float64", batch_size=8, epochs=2, lr=2e-3,
                     patience=100, parallel="ddp",
                     builtin={"features": 8, "radial_hidden": 8, "readout_hidden": 8, "layers": 1})
    write(tmp_path / "frames.extxyz", frames)
    (tmp_path / "cfg.json").write_text(cfg.model_dump_json())
    (tmp_path / "train.py").write_text(SCRIPT)
    site = load_site("slurm", tmp_path / "run", site_overrides(**{
        "classes.gpu": {"max_workers_per_node": 1, "slurm": {"cores_per_node": 2}}}))
    err = tmp_path / "ddp.err"
    with parsl_session(site):
        fut = torchrun_train(str(tmp_path / "train.py"), str(tmp_path / "frames.extxyz"),
                             str(tmp_path / "cfg.json"), str(tmp_path / "ddp"),
                             str(tmp_path / "seen"), stdout=str(tmp_path / "ddp.out"),
                             stderr=str(err))
        try:
            rc = fut.result(timeout=300)
        except BashExitFailure as exc:
            pytest.fail(f"{exc}; torchrun's stderr:\n{err.read_text()[-4000:]}")
    assert rc == 0, err.read_text()[-3000:]
    seen = [json.loads((tmp_path / f"seen.{r}").read_text()) for r in (0, 1)]
    assert [s["rank"] for s in seen] == [0, 1]
    assert all(s["world"] == 2 and s["backend"] == "gloo" for s in seen)
    jobs = {s["job"] for s in seen}
    assert len(jobs) == 1 and None not in jobs      # both ranks inside one Slurm job
    # DDP over 2 ranks (each on half of every batch, gradients all-reduced) equals one process
    torch.set_num_threads(1)
    one = train_committee(frames, tmp_path / "one", cfg)
    a = torch.load(one / "member_0" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "ddp" / "member_0" / "last.pt", weights_only=True)["model"]
    diff = max(float((a[k] - b[k]).abs().max()) for k in a if a[k].is_floating_point())
    assert diff < 1e-9, diff
    assert (tmp_path / "ddp" / "committee.json").exists()


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
