"""Spectrum store (HDF5) and batches: resumable, crash-safe, through real Parsl."""

import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import parsl
import pytest
from ase import Atoms

from alflow.campaign.sites import local_threads
from alflow.errors import InputError
from alflow.observables.batch import spectra_many
from alflow.observables.store import SpectrumStore
from alflow.observables.tddft import TDDFTConfig, TDDFTResult, spectrum_key

CFG = TDDFTConfig(basis="sto-3g", nstates=2, threads=1)


def _mols():
    return [Atoms("LiH", positions=[[0, 0, 0], [0, 0, d]]) for d in (1.5, 1.6, 1.7)]


def test_store_roundtrip_append_only_and_crash_leftovers(tmp_path):
    path = tmp_path / "spectra.h5"
    store = SpectrumStore(path)
    atoms = _mols()[0]
    res = TDDFTResult(key="k1", status="ok", excitation_energies_ev=[1.0, 2.0],
                      oscillator_strengths=[0.1, 0.2], transition_dipoles_au=[[1, 0, 0]] * 2,
                      scf_energy_ev=-10.0, provenance={"method": {"xc": "pbe"}})
    assert store.append(res, atoms=atoms, tags={"state": "planar"})
    assert not store.append(res.model_copy(update={"excitation_energies_ev": [9.0, 9.0]}))
    assert store.get("k1") == res and store.has("k1") and len(store) == 1
    failed = TDDFTResult(key="k2", status="failed", reason="SCF did not converge")
    store.append(failed, tags={"state": "pyramid"})
    assert [r.key for r, _ in store.iter_records(state="planar")] == ["k1"]
    assert [r.key for r, _ in store.iter_records(status=None, state="pyramid")] == ["k2"]
    assert list(store.iter_records(method={"xc": "pbe0"})) == []
    ok2 = failed.model_copy(update={"status": "ok", "reason": ""})
    assert store.append(ok2)  # an ok result replaces a failed one
    assert store.get("k2").status == "ok"
    stale = path.with_name(path.name + ".tmp-99999")  # a writer killed mid-commit
    stale.write_bytes(b"half-written")
    assert store.append(res.model_copy(update={"key": "k3"}))
    assert not stale.exists() and store.keys() == ["k1", "k2", "k3"]
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.create_group("labels")
    with pytest.raises(InputError, match="not an alflow spectrum store"):
        SpectrumStore(tmp_path / "other.h5")


KILL_SCRIPT = """
import sys
from ase import Atoms
from alflow.observables.batch import spectra_many
from alflow.observables.store import SpectrumStore
from alflow.observables.tddft import TDDFTConfig
mols = [Atoms("LiH", positions=[[0, 0, 0], [0, 0, 1.4 + 0.05 * i]]) for i in range(40)]
spectra_many(mols, TDDFTConfig(basis="sto-3g", nstates=2, threads=1), SpectrumStore(sys.argv[1]))
"""


def test_killed_writer_leaves_a_valid_store_and_resume_completes(tmp_path):
    path = tmp_path / "s.h5"
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(path)])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            time.sleep(0.05)
            if path.exists() and len(SpectrumStore(path)) >= 3:
                break
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    store = SpectrumStore(path)  # opens: never half-written
    done = set(store.keys())
    assert 3 <= len(done) < 40
    mols = [Atoms("LiH", positions=[[0, 0, 0], [0, 0, 1.4 + 0.05 * i]]) for i in range(40)]
    computed = []
    res = spectra_many(mols[:12], CFG, store=store,
                       on_result=lambda i, r, cached: computed.append(not cached))
    assert all(r.status == "ok" for r in res)
    assert sum(computed) == len([r for r in res if r.key not in done])


def test_batch_is_resumable_and_skips_duplicates(tmp_path):
    store = SpectrumStore(tmp_path / "s.h5")
    mols = _mols()
    seen = []
    res = spectra_many(mols + [mols[0].copy()], CFG, store=store, tags={"state": "a"},
                       on_result=lambda i, r, cached: seen.append((i, cached)))
    assert len(res) == 4 and res[3] == res[0]
    assert all(r.status == "ok" for r in res)
    assert len(store) == 3 and sorted(seen) == [(0, False), (1, False), (2, False)]
    seen.clear()
    again = spectra_many(mols, CFG, store=store,
                         on_result=lambda i, r, cached: seen.append((i, cached)))
    assert [r.excitation_energies_ev for r in again] == [r.excitation_energies_ev
                                                        for r in res[:3]]
    assert all(cached for _, cached in seen)
    # a different method is a different key: nothing shared
    assert spectrum_key(mols[0], CFG.model_copy(update={"tda": True})) != res[0].key


def test_parsl_app_on_dft_executor_matches_inline(tmp_path):
    from apps.spectra import compute_spectra

    mols = _mols()
    inline = spectra_many(mols, CFG)
    store = SpectrumStore(tmp_path / "s.h5")
    parsl.load(local_threads(tmp_path, max_threads=2))
    try:
        res = compute_spectra(mols, CFG, store=store, tags=[{"i": i} for i in range(3)])
    finally:
        parsl.dfk().cleanup()
        parsl.clear()
    for a, b in zip(res, inline, strict=True):
        np.testing.assert_allclose(a.excitation_energies_ev, b.excitation_energies_ev,
                                   atol=1e-6)
    assert store.tags(res[2].key) == {"i": 2}
    assert len(store) == 3


def test_lost_task_is_not_stored_and_others_are(tmp_path):
    from concurrent.futures import Future

    store = SpectrumStore(tmp_path / "s.h5")
    calls = []

    def submit(fn, atoms, cfg):
        fut = Future()
        calls.append(1)
        if len(calls) == 2:
            fut.set_exception(RuntimeError("worker lost"))
        else:
            fut.set_result(fn(atoms, cfg))
        return fut

    res = spectra_many(_mols(), CFG, store=store, submit=submit)
    assert [r.status for r in res] == ["ok", "failed", "ok"]
    assert "worker lost" in res[1].reason
    assert len(store) == 2 and not store.has(res[1].key)



def test_inline_batch_chains_the_scf_guess_and_parallel_refuses_it(tmp_path):
    guess: dict = {}
    res = spectra_many(_mols(), CFG, scf_guess=guess)
    assert [r.provenance["scf_guess"] for r in res] == ["default", "previous density",
                                                        "previous density"]
    assert guess["dm"].shape == (6, 6)  # LiH in STO-3G: the last converged density
    with pytest.raises(InputError, match="scf_guess"):
        spectra_many(_mols(), CFG, scf_guess={}, submit=lambda fn, *a: None)
