"""Bad input reaches the user as one clear message with exit code 2, never a traceback: binary
files given as configs, a damaged status.json, an element that does not exist. And `alflow
status --json` publishes the public status schema only (no internal keys such as ``_t0``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from alflow.campaign.rundir import append_line, create_run_dir, write_status
from alflow.campaign.status import CampaignStatus
from alflow.cli import main
from alflow.examples import write_example

BINARY = bytes(range(128, 256)) * 3  # not UTF-8 from its first byte


def alflow(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Run the console entry point in-process: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["alflow", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    out = capsys.readouterr()
    return int(exc.value.code or 0), out.out, out.err


@pytest.fixture()
def campaign(tmp_path: Path) -> Path:
    return write_example("lj7", tmp_path / "lj7")


@pytest.mark.parametrize("role", ["campaign", "site", "labeller"])
def test_binary_config_files_are_named_not_decoded(tmp_path, campaign, monkeypatch, capsys,
                                                   role):
    bad = tmp_path / "config.yaml"
    bad.write_bytes(BINARY)
    args = {"campaign": ["run", str(bad), "--dir", str(tmp_path / "run")],
            "site": ["run", str(campaign), "--dir", str(tmp_path / "run"), "--site", str(bad)],
            "labeller": ["label", str(campaign.parent / "structures" / "pbp.xyz"), "--store",
                         str(tmp_path / "d.h5"), "--config", str(bad)]}[role]
    rc, _, err = alflow(monkeypatch, capsys, *args)
    assert rc == 2, err
    assert f"{bad}: not a text file" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_unknown_element_is_named(tmp_path, campaign, monkeypatch, capsys):
    xyz = tmp_path / "qq.xyz"
    xyz.write_text("2\n\nQq 0 0 0\nAr 0 0 3.4\n")
    rc, _, err = alflow(monkeypatch, capsys, "label", str(xyz), "--store",
                        str(tmp_path / "d.h5"), "--method", "ase:lj")
    assert rc == 2 and f"{xyz}: unknown chemical element 'Qq'" in err, err
    (campaign.parent / "structures" / "pbp.xyz").write_text("2\n\nQq 0 0 0\nAr 0 0 3.4\n")
    rc, _, err = alflow(monkeypatch, capsys, "run", str(campaign), "--dir",
                        str(tmp_path / "run"))
    assert rc == 2 and "system.states.pbp.structures" in err and "'Qq'" in err, err


def _status(run_root: Path) -> dict:
    """A status as the driver builds it, with what a flows step returns per state (its
    private epoch times included)."""
    state = {"state": "pbp", "f_ev": -0.3, "err_ev": 0.01, "rhat": 1.004, "_t0": 1.7e9,
             "_t1": 1.7e9 + 5, "acceptance": 0.4, "flow_dir": "/x/flows/gen000/pbp",
             "correction": {"correction_ev": 0.002, "error_ev": 0.001, "n": 16,
                            "temperature_k": 18.0}}
    return {"name": "lj7", "run_dir": str(run_root), "state": "running", "generation": 0,
            "converged": False, "stop_reason": "", "labels": {"ok": 3, "failed": 0},
            "oracle_calls": 3, "temperature_k": 18.0, "kt_ev": 0.00155,
            "delta_f": {"from": "pbp", "to": "coh", "value_ev": 0.003, "error_ev": 0.0001,
                        "dft_corrected_ev": None, "dft_corrected_error_ev": None},
            "history": [{"generation": 0, "value_ev": 0.003, "error_ev": 0.0001,
                         "states": {"pbp": state, "coh": {**state, "state": "coh"}},
                         "wall_s": 12.0}],
            "running": [], "updated": "2026-12-07T12:00:00Z"}


def _keys(obj) -> set[str]:
    if isinstance(obj, dict):
        return set(obj) | {k for v in obj.values() for k in _keys(v)}
    if isinstance(obj, list):
        return {k for v in obj for k in _keys(v)}
    return set()


def test_status_json_publishes_the_public_schema_only(tmp_path, monkeypatch, capsys):
    from alflow.campaign.runner import public_status

    run = create_run_dir(tmp_path / "run")
    write_status(run, public_status(_status(run.root)))
    append_line(run.events, {"event": "warning", "kind": "k", "message": "act on this"})
    rc, out, err = alflow(monkeypatch, capsys, "status", str(run.root))
    assert rc == 0 and "warning: act on this" in out, err
    rc, out, err = alflow(monkeypatch, capsys, "status", str(run.root), "--json")
    assert rc == 0, err
    st = json.loads(out)
    assert not {k for k in _keys(st) if k.startswith("_")}
    assert "wall_s" not in st["history"][0]
    assert CampaignStatus.model_validate(st).model_dump(mode="json", by_alias=True) == st
    assert st["history"][0]["states"]["pbp"]["rhat"] == 1.004
    assert st["history"][0]["states"]["coh"]["correction"]["n"] == 16
    assert st["warnings"] == ["act on this"]
    assert st["delta_f"]["from"] == "pbp" and st["state"] == "interrupted"  # no driver
    # the file itself holds the same public schema
    assert not {k for k in _keys(json.loads(run.status_json.read_text())) if k[0] == "_"}


def test_damaged_status_json_is_a_clear_error(tmp_path, monkeypatch, capsys):
    run = create_run_dir(tmp_path / "run")
    text = json.dumps(_status(run.root))
    run.status_json.write_text(text[: len(text) // 2])
    for args in (["status", str(run.root)], ["status", str(run.root), "--json"]):
        rc, _, err = alflow(monkeypatch, capsys, *args)
        assert rc == 2 and f"{run.status_json}: damaged" in err, err
        assert "alflow resume" in err
    run.status_json.write_text(json.dumps({**_status(run.root), "state": "lost"}))
    rc, _, err = alflow(monkeypatch, capsys, "status", str(run.root))
    assert rc == 2 and "state" in err and "Traceback" not in err, err
