"""Parsl apps of labelling on a real (thread-pool) Parsl config: each label stored once."""

from __future__ import annotations

import numpy as np
import parsl
import pytest
from ase import Atoms

from alflow.campaign.sites import local_threads
from alflow.dataset import LabelStore
from alflow.labelling import make_labeller


@pytest.fixture(scope="module")
def dfk(tmp_path_factory):
    dfk = parsl.load(local_threads(tmp_path_factory.mktemp("parsl"), max_threads=2))
    yield dfk
    dfk.cleanup()
    parsl.clear()


def batch(n: int, seed: int) -> list[Atoms]:
    rng = np.random.default_rng(seed)
    base = np.array([[0, 0, 0], [2.8, 0, 0], [1.4, 2.4, 0], [1.4, 0.8, 2.3]])
    return [Atoms("Ag4", positions=base + rng.normal(0, 0.05, base.shape)) for _ in range(n)]


def test_parsl_tasks_store_each_label_once(dfk, tmp_path):
    from apps.labelling import label_configs

    store = LabelStore(tmp_path / "d.h5")
    images = batch(6, 0) + batch(2, 0)  # two repeats
    tags = [{"state": "a", "generation": i} for i in range(8)]
    recs = label_configs(images, "ase:emt", store, tags)
    assert len(store) == 6 and all(r.status == "ok" for r in recs)
    lab = make_labeller("ase:emt")
    for a, r in zip(images, recs, strict=True):
        assert r.key == lab.key(a) and r.energy == pytest.approx(lab.label(a).energy)
    assert store.get(recs[2].key).tags == {"state": "a", "generation": 2}
    again = label_configs(images, "ase:emt", store)
    assert [r.created for r in again] == [r.created for r in recs] and len(store) == 6


def test_mpi_app_writes_a_shard_the_driver_merges(dfk, tmp_path):
    from apps.labelling import label_configs_mpi

    store = LabelStore(tmp_path / "d.h5")
    images = batch(5, 1)
    label_configs_mpi(images[:2], "ase:emt", store, tmp_path / "w1", tags={"state": "x"})
    assert len(store) == 2
    recs = label_configs_mpi(images, "ase:emt", store, tmp_path / "w2",
                             tags=[{"state": "x", "i": i} for i in range(5)])
    assert len(store) == 5 and all(r.status == "ok" for r in recs)
    assert len(LabelStore(next((tmp_path / "w2").glob("shard-*.h5")))) == 3  # only the new
    assert store.get(recs[4].key).tags == {"state": "x", "i": 4}
    lab = make_labeller("ase:emt")
    # the task labels the positions on the key's 1e-6 Å grid
    np.testing.assert_allclose(recs[3].positions, images[3].positions, atol=6e-7)
    assert recs[3].energy == pytest.approx(lab.label(recs[3].to_atoms()).energy, abs=1e-9)
