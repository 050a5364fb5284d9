"""Parsl apps: train a committee MLIP on the ``gpu`` executor (or ``cpu``).

Thin wrappers over :func:`alflow.mlip.train_committee`. Inside the worker, ``nproc`` > 1
either trains members in parallel processes / DDP ranks started with
torch.multiprocessing (``launcher="spawn"``), or runs ``torchrun --standalone
--nproc-per-node nproc -m alflow.mlip`` (``launcher="torchrun"``; NCCL on GPUs, gloo on
CPUs, chosen from ``config["device"]``). Returns the model directory.
"""

from __future__ import annotations

from typing import Any

from parsl import python_app


def run_training(dataset: str, out_dir: str, config: dict[str, Any] | None = None,
                 nproc: int = 1, init_from: str | None = None, launcher: str = "spawn",
                 tags: dict[str, Any] | None = None) -> str:
    """Train on the ok labels of ``dataset`` (HDF5 LabelStore) matching ``tags``."""
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    import yaml

    from alflow.config import validate_model
    from alflow.dataset import LabelStore
    from alflow.errors import ConfigError
    from alflow.mlip import MLIPConfig, train_committee
    from alflow.threads import size_thread_pools

    size_thread_pools()

    cfg = validate_model(MLIPConfig, config or {}, "training app config")
    if launcher == "spawn":
        atoms = LabelStore(dataset, create=False).read_atoms(**(tags or {}))
        init = Path(init_from) if init_from else None
        return str(train_committee(atoms, out_dir, cfg, nproc=nproc, init_from=init))
    if launcher != "torchrun":
        raise ConfigError(f"launcher must be 'spawn' or 'torchrun', got {launcher!r}")
    if tags:
        raise ConfigError("tag filters are not supported with launcher='torchrun'")
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as fh:
        yaml.safe_dump(cfg.model_dump(), fh)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc-per-node={nproc}", "-m", "alflow.mlip", dataset, out_dir,
           "--config", fh.name]
    if init_from:
        cmd += ["--init-from", init_from]
    subprocess.run(cmd, check=True)
    Path(fh.name).unlink(missing_ok=True)
    return out_dir


train_app = python_app(run_training, executors=["gpu"])
train_app_cpu = python_app(run_training, executors=["cpu"])
