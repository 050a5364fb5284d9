"""Many TDDFT calculations through an injected executor, stored as each one finishes.

``submit(fn, *args)`` returns a ``concurrent.futures.Future`` (a Parsl app's AppFuture is one;
so is ``ThreadPoolExecutor.submit``); without it the work runs inline. alflow never imports
Parsl here: :mod:`apps.spectra` supplies a Parsl ``submit`` for the ``dft`` executor.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Future, as_completed
from typing import Any

from ase import Atoms

from alflow.errors import InputError
from alflow.observables.store import SpectrumStore
from alflow.observables.tddft import TDDFTConfig, TDDFTResult, run_tddft, spectrum_key

log = logging.getLogger(__name__)

Submit = Callable[..., Future]


def spectra_many(
    atoms_list: Sequence[Atoms],
    config: TDDFTConfig,
    store: SpectrumStore | None = None,
    tags: dict[str, Any] | Sequence[dict[str, Any]] | None = None,
    submit: Submit | None = None,
    retry_failed: bool = False,
    on_result: Callable[[int, TDDFTResult, bool], None] | None = None,
    scf_guess: dict[str, Any] | None = None,
) -> list[TDDFTResult]:
    """TDDFT of every configuration, in input order; keys already in ``store`` are read, not
    recomputed (failed ones too unless ``retry_failed``).

    ``scf_guess``: inline runs only (no ``submit``); one dict passed to every
    :func:`~alflow.observables.tddft.run_tddft` in order, so each SCF starts from the
    previous converged density (worth it for neighbouring geometries of one structure).

    ``tags``: one dict for all or one per configuration. ``on_result(i, result, cached)`` is
    called as each result is known (progress bars). A task that raises (worker lost) gives a
    failed result that is not stored, so a rerun retries it; others are unaffected.
    """
    if scf_guess is not None and submit is not None:
        raise InputError("scf_guess: only for inline runs (no submit); parallel tasks cannot "
                         "share a density")
    n = len(atoms_list)
    tag_list = list(tags) if isinstance(tags, Sequence) else [dict(tags or {})] * n
    if len(tag_list) != n:
        raise ValueError(f"{n} configurations but {len(tag_list)} tag dicts")
    keys = [spectrum_key(a, config) for a in atoms_list]
    results: list[TDDFTResult | None] = [None] * n
    todo: list[int] = []
    first_of: dict[str, int] = {}
    for i, key in enumerate(keys):
        old = store.get(key) if store is not None else None
        if old is not None and (old.status == "ok" or not retry_failed):
            results[i] = old
            if on_result:
                on_result(i, old, True)
        elif key in first_of:  # duplicate configuration in this batch: compute once
            continue
        else:
            first_of[key] = i
            todo.append(i)

    def finish(i: int, res: TDDFTResult) -> None:
        results[i] = res
        if store is not None and res.provenance.get("lost") is None:
            store.append(res, atoms=atoms_list[i], tags=tag_list[i])
        if on_result:
            on_result(i, res, False)

    if submit is None:
        for i in todo:
            finish(i, run_tddft(atoms_list[i], config, scf_guess))
    else:
        futures = {submit(run_tddft, atoms_list[i], config): i for i in todo}
        for fut in as_completed(futures):
            i = futures[fut]
            try:
                res = fut.result()
            except Exception as err:  # worker lost, pickling error... keep the others
                log.warning("TDDFT task %d failed: %s", i, err)
                res = TDDFTResult(key=keys[i], status="failed",
                                  reason=f"task error: {type(err).__name__}: {err}",
                                  provenance={"lost": True})
            finish(i, res)
    for i, key in enumerate(keys):  # duplicates share their first occurrence's result
        if results[i] is None:
            results[i] = results[first_of[key]]
    return [r for r in results if r is not None]
