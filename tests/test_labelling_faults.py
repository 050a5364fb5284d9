"""Faults of real writer processes, made deterministic by an oracle that stalls on cue.

The fake oracle (tests/fake_oracle.py) logs every calculation and never finishes calculation
number n: a test waits for its ``stalled-n`` signal, so it knows exactly which labels had
finished when it kills the writer, and that the writer is busy computing (not committing).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from ase.io import write
from fake_oracle import read_log
from lj7_structures import perturbed

from alflow.dataset import LabelStore
from alflow.labelling.claims import Claims

TESTS = Path(__file__).resolve().parent
METHOD = "ase:fake_oracle.LoggedLJ(sigma=3.405, epsilon=0.0103, rc=34.05)"


def lj7_batch(path: Path, n: int, seed: int = 0) -> Path:
    """``n`` distinct perturbed LJ7 clusters written to ``path`` (extxyz)."""
    write(path, perturbed(n, seed))
    return path


def oracle_env(directory: Path, **settings: str) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", FAKE_ORACLE_DIR=str(directory),
               PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    for k in ("FAKE_ORACLE_STALL_AFTER", "FAKE_ORACLE_BARRIER", "FAKE_ORACLE_SLEEP"):
        env.pop(k, None)
    env.update({f"FAKE_ORACLE_{k.upper()}": v for k, v in settings.items()})
    return env


def label_cmd(structures: Path, store: Path) -> list[str]:
    return [sys.executable, "-c", "from alflow.cli import main; main()", "label",
            str(structures), "-s", str(store), "-m", METHOD]


def wait_for(predicate, what: str, timeout: float = 120.0) -> None:
    """Wait until ``predicate()`` holds (a generous deadline against hangs, not a race)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def stored(path: Path) -> int:
    return len(LabelStore(path)) if path.exists() else 0


def finished(directory: Path) -> list[str]:
    return [h for e, h, _ in read_log(directory) if e == "done"]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_label_finished_before_a_kill_is_stored(tmp_path, sig):
    """Three labels finish, the fourth calculation never does: the three are committed without
    waiting for it, and a SIGKILL or SIGTERM during it loses none of them."""
    structures = lj7_batch(tmp_path / "in.extxyz", 6)
    store = tmp_path / "d.h5"
    proc = subprocess.Popen(label_cmd(structures, store), env=oracle_env(tmp_path,
                            stall_after="3"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: (tmp_path / "stalled-3").exists() or proc.poll() is not None,
                 "the fourth calculation")
        assert proc.poll() is None, proc.stderr.read().decode()
        wait_for(lambda: stored(store) == 3, "the three finished labels in the store")
        proc.send_signal(sig)
        rc = proc.wait(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert rc == -sig if sig == signal.SIGKILL else rc == 128 + sig
    assert len(finished(tmp_path)) == 3
    assert stored(store) == 3
    # the rerun computes only the other three
    rerun = subprocess.run(label_cmd(structures, store), env=oracle_env(tmp_path),
                           capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert stored(store) == 6
    assert sorted(Counter(finished(tmp_path)).values()) == [1] * 6  # none computed twice


def test_two_concurrent_writers_compute_each_label_once(tmp_path):
    """Two ``alflow label`` processes over one store and the same structures, computing at
    the same time (the oracle's barrier holds each first calculation until both have
    started): every label is computed once, and both end with every label."""
    structures = lj7_batch(tmp_path / "in.extxyz", 16, seed=1)
    store = tmp_path / "d.h5"
    env = oracle_env(tmp_path, barrier="2", sleep="0.02")
    procs = [subprocess.Popen(label_cmd(structures, store), env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        outs = [p.communicate(timeout=180) for p in procs]
    finally:
        for p in procs:
            p.kill()
            p.wait()
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    done = Counter(finished(tmp_path))
    assert len(done) == 16 and set(done.values()) == {1}, done
    pids = {pid for e, _, pid in read_log(tmp_path) if e == "done"}
    assert len(pids) == 2  # both computed some
    assert stored(store) == 16
    assert Claims(store).holders() == {}  # every claim released


def _claim_and_wait(store: str, key: str, flag: str) -> None:  # run in a child process
    c = Claims(store)
    assert c.claim([key]) == {key}
    Path(flag).touch()
    time.sleep(600)


def test_claim_of_a_dead_writer_is_taken_over(tmp_path):
    store = tmp_path / "d.h5"
    flag = tmp_path / "claimed"
    code = (f"import sys; sys.path.insert(0, {str(TESTS)!r}); "
            "from test_labelling_faults import _claim_and_wait; "
            f"_claim_and_wait({str(store)!r}, 'k1', {str(flag)!r})")
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        wait_for(flag.exists, "the child's claim")
        mine = Claims(store)
        assert mine.claim(["k1", "k2"]) == {"k2"}  # a live writer holds k1
    finally:
        child.kill()
        child.wait()
    assert mine.claim(["k1"]) == {"k1"}  # its holder is dead: taken over
    mine.close()
    assert Claims(store).holders() == {}


def test_claim_through_a_symlink_and_stale_lease(tmp_path):
    store = tmp_path / "d.h5"
    store.touch()
    (tmp_path / "link.h5").symlink_to(store)
    a, b = Claims(store), Claims(tmp_path / "link.h5")
    assert a.path == b.path  # one store, one claims table
    assert a.claim(["k"]) == {"k"} and b.claim(["k"]) == set()
    a.close()
    assert b.claim(["k"]) == {"k"}
    # a lease of a writer on another host lapses when it is not renewed
    c = Claims(store, ttl_s=60)
    with c._table() as table:
        table["far"] = {"pid": 1, "host": "elsewhere", "start": "1", "token": "x",
                        "time": time.time()}
    assert c.claim(["far"]) == set()
    with c._table() as table:
        table["far"]["time"] = time.time() - 61
    assert c.claim(["far"]) == {"far"}
    b.close()
    c.close()
