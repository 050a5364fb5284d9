"""Label many configurations, skipping stored ones and storing each label as it finishes.

:func:`label_many` runs inline, or through an injected ``submit(fn, *args) -> Future`` (a
``ThreadPoolExecutor.submit``, or the Parsl app of :mod:`apps.labelling`); the process that calls
it is the only one writing to the store, so no label is lost or written twice.

Run as a module, this is the MPI batch driver (:mod:`alflow.labelling.mpi_driver`)::

    mpiexec -n 4 python -m alflow.labelling.batch STRUCTURES --store DATA.h5 \
        --method pyscf:pbe/def2-svp
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, as_completed
from typing import Any

from ase import Atoms

from alflow.dataset import LabelRecord, LabelStore
from alflow.labelling.base import Labeller, LabellerConfig

log = logging.getLogger(__name__)

Submit = Callable[..., Future]
OnResult = Callable[[int, LabelRecord, bool], None]

_LABELLERS: dict[str, Labeller] = {}


def cached_labeller(config: LabellerConfig) -> Labeller:
    """One labeller per config and process (workers reuse calculators between tasks)."""
    from alflow.labelling import make_labeller

    k = config.model_dump_json()
    if k not in _LABELLERS:
        _LABELLERS[k] = make_labeller(config)
    return _LABELLERS[k]


def record_of(lab: Labeller, atoms: Atoms, key: str | None = None,
              tags: dict[str, Any] | None = None) -> LabelRecord:
    """Label one configuration with ``lab`` and wrap it as a record."""
    res = lab.label(atoms)
    return LabelRecord.from_atoms(atoms, key or lab.key(atoms), res.status, res.energy,
                                  res.forces, res.reason, lab.method_info, res.provenance, tags)


def label_one(atoms: Atoms, config: LabellerConfig, tags: dict[str, Any] | None = None,
              key: str | None = None) -> LabelRecord:
    """Label one configuration from a (picklable) config: the unit of work sent to Parsl
    workers and MPI ranks; the labeller is built once per process."""
    return record_of(cached_labeller(config), atoms, key, tags)


def check_all(atoms_list: Sequence[Atoms], labeller: Labeller) -> None:
    """Run ``labeller.check`` once per distinct composition (ConfigError before any work)."""
    seen: set[tuple[int, ...]] = set()
    for atoms in atoms_list:
        comp = tuple(sorted(set(atoms.numbers.tolist())))
        if comp not in seen:
            seen.add(comp)
            labeller.check(atoms)


def _tag_list(tags: dict[str, Any] | Sequence[dict[str, Any]] | None, n: int) -> list[dict]:
    if tags is None or isinstance(tags, dict):
        return [dict(tags or {}) for _ in range(n)]
    out = [dict(t) for t in tags]
    if len(out) != n:
        raise ValueError(f"{n} configurations but {len(out)} tag dicts")
    return out


def label_many(
    atoms_list: Sequence[Atoms],
    labeller: Labeller | LabellerConfig | str,
    store: LabelStore | None = None,
    tags: dict[str, Any] | Sequence[dict[str, Any]] | None = None,
    *,
    submit: Submit | None = None,
    retry_failed: bool = False,
    on_result: OnResult | None = None,
    commit_interval_s: float = 0.5,
) -> list[LabelRecord]:
    """Labels of every configuration, in input order.

    Keys already in ``store`` are read, not recomputed (failed ones too, unless
    ``retry_failed``); a configuration repeated in the batch is computed once. Each new label
    is appended to ``store`` as it finishes (labels finishing within ``commit_interval_s`` of
    the previous write share one atomic commit). ``tags``: one dict for all or one per
    configuration. ``on_result(i, record, cached)`` is called once per input index as its
    label is known (``cached``: read from the store or shared with a repeat). With
    ``submit``, a task that raises (worker lost) gives a failed record that is *not* stored,
    so a rerun retries it; the other labels are unaffected.
    """
    from alflow.labelling import make_labeller

    lab = labeller if isinstance(labeller, Labeller) else make_labeller(labeller)
    n = len(atoms_list)
    tag_list = _tag_list(tags, n)
    check_all(atoms_list, lab)
    keys = [lab.key(a) for a in atoms_list]
    stored = store.get_many(set(keys)) if store is not None else {}
    results: list[LabelRecord | None] = [None] * n
    first_of: dict[str, int] = {}
    repeats: dict[int, list[int]] = {}  # first index -> later indices of the same key
    todo: list[int] = []
    for i, key in enumerate(keys):
        if key in first_of:
            repeats.setdefault(first_of[key], []).append(i)
            continue
        first_of[key] = i
        old = stored.get(key)
        if old is not None and (old.status == "ok" or not retry_failed):
            results[i] = old
        else:
            todo.append(i)
    for i in range(n):
        if on_result and results[first_of[keys[i]]] is not None:
            on_result(i, results[first_of[keys[i]]], True)
    if todo:
        log.info("%s: %d to label, %d already stored", lab.method_info.get("name"), len(todo),
                 n - len(todo))

    pending: list[LabelRecord] = []
    last_commit = [0.0]

    def commit(force: bool = False) -> None:
        if store is None or not pending:
            return
        if force or time.monotonic() - last_commit[0] >= commit_interval_s:
            store.append_many(pending, replace_failed=retry_failed)
            pending.clear()
            last_commit[0] = time.monotonic()

    def finish(i: int, rec: LabelRecord) -> None:
        results[i] = rec
        if not rec.provenance.get("lost"):
            pending.append(rec)
            commit()
        if on_result:
            on_result(i, rec, False)
            for j in repeats.get(i, []):
                on_result(j, rec, True)

    try:
        if submit is None:
            for i in todo:
                finish(i, record_of(lab, atoms_list[i], keys[i], tag_list[i]))
        else:
            futures = {submit(label_one, atoms_list[i], lab.config, tag_list[i], keys[i]): i
                       for i in todo}
            for fut in as_completed(futures):
                i = futures[fut]
                try:
                    rec = fut.result()
                except Exception as err:  # worker lost, serialisation error... keep the others
                    log.warning("label task %d failed: %s", i, err)
                    rec = LabelRecord.from_atoms(
                        atoms_list[i], keys[i], "failed",
                        reason=f"task error: {type(err).__name__}: {err}",
                        method=lab.method_info, provenance={"lost": True}, tags=tag_list[i])
                finish(i, rec)
    finally:
        commit(force=True)
    for i, key in enumerate(keys):
        if results[i] is None:
            results[i] = results[first_of[key]]
    return [r for r in results if r is not None]


if __name__ == "__main__":
    from alflow.labelling.mpi_driver import main

    main()
