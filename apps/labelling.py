"""Parsl apps: DFT labels on the ``dft`` executor, with no label lost or computed twice.

Two ways, both keeping the campaign driver the only process that writes the label store:

- :func:`label_configs` (HTEX / threads sites): one ``label_task`` per configuration not yet
  stored. Tasks *return* their :class:`~alflow.dataset.LabelRecord`; the driver appends each
  as its future completes (inside :func:`alflow.labelling.label_many`). A lost worker gives a
  failed record that is not stored, so the next call retries it; duplicates and stored keys
  are never submitted.
- :func:`label_configs_mpi` (MPIExecutor sites, one multi-rank task for many labels): one
  ``label_batch_mpi`` bash_app runs ``$PARSL_MPI_PREFIX python -m alflow.labelling.batch``
  into a *shard* store of its own (rank 0 writes it, label by label); when the task ends -
  even with an error - the driver merges the shard into the campaign store. Labels finished
  before a crash survive in the shard and are merged; a rerun computes only the rest.

Needs a loaded Parsl config with an executor labelled ``dft`` (:mod:`alflow.campaign.sites`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from ase import Atoms
from ase.io import write
from parsl import bash_app, python_app

from alflow.dataset import LabelRecord, LabelStore
from alflow.labelling import LabellerConfig, label_many, make_labeller
from alflow.labelling.base import Labeller
from alflow.structures import POSITION_DECIMALS


@python_app(executors=["dft"])
def label_task(fn, atoms: Atoms, config: LabellerConfig, tags: dict[str, Any] | None = None,
               key: str | None = None) -> LabelRecord:
    """One label (``fn`` is :func:`alflow.labelling.label_one`, passed by reference so the
    worker imports alflow rather than unpickling a function body)."""
    from alflow.threads import size_thread_pools

    size_thread_pools()
    return fn(atoms, config, tags, key)


def parsl_submit(fn, *args):
    """``submit`` for :func:`label_many`: each call is one ``label_task``."""
    return label_task(fn, *args)


def label_configs(atoms_list: Sequence[Atoms], labeller: Labeller | LabellerConfig | str,
                  store: LabelStore, tags: dict[str, Any] | Sequence[dict[str, Any]] | None
                  = None, retry_failed: bool = False,
                  on_result: Callable[[int, LabelRecord, bool], None] | None = None,
                  ) -> list[LabelRecord]:
    """Labels of every configuration (input order), unstored ones computed as Parsl tasks
    on ``dft`` and appended to ``store`` by this process as each finishes."""
    return label_many(atoms_list, labeller, store, tags, submit=parsl_submit,
                      retry_failed=retry_failed, on_result=on_result)


@bash_app(executors=["dft"])
def label_batch_mpi(structures: str, shard: str, config_file: str, python: str = sys.executable,
                    threads: int | None = None, stdout: str | None = None,
                    stderr: str | None = None,
                    parsl_resource_specification: dict[str, Any] | None = None) -> str:
    """MPI batch labelling of a structure file into the shard store ``shard``; the command
    starts with ``$PARSL_MPI_PREFIX`` (empty outside an MPIExecutor: then one rank)."""
    from alflow.campaign.sites import mpi_command

    argv = [python, "-m", "alflow.labelling.batch", structures, "--store", shard,
            "--config", config_file]
    return mpi_command(argv + (["--threads", str(int(threads))] if threads else []))


def label_configs_mpi(atoms_list: Sequence[Atoms], labeller: Labeller | LabellerConfig | str,
                      store: LabelStore, work_dir: str | Path,
                      tags: dict[str, Any] | Sequence[dict[str, Any]] | None = None,
                      resource_spec: dict[str, Any] | None = None,
                      threads: int | None = None) -> list[LabelRecord]:
    """Label the unstored configurations in one MPI task (see the module docstring), merge
    its shard into ``store`` and return the records of every input (failed records for
    any the task did not finish, not stored). Blocks until the task ends."""
    lab = labeller if isinstance(labeller, Labeller) else make_labeller(labeller)
    n = len(atoms_list)
    tag_list = ([dict(tags or {})] * n if tags is None or isinstance(tags, dict)
                else [dict(t) for t in tags])
    keys = [lab.key(a) for a in atoms_list]
    stored = set(store.keys())
    todo, seen = [], set()
    for i, k in enumerate(keys):
        if k not in stored and k not in seen:
            seen.add(k)
            todo.append(i)
    if todo:
        work = Path(work_dir)
        work.mkdir(parents=True, exist_ok=True)
        name = keys[todo[0]][:12]
        structures, shard = work / f"todo-{name}.extxyz", work / f"shard-{name}.h5"
        config_file = work / f"labeller-{name}.yaml"
        images = []
        for i in todo:
            a = atoms_list[i].copy()
            a.calc = None
            # on the key's rounding grid, so the text round trip keeps the key
            a.positions = np.round(a.positions, POSITION_DECIMALS)
            a.info = {"alflow_tags": json.dumps(tag_list[i], default=str)}
            images.append(a)
        write(str(structures), images, format="extxyz", parallel=False)
        config_file.write_text(yaml.safe_dump(lab.config.model_dump()))
        fut = label_batch_mpi(str(structures), str(shard), str(config_file), threads=threads,
                              stdout=str(work / f"mpi-{name}.out"),
                              stderr=str(work / f"mpi-{name}.err"),
                              parsl_resource_specification=resource_spec or {})
        error = None
        try:
            fut.result()
        except Exception as err:  # keep what the task finished before failing
            error = err
        if shard.exists():
            store.merge(shard)
        if error is not None:
            import logging

            logging.getLogger(__name__).warning("MPI labelling task failed (%s); merged %s",
                                                error, shard)
    out = []
    for i, k in enumerate(keys):
        rec = store.get(k)
        if rec is None:
            rec = LabelRecord.from_atoms(atoms_list[i], k, "failed",
                                         reason="task error: MPI labelling task did not finish",
                                         method=lab.method_info, provenance={"lost": True},
                                         tags=tag_list[i])
        out.append(rec)
    return out
