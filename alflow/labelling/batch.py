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
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Any

from ase import Atoms

from alflow.dataset import LabelRecord, LabelStore
from alflow.labelling.base import Labeller, LabellerConfig
from alflow.labelling.claims import Claims
from alflow.labelling.commit import Committer

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
    commit_interval_s: float = 0.0,
    claims: bool = True,
    poll_s: float = 0.5,
) -> list[LabelRecord]:
    """Labels of every configuration, in input order.

    Keys already in ``store`` are read, not recomputed (failed ones too, unless
    ``retry_failed``); a configuration repeated in the batch is computed once. Each new label
    is committed to ``store`` by a background thread as soon as it finishes (labels finishing
    within ``commit_interval_s`` ≤ 1 s of each other share one atomic commit), whatever is
    computed next. With ``claims``, a key is claimed (:mod:`alflow.labelling.claims`) before it
    is computed: a key another live writer holds is waited for (checked every ``poll_s``) and
    read from the store once that writer commits it, or computed here if it gives it up.
    ``tags``: one dict for all or one per configuration. ``on_result(i, record, cached)`` is
    called once per input index as its label is known (``cached``: read from the store or
    shared with a repeat). With ``submit``, a task that raises (worker lost) gives a failed
    record that is *not* stored, so a rerun retries it; the other labels are unaffected.
    """
    from alflow.labelling import make_labeller
    from alflow.labelling.validate import validate_labeller

    lab = labeller if isinstance(labeller, Labeller) else make_labeller(labeller)
    n = len(atoms_list)
    tag_list = _tag_list(tags, n)
    validate_labeller(lab, atoms_list)
    keys = [lab.key(a) for a in atoms_list]
    results: list[LabelRecord | None] = [None] * n
    first_of: dict[str, int] = {}
    repeats: dict[int, list[int]] = {}  # first index -> later indices of the same key
    for i, key in enumerate(keys):
        if key in first_of:
            repeats.setdefault(first_of[key], []).append(i)
        else:
            first_of[key] = i

    def usable(rec: LabelRecord | None) -> bool:
        return rec is not None and (rec.status == "ok" or not retry_failed)

    def known(i: int, rec: LabelRecord, cached: bool) -> None:
        results[i] = rec
        if on_result:
            on_result(i, rec, cached)
            for j in repeats.get(i, []):
                on_result(j, rec, True)

    stored = store.get_many(first_of) if store is not None else {}
    todo = []
    for i in first_of.values():
        if usable(stored.get(keys[i])):
            known(i, stored[keys[i]], True)
        else:
            todo.append(i)
    if not todo:
        return _in_order(results, keys, first_of)
    log.info("%s: %d to label, %d already stored", lab.method_info.get("name"), len(todo),
             n - len(todo))
    claim = Claims(store.path) if store is not None and claims else None
    committer = (Committer(store, retry_failed, commit_interval_s,
                           on_commit=lambda recs: claim and claim.release([r.key for r in recs]))
                 if store is not None else None)

    warned: list[bool] = []

    def take(idx: list[int]) -> list[int]:
        """The indices of ``idx`` this writer may compute now (claimed and still unstored);
        those another writer stored meanwhile are taken from the store."""
        if claim is None:
            return idx
        got = claim.claim(keys[i] for i in idx)
        if claim.others and not warned:
            warned.append(True)
            who = {(h.get("host"), h.get("pid")) for h in claim.others.values()}
            log.info("%d label(s) are being computed by another writer of %s (%s): waiting for "
                     "them (a dead writer's claims lapse within %.0f s)", len(claim.others),
                     store.path, ", ".join(f"pid {p} on {h}" for h, p in sorted(who, key=str)),
                     claim.ttl_s)
        mine = [i for i in idx if keys[i] in got]
        now = store.get_many(keys[i] for i in mine)  # a writer commits before it releases
        for i in [i for i in mine if usable(now.get(keys[i]))]:
            claim.release([keys[i]])
            known(i, now[keys[i]], True)
        return [i for i in mine if results[i] is None]

    def finish(i: int, rec: LabelRecord) -> None:
        if committer is not None and not rec.provenance.get("lost"):
            committer.put(rec)
        elif claim is not None:  # lost: not stored; another writer or a rerun computes it
            claim.release([keys[i]])
        known(i, rec, False)

    def waited(idx: list[int]) -> list[int]:
        """Of the keys other writers held: take those they stored from the store; returns the
        indices still to do (the next ``take`` claims those they gave up)."""
        if not idx:
            return []
        now = store.get_many(keys[i] for i in idx)
        for i in [i for i in idx if usable(now.get(keys[i]))]:
            known(i, now[keys[i]], True)
        return [i for i in idx if results[i] is None]

    try:
        waiting = list(todo)
        if submit is None:  # claim one key at a time: concurrent writers share the work
            while waiting:
                computed = False
                for i in waiting:
                    if results[i] is None and take([i]):
                        finish(i, record_of(lab, atoms_list[i], keys[i], tag_list[i]))
                        computed = True
                waiting = waited([i for i in waiting if results[i] is None])
                if waiting and not computed:
                    time.sleep(poll_s)
        else:
            futures: dict[Future, int] = {}
            while waiting or futures:
                if waiting:
                    mine = take(waiting)
                    waiting = [i for i in waiting if i not in mine and results[i] is None]
                    for i in mine:
                        futures[submit(label_one, atoms_list[i], lab.config, tag_list[i],
                                       keys[i])] = i
                if not futures:  # only keys other writers compute: wait for them
                    time.sleep(poll_s)
                    waiting = waited(waiting)
                    continue
                done, _ = wait(list(futures), timeout=poll_s if waiting else None,
                               return_when=FIRST_COMPLETED)
                for fut in done:
                    i = futures.pop(fut)
                    try:
                        rec = fut.result()
                    except Exception as err:  # worker lost, serialisation error: keep the others
                        log.warning("label task %d failed: %s", i, err)
                        rec = LabelRecord.from_atoms(
                            atoms_list[i], keys[i], "failed",
                            reason=f"task error: {type(err).__name__}: {err}",
                            method=lab.method_info, provenance={"lost": True},
                            tags=tag_list[i])
                    finish(i, rec)
                if waiting:
                    waiting = waited(waiting)
    finally:
        try:
            if committer is not None:
                committer.close()
        finally:
            if claim is not None:
                claim.close()
    return _in_order(results, keys, first_of)


def _in_order(results: list[LabelRecord | None], keys: list[str],
              first_of: dict[str, int]) -> list[LabelRecord]:
    return [results[i] if results[i] is not None else results[first_of[k]]
            for i, k in enumerate(keys)]


if __name__ == "__main__":
    from alflow.labelling.mpi_driver import main

    main()
