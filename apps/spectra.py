"""Parsl app: TDDFT spectra of many configurations on the ``dft`` executor.

Thin wrapper over :func:`alflow.observables.batch.spectra_many`; needs a loaded Parsl config
whose executors include the label ``dft`` (see :mod:`alflow.campaign.sites`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ase import Atoms
from parsl import python_app

from alflow.observables.batch import spectra_many
from alflow.observables.store import SpectrumStore
from alflow.observables.tddft import TDDFTConfig, TDDFTResult


@python_app(executors=["dft"])
def tddft_app(fn, atoms: Atoms, config: TDDFTConfig) -> TDDFTResult:
    """One TDDFT calculation (``fn`` is :func:`alflow.observables.tddft.run_tddft`)."""
    from alflow.threads import size_thread_pools

    size_thread_pools()
    return fn(atoms, config)


def compute_spectra(atoms_list: Sequence[Atoms], config: TDDFTConfig,
                    store: SpectrumStore | None = None,
                    tags: dict[str, Any] | Sequence[dict[str, Any]] | None = None,
                    retry_failed: bool = False, on_result=None) -> list[TDDFTResult]:
    """TDDFT of every configuration not yet in ``store``, as Parsl tasks on ``dft``; each
    result is stored as it arrives (resumable)."""
    return spectra_many(atoms_list, config, store=store, tags=tags, submit=tddft_app,
                        retry_failed=retry_failed, on_result=on_result)
