"""Spectra of a campaign: Boltzmann samples per state in, averaged spectra per state out.

Samples come from the last generation's ``flows`` results of each state
(``RUN_DIR/results/flows-*.npz``: model-Boltzmann samples, ``reweight_positions`` or
``samples``; optional ``log_weights``). Their TDDFT results go to ``RUN_DIR/spectra.h5`` tagged
with ``state``, ``generation``, ``sample`` (order, for the convergence curve) and
``log_weight``; :func:`state_spectra` averages them per state with those weights.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from alflow.errors import InputError
from alflow.observables import spectra as sp
from alflow.observables.store import SpectrumStore
from alflow.runlayout import RunLayout

SAMPLE_ARRAYS = ("samples", "reweight_positions", "positions")


def state_spectra(store_path: str | Path, states: list[str] | None = None,
                  width: float = sp.DEFAULT_WIDTH_EV, shape: sp.Shape = "gaussian",
                  grid_ev: np.ndarray | None = None
                  ) -> list[tuple[str, str, sp.AveragedSpectrum]]:
    """``(state, method label, averaged spectrum)`` for every state with ok spectra, one
    common grid for all states; the TDDFT method with the most records per state is used.
    Weights: ``exp(log_weight)`` tags when every record of the state has one, else uniform."""
    store = SpectrumStore(store_path)
    groups: dict[tuple[str, str], list[tuple[Any, dict[str, Any]]]] = defaultdict(list)
    for res, tags in store.iter_records(status="ok"):
        state = str(tags.get("state", "all"))
        groups[(state, res.provenance.get("method_label", ""))].append((res, tags))
    if not groups:
        return []
    best: dict[str, tuple[str, list]] = {}
    for (state, method), recs in groups.items():
        if state not in best or len(recs) > len(best[state][1]):
            best[state] = (method, recs)
    order = [s for s in (states or []) if s in best] + sorted(set(best) - set(states or []))
    if grid_ev is None:
        grid_ev = sp.grid_for([np.asarray(r.excitation_energies_ev)
                               for _, recs in best.values() for r, _ in recs], width)
    out = []
    for state in order:
        method, recs = best[state]
        recs = sorted(recs, key=lambda rt: (rt[1].get("generation", 0), rt[1].get("sample", 0),
                                            rt[0].key))
        logw = [t.get("log_weight") for _, t in recs]
        lw = np.asarray(logw, float) if all(v is not None for v in logw) else None
        avg = sp.average_spectrum([np.asarray(r.excitation_energies_ev) for r, _ in recs],
                                  [np.asarray(r.oscillator_strengths) for r, _ in recs],
                                  log_weights=lw, width=width, shape=shape, grid_ev=grid_ev)
        out.append((state, method, avg))
    return out


def _numbers(run: RunLayout) -> np.ndarray | None:
    path = run.dataset
    if not path.exists():
        return None
    from alflow.dataset import LabelStore

    store = LabelStore(path, create=False)
    for key in store.keys():
        rec = store.get(key)
        if rec is not None:
            return np.asarray(rec.numbers)
    return None


def campaign_samples(run_dir: str | Path, state: str, n: int | None = None,
                     seed: int = 0) -> tuple[list[Atoms], np.ndarray | None, int]:
    """Up to ``n`` Boltzmann samples of ``state`` from the last generation's flows result:
    ``(atoms, log_weights or None, generation)``. ``n`` samples are drawn evenly spaced
    through the chain (decorrelated), not the first ``n``."""
    run = RunLayout(run_dir)
    best: tuple[int, Path] | None = None
    for r in run.step_results("flows"):
        if r.state == state and r.generation is not None and r.arrays is not None:
            if best is None or r.generation > best[0]:
                best = (r.generation, r.arrays)
    if best is None:
        raise InputError(f"{run.root}: no flow samples of state {state!r} (results/flows-*.npz); "
                         "run the campaign first")
    gen, npz = best
    with np.load(npz, allow_pickle=False) as z:
        name = next((k for k in SAMPLE_ARRAYS if k in z.files), None)
        if name is None:
            raise InputError(f"{npz}: no sample array (expected one of {SAMPLE_ARRAYS})")
        x = np.asarray(z[name], float).reshape(-1, z[name].shape[-2], 3)
        logw = np.asarray(z["log_weights"], float) if "log_weights" in z.files else None
        numbers = np.asarray(z["numbers"]) if "numbers" in z.files else _numbers(run)
    if numbers is None:
        raise InputError(f"{run.root}: cannot tell the atomic numbers (no dataset.h5)")
    idx = np.arange(len(x))
    if n is not None and n < len(x):
        idx = np.unique(np.linspace(0, len(x) - 1, n).round().astype(int))
    atoms = [Atoms(numbers=numbers, positions=x[i]) for i in idx]
    return atoms, (None if logw is None else logw[idx]), gen
