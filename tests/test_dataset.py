"""The label store: round trip, append-only, export, SIGKILL at any step, damage, links, modes."""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
from concurrent.futures import ProcessPoolExecutor

import h5py
import numpy as np
import pytest
from ase import Atoms
from ase.io import read
from typer.testing import CliRunner

from alflow.cli import app
from alflow.dataset import LabelRecord, LabelStore, StoreDamaged, check_store, salvage_store
from alflow.errors import AlflowError, InputError
from alflow.h5commit import commit_copy, locked
from alflow.structures import config_key


def make_record(i: int, status: str = "ok", n: int = 4, **tags) -> LabelRecord:
    rng = np.random.default_rng(i)
    atoms = Atoms(numbers=[47] * n, positions=rng.normal(0, 2, (n, 3)))
    key = config_key(atoms, {"name": "test"})
    if status == "ok":
        return LabelRecord.from_atoms(atoms, key, "ok", energy=float(-i), forces=rng.normal(
            size=(n, 3)), method={"name": "test"}, provenance={"i": i}, tags=tags)
    return LabelRecord.from_atoms(atoms, key, "failed", reason="scf: not converged",
                                  method={"name": "test"}, tags=tags)


def test_round_trip_and_append_only(tmp_path):
    store = LabelStore(tmp_path / "d.h5")
    assert len(store) == 0
    recs = [make_record(i, state="a" if i % 2 else "b", generation=i) for i in range(4)]
    assert store.append_many(recs) == 4
    assert not store.append(recs[0])  # same key again: nothing written
    changed = make_record(0)
    changed.energy = 123.0
    assert not store.append(changed)  # append-only: no overwrite
    assert len(store) == 4
    back = store.get(recs[1].key)
    assert back.energy == recs[1].energy
    np.testing.assert_array_equal(back.forces, recs[1].forces)
    np.testing.assert_array_equal(back.positions, recs[1].positions)
    assert back.tags == {"state": "a", "generation": 1}
    assert back.provenance == {"i": 1}
    assert store.get("nope") is None
    # reopen from disk
    again = LabelStore(tmp_path / "d.h5")
    assert sorted(again.keys()) == sorted(r.key for r in recs)
    atoms = again.read_atoms(state="a")
    assert len(atoms) == 2
    for a in atoms:
        rec = again.get(a.info["key"])
        assert a.get_potential_energy() == rec.energy
        np.testing.assert_array_equal(a.get_forces(), rec.forces)
        assert a.info["state"] == "a" and a.info["status"] == "ok"


def test_failed_records_and_replace(tmp_path):
    store = LabelStore(tmp_path / "d.h5")
    failed = make_record(7, status="failed")
    assert store.append(failed)
    assert store.read_atoms() == []
    assert len(store.read_atoms(status="failed")) == 1
    ok = make_record(7)
    assert not store.append(ok)
    assert store.append(ok, replace_failed=True)
    assert store.get(ok.key).status == "ok"
    assert store.summary()["by_status"] == {"ok": 1}


def test_ok_record_needs_energy_and_forces():
    with pytest.raises(ValueError, match="finite energy"):
        LabelRecord(key="k", numbers=[1], positions=[[0, 0, 0]], status="ok", energy=None)
    with pytest.raises(ValueError, match="status"):
        LabelRecord(key="k", numbers=[1], positions=[[0, 0, 0]], status="done")


def test_export_extxyz(tmp_path):
    store = LabelStore(tmp_path / "d.h5")
    store.append_many([make_record(i, state="s", extra=[1, 2]) for i in range(3)]
                      + [make_record(9, status="failed")])
    n = store.export_extxyz(tmp_path / "out.extxyz")
    assert n == 3
    images = read(tmp_path / "out.extxyz", ":")
    assert len(images) == 3
    for img in images:
        rec = store.get(img.info["key"])
        assert img.get_potential_energy() == pytest.approx(rec.energy, abs=1e-10)
        np.testing.assert_allclose(img.get_forces(), rec.forces, atol=1e-8)
        np.testing.assert_allclose(img.positions, rec.positions, atol=1e-8)
        assert img.info["state"] == "s"


def test_not_a_store(tmp_path):
    p = tmp_path / "other.h5"
    with h5py.File(p, "w") as f:
        f["x"] = 1
    with pytest.raises(InputError, match="not an alflow label store"):
        LabelStore(p)
    (tmp_path / "garbage.h5").write_text("hello")
    with pytest.raises(InputError, match="cannot open label store"):
        LabelStore(tmp_path / "garbage.h5")
    with pytest.raises(InputError, match="not found"):
        LabelStore(tmp_path / "missing.h5", create=False)


WRITER = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    from ase import Atoms
    import alflow.dataset as ds
    from alflow.dataset import LabelRecord, LabelStore, StoreDamaged, check_store, salvage_store

    path, seed, fault, at = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    ds.FOLD_MIN = 8  # fold the log into a new image every few commits

    def die(*args):
        os.kill(os.getpid(), signal.SIGKILL)

    def arm():
        # a real SIGKILL at one deterministic point of the commit
        if fault == "frame-half":  # half of the commit's frame is written
            real = os.pwrite
            os.pwrite = lambda fd, data, off: (real(fd, data[:len(data) // 2], off), die())
        elif fault == "before-sync":  # the whole frame is written, not yet synced
            os.fdatasync = die
        elif fault == "image-written":  # the new image is written, not yet in place
            os.replace = die
        elif fault == "image-replaced":  # the new image replaced the file: before the dir sync
            real = os.replace
            os.replace = lambda a, b: (real(a, b), die())

    store = LabelStore(path)
    rng = np.random.default_rng(seed)
    i = 0
    while True:
        if i == at:
            arm()
        n = 13
        atoms = Atoms(numbers=[47] * n, positions=rng.normal(0, 3, (n, 3)))
        key = f"{seed}-{i:06d}"
        rec = LabelRecord.from_atoms(atoms, key, "ok", energy=float(i),
                                     forces=rng.normal(size=(n, 3)), tags={"i": i})
        recs = [rec] if i % 3 else [rec] + [LabelRecord.from_atoms(
            atoms, key + f"-b{j}", "failed", reason="x" * 500) for j in range(5)]
        store.append_many(recs)
        for r in recs:
            print(r.key, flush=True)
        i += 1
""")


def _writer(tmp_path, path, seed: int, fault: str = "none", at: int = -1):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    return subprocess.Popen([sys.executable, str(script), str(path), str(seed), fault, str(at)],
                            stdout=subprocess.PIPE, text=True)


def _assert_intact(path, confirmed: set[str]) -> LabelStore:
    store = LabelStore(path)  # opens: every checksum verified
    assert confirmed <= set(store.keys()), "a confirmed record was lost"
    for rec in store.records(status=None):  # every record fully readable
        if rec.status == "ok" and "i" in rec.tags:
            assert rec.energy == rec.tags["i"] and rec.forces.shape == (13, 3)
    assert check_store(path).healthy
    return store


@pytest.mark.parametrize("fault,at", [("frame-half", 5), ("before-sync", 4),
                                      ("image-written", 7), ("image-replaced", 7)])
def test_sigkill_at_each_step_of_a_commit(tmp_path, caplog, fault, at):
    """SIGKILL mid-frame, before the sync, between writing and placing a new image, after
    placing it: the store opens with every reported record, the next writer goes on."""
    path = tmp_path / "crash.h5"
    proc = _writer(tmp_path, path, 1, fault, at)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    confirmed = set(out.split())
    # the fault was armed at commit ``at`` (a new image comes at the first fold after it)
    assert len(confirmed) >= at + 5 * ((at + 2) // 3)
    store = _assert_intact(path, confirmed)
    if fault == "image-written":
        assert list(tmp_path.glob("crash.h5.tmp-*"))  # the killed writer's unplaced image
    assert store.append(make_record(1000))
    assert not list(tmp_path.glob("crash.h5.tmp-*"))  # removed by the next writer
    if fault == "frame-half":
        assert "removing an incomplete commit" in caplog.text
    _assert_intact(path, confirmed)
    assert len(LabelStore(path)) >= len(confirmed) + 1


def test_a_failed_write_is_a_clear_error_and_stores_nothing(tmp_path, monkeypatch):
    """A full disk in the middle of a commit: a clear error, and the store as before."""
    path = tmp_path / "d.h5"
    store = LabelStore(path)
    store.append(make_record(0))
    real_pwrite = os.pwrite

    def half_then_full(fd, data, offset):
        real_pwrite(fd, data[:len(data) // 2], offset)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "pwrite", half_then_full)
    with pytest.raises(AlflowError, match="cannot write label store .*No space left"):
        store.append(make_record(1))
    monkeypatch.undo()
    assert LabelStore(path).keys() == [make_record(0).key] and check_store(path).healthy
    assert store.append(make_record(1)) and len(LabelStore(path)) == 2


def test_zeros_after_the_log_are_an_unfinished_commit(tmp_path, caplog):
    """A power loss during a commit can leave zeros where its frame was being written: the
    store stays healthy and the next writer cuts them off."""
    path = tmp_path / "d.h5"
    store = LabelStore(path)
    store.append(make_record(0))
    with open(path, "ab") as fh:
        fh.write(bytes(5000))
    assert check_store(path).healthy and len(LabelStore(path)) == 1
    assert LabelStore(path).append(make_record(1))
    assert "removing an incomplete commit" in caplog.text
    assert len(LabelStore(path)) == 2 and check_store(path).healthy


def test_sigkill_anywhere_never_loses_a_reported_record(tmp_path):
    """A writer killed after it reported a given number of records (the kill lands anywhere
    in the commit that follows): every reported record is intact afterwards."""
    path = tmp_path / "crash.h5"
    confirmed: set[str] = set()
    for round_, lines in enumerate([1, 7, 19, 3, 40, 12]):
        proc = _writer(tmp_path, path, round_)
        got = [proc.stdout.readline() for _ in range(lines)]
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate()
        assert proc.returncode == -signal.SIGKILL
        confirmed.update("".join(got).split() + out.split())
        _assert_intact(path, confirmed)
    LabelStore(path).append(make_record(1000))
    assert not list(path.parent.glob("crash.h5.tmp-*"))


def _append_range(path: str, start: int) -> int:
    store = LabelStore(path)
    return sum(store.append(make_record(i)) for i in range(start, start + 15))


@pytest.mark.parametrize("names", ["one", "two"])
def test_concurrent_writers_are_serialised(tmp_path, names):
    """Three processes append overlapping ranges, through one name or through a file and a
    symbolic link to it: each key is added exactly once."""
    path = str(tmp_path / "multi.h5")
    LabelStore(path)
    other = path
    if names == "two":
        other = str(tmp_path / "link.h5")
        os.symlink(path, other)
    with ProcessPoolExecutor(3) as pool:
        added = list(pool.map(_append_range, [path, other, path], [0, 10, 20]))
    store = LabelStore(path)
    assert sum(added) == len(store) == 35
    assert check_store(path).healthy


# -- damaged stores ----------------------------------------------------------------------------
def _cli(*args: str) -> tuple[int, str]:
    """``alflow ARGS`` in a real process: exit code and everything it printed."""
    p = subprocess.run([sys.executable, "-c", "from alflow.cli import main; main()", *args],
                       capture_output=True, text=True, timeout=120)
    return p.returncode, p.stdout + p.stderr


def _store_with_image_and_log(path, n_image: int = 12, n_log: int = 6) -> dict[str, LabelRecord]:
    store = LabelStore(path)
    recs = [make_record(i, state="a") for i in range(n_image + n_log)]
    store.append_many(recs[:n_image])
    store.compact()  # the first records in the HDF5 image, the others in the commit log
    for r in recs[n_image:]:
        store.append(r)
    return {r.key: r for r in recs}


def _same(a: LabelRecord, b: LabelRecord) -> bool:
    return (a.key == b.key and a.energy == b.energy and a.tags == b.tags
            and np.array_equal(a.positions, b.positions) and np.array_equal(a.forces, b.forces))


@pytest.mark.parametrize("flips", [200, 64])
def test_randomly_flipped_bytes_give_clear_errors_and_a_salvage(tmp_path, flips):
    """The issue's damage: bytes flipped anywhere. Reading, appending and the CLI say the store
    is damaged and what to do (no traceback); --check exits 1; --salvage copies what is
    intact, every copied record identical to the original."""
    path = tmp_path / "d.h5"
    originals = _store_with_image_and_log(path)
    data = bytearray(path.read_bytes())
    for off in np.random.default_rng(flips).choice(len(data), flips, replace=False):
        data[off] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="d.h5"):
        LabelStore(path).append(make_record(99))
    assert path.read_bytes() == bytes(data)  # nothing appended
    rc, out = _cli("data", str(path))
    assert rc == 2 and "Traceback" not in out and "--salvage" in out, out
    rc, out = _cli("data", str(path), "--check")
    assert rc == 1 and "damaged" in out and "Traceback" not in out, out
    rc, out = _cli("data", str(path), "--salvage", str(tmp_path / "new.h5"))
    assert rc == 0 and "Traceback" not in out, out
    new = LabelStore(tmp_path / "new.h5", create=False)
    assert check_store(tmp_path / "new.h5").healthy
    for rec in new.records(status=None):
        assert _same(rec, originals[rec.key])
    assert new.append(make_record(99))  # the salvaged store takes new records
    rc, out = _cli("data", str(path), "--salvage", str(tmp_path / "new.h5"))
    assert rc == 2 and "exists" in out  # never overwrites


def test_flipped_bytes_in_records_are_found_named_and_refused(tmp_path):
    """64 flipped bytes inside record data (one record of the HDF5 image, one commit of the
    log): the store is not reported healthy, appends are refused, the damaged records are
    named and the 16 others salvaged intact."""
    path = tmp_path / "d.h5"
    originals = _store_with_image_and_log(path)
    opened = LabelStore(path)  # opened while healthy
    with h5py.File(path, "r") as f:
        row = 5
        hit = f["labels/key"][row].decode()
        pos = f["labels/positions"].id.get_offset() + 24 * 4 * row  # its positions (4 atoms)
    data = bytearray(path.read_bytes())
    for off in range(pos, pos + 32):
        data[off] ^= 0x10
    for off in range(len(data) - 600, len(data) - 568):  # inside the last commit's frame
        data[off] ^= 0x10
    path.write_bytes(bytes(data))

    with pytest.raises(StoreDamaged, match="is damaged.*fail their checksum.*--salvage"):
        LabelStore(path)
    with pytest.raises(StoreDamaged):
        opened.append(make_record(99))
    with pytest.raises(StoreDamaged):
        opened.export_extxyz(tmp_path / "x.extxyz")
    assert path.read_bytes() == bytes(data)
    report = check_store(path)
    assert not report.healthy and report.lost_keys == [hit] and report.uncounted
    assert report.intact == 16
    report = salvage_store(path, tmp_path / "new.h5")
    new = LabelStore(tmp_path / "new.h5", create=False)
    assert len(new) == 16 and hit not in new
    for rec in new.records(status=None):
        assert _same(rec, originals[rec.key])


def test_a_damaged_header_is_damage_and_everything_is_salvaged(tmp_path):
    """The first bytes of the file (where the log starts) damaged: the store is reported
    damaged, not foreign, and the salvage finds the image and every commit of the log."""
    path = tmp_path / "d.h5"
    originals = _store_with_image_and_log(path)
    data = bytearray(path.read_bytes())
    data[0:8] = b"garbage!"
    path.write_bytes(bytes(data))
    with pytest.raises(StoreDamaged, match="header"):
        LabelStore(path)
    report = salvage_store(path, tmp_path / "new.h5")
    assert report.intact == 18 and not report.lost_keys
    new = LabelStore(tmp_path / "new.h5", create=False)
    assert all(_same(r, originals[r.key]) for r in new.records(status=None)) and len(new) == 18


def _write_format_1(path, recs: list[LabelRecord]) -> None:
    """A store as alflow wrote it before format 2: one HDF5 group per record."""
    with h5py.File(path, "w") as f:
        f.attrs["format"] = "alflow-labels"
        f.attrs["version"] = 1
        g = f.create_group("labels")
        for rec in recs:
            r = g.create_group(rec.key)
            for name in ("numbers", "positions", "cell", "pbc"):
                r[name] = getattr(rec, name)
            if rec.forces is not None:
                r["forces"] = rec.forces
            r.attrs["status"] = rec.status
            r.attrs["reason"] = rec.reason
            r.attrs["energy"] = np.nan if rec.energy is None else rec.energy
            for name in ("method", "provenance", "tags"):
                r.attrs[name] = json.dumps(getattr(rec, name), sort_keys=True)
            r.attrs["created"] = rec.created


def test_format_1_store_is_read_then_converted_on_first_append(tmp_path):
    path = tmp_path / "old.h5"
    recs = [make_record(i, state="a") for i in range(5)] + [make_record(5, status="failed")]
    _write_format_1(path, recs)
    result = CliRunner().invoke(app, ["data", str(path), "--check"])
    assert result.exit_code == 0 and "format 1 has no checksums" in result.output
    store = LabelStore(path, create=False)
    assert sorted(store.keys()) == sorted(r.key for r in recs)
    assert all(_same(store.get(r.key), r) for r in recs if r.status == "ok")
    assert store.append(make_record(6))
    with h5py.File(path, "r") as f:
        assert f.attrs["version"] == 2
    again = LabelStore(path)
    assert len(again) == 7 and check_store(path).healthy
    result = CliRunner().invoke(app, ["data", str(path), "--check"])
    assert result.exit_code == 0 and "healthy, 7 record(s), every checksum verified" in " ".join(
        result.output.split())
    assert CliRunner().invoke(app, ["data", str(path), "--compact"]).exit_code == 0
    with h5py.File(path, "r") as f:  # plain h5py sees every record
        assert len(f["labels/key"]) == 7
    assert again.get(recs[5].key).reason == "scf: not converged"


# -- file mode and symbolic links ----------------------------------------------------------------
def test_commits_keep_the_file_mode(tmp_path):
    path = tmp_path / "d.h5"
    store = LabelStore(path)
    os.chmod(path, 0o600)
    store.append(make_record(0))  # a commit (log frame)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    store.compact()  # a new image replaces the file
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    os.chmod(path, 0o640)
    store.append(make_record(1))
    store.compact()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640


def test_symlinked_store_keeps_its_link_and_lock(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "other").mkdir()
    real = tmp_path / "real" / "d.h5"
    link = tmp_path / "other" / "link.h5"
    LabelStore(real)
    link.symlink_to(real)
    store = LabelStore(link)
    store.append(make_record(0))
    assert link.is_symlink() and os.readlink(link) == str(real)
    store.compact()  # a new image, in place of the real file
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert (tmp_path / "real" / "d.h5.lock").exists()
    assert not (tmp_path / "other" / "link.h5.lock").exists()
    assert len(LabelStore(real)) == 1
    # a store created through a dangling link is created where the link points
    (tmp_path / "other" / "new.h5").symlink_to(tmp_path / "real" / "new.h5")
    LabelStore(tmp_path / "other" / "new.h5").append(make_record(1))
    assert (tmp_path / "other" / "new.h5").is_symlink()
    assert len(LabelStore(tmp_path / "real" / "new.h5")) == 1


def test_copy_on_write_commits_keep_mode_and_link(tmp_path):
    """alflow.h5commit (the spectrum store's commits, the label store's new images): the real
    file is replaced, with its mode; the link stays a link."""
    real, link = tmp_path / "s.h5", tmp_path / "link.h5"
    with locked(real):
        commit_copy(real, lambda f: 0, init=lambda f: f.create_group("g"))
    os.chmod(real, 0o600)
    link.symlink_to(real)

    def add(f: h5py.File) -> int:
        f["g"][f"x{len(f['g'])}"] = 1
        return 1

    with locked(link):
        assert commit_copy(link, add) == 1
    assert link.is_symlink() and stat.S_IMODE(os.stat(real).st_mode) == 0o600
    with h5py.File(real, "r") as f:
        assert list(f["g"]) == ["x0"]
