"""``alflow train`` / ``alflow evaluate`` on a label store; the torchrun launcher of the app."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from alflow.cli import app
from alflow.dataset import LabelRecord, LabelStore
from alflow.structures import config_key

sys.path.insert(0, str(Path(__file__).parent))
from test_mlip import emt_frames  # noqa: E402


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "data.h5"
    st = LabelStore(path)
    method = {"name": "ase:emt"}
    recs = []
    for k, a in enumerate(emt_frames(24, seed=7)):
        recs.append(LabelRecord.from_atoms(a, config_key(a, method), "ok",
                                           energy=a.get_potential_energy(),
                                           forces=a.get_forces(), method=method,
                                           tags={"state": "oct" if k % 2 else "other"}))
    st.append_many(recs)
    return path


def test_train_and_evaluate_cli(store, tmp_path):
    cfg = tmp_path / "mlip.yaml"
    cfg.write_text("committee_size: 2\nepochs: 3\nbatch_size: 8\n")
    r = CliRunner().invoke(app, ["train", str(store), "--out", str(tmp_path / "m"),
                                 "--config", str(cfg)])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "m" / "committee.json").exists()
    r = CliRunner().invoke(app, ["evaluate", str(tmp_path / "m"), str(store), "--json",
                                 str(tmp_path / "e.json")])
    assert r.exit_code == 0, r.output
    for word in ("oct", "other", "total", "F MAE"):
        assert word in r.output
    import json

    res = json.loads((tmp_path / "e.json").read_text())
    assert res["oct"]["n"] == 12 and res["total"]["n"] == 24


def test_train_cli_bad_config_names_the_field(store, tmp_path):
    from alflow.cli import main

    cfg = tmp_path / "bad.yaml"
    cfg.write_text("committee_size: 2\nlearning_rate: 0.1\n")
    sys_argv = sys.argv
    sys.argv = ["alflow", "train", str(store), "--out", str(tmp_path / "m"), "--config",
                str(cfg)]
    try:
        with pytest.raises(SystemExit) as exc:
            main()
    finally:
        sys.argv = sys_argv
    assert exc.value.code == 2


def test_training_app_with_torchrun_two_ranks(store, tmp_path):
    from apps.training import run_training

    out = run_training(str(store), str(tmp_path / "tr"), {"committee_size": 1, "epochs": 2,
                                                           "batch_size": 8}, nproc=2,
                       launcher="torchrun")
    import json

    meta = json.loads((Path(out) / "committee.json").read_text())
    assert meta["n_configs"] == 24 and meta["members"] == ["member_0"]
    member = json.loads((Path(out) / "member_0" / "member.json").read_text())
    assert member["epochs"] == 2
