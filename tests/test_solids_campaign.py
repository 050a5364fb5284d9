"""Crystal-polymorph campaigns (kind: crystal): examples and config errors, a tiny periodic
campaign end to end on Parsl's local executor, resume from the checkpoint store, a failing
task that loses nothing else, status and report."""

from __future__ import annotations

import json
import sys
from concurrent.futures import Future
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from alflow.campaign import crystal
from alflow.campaign.crystal_config import load_crystal_campaign
from alflow.campaign.rundir import create_run_dir, read_lines
from alflow.campaign.submit import inline_submitters
from alflow.cli import app, main
from alflow.errors import ConfigError
from alflow.examples import write_example

# 4-atom cells (fcc: one cubic cell; hcp: one orthorhombic cell), reduced LJ
TINY = {"kind": "crystal", "name": "tiny", "potential": {"kind": "lj"}, "n_atoms": 4,
        "pressure": 0.0, "temperatures": [0.05], "temperature": 0.05,
        "pressures": [0.0, 0.5],
        "ti": {"steps": 100, "copies": 1, "n_lambda": 2, "equil": 50},
        "flows": {"layers": 2, "hidden": 8, "train_steps": 2, "batch": 16, "samples": 200}}


def _yaml(tmp_path: Path, data: dict, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("name,kind,units", [("lj-fcc-hcp", "lj", "epsilon"),
                                              ("cu-fcc-hcp", "emt", "eV")])
def test_examples_write_valid_crystal_campaigns(tmp_path, name, kind, units):
    path = write_example(name, tmp_path / name)
    cfg = load_crystal_campaign(path)
    assert cfg.kind == "crystal" and cfg.potential.kind == kind
    assert cfg.potential.units["energy"] == units
    tasks = crystal.plan(cfg)
    # 2 phases × 2 methods per state point; the shared (T, P) point once
    assert len(tasks) == 4 * len(cfg.state_points())
    assert len({t.key for t in tasks}) == len(tasks)
    assert (cfg.temperature, cfg.pressure) in cfg.state_points()


@pytest.mark.parametrize("change,message", [
    ({"potential": {"kind": "lj", "cutof": 2.5}}, "potential.cutof: unknown field"),
    ({"n_atoms": None}, "n_atoms"),
    ({"n_atoms": 12}, "n_atoms: fcc needs 4n³"),
    ({"potential": {"kind": "lj", "element": "Cu"}}, "element applies to kind 'emt'"),
    ({"potential": {"kind": "emt", "element": "Fe"}}, "element: ASE's EMT"),
    ({"reference": "hcp", "phases": ["fcc", "fcc"]}, "phases: each phase once"),
    ({"temperatures": [0.1, -0.1]}, "temperatures"),
    ({"ti": {"steps": 10}}, "ti.steps"),
    ({"flows": {"box": "cubic"}}, "flows.box"),
    ({"ti": {"enabled": False}, "flows": {"enabled": False}}, "nothing to compute"),
    ({"executor": "gpu", "site": "no-such-site"}, "no-such-site"),
])
def test_config_errors_name_the_field(tmp_path, change, message):
    data = {**TINY, **change}
    data = {k: v for k, v in data.items() if v is not None}
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_crystal_campaign(_yaml(tmp_path, data))


def test_alflow_run_refuses_a_bad_crystal_config_with_rc_2(tmp_path, monkeypatch, capsys):
    path = _yaml(tmp_path, {**TINY, "pressures": "high"})
    monkeypatch.setattr(sys, "argv", ["alflow", "run", str(path), "--dir",
                                      str(tmp_path / "run")])
    with pytest.raises(SystemExit) as exc:
        main()
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert "pressures" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def _started(run_dir: Path) -> list[dict]:
    ev = read_lines(run_dir / "events.jsonl")
    last = max(i for i, e in enumerate(ev) if e["event"] == "run_start")
    return ev[last:]


def test_tiny_campaign_end_to_end_then_resume_recomputes_nothing(tmp_path):
    path = _yaml(tmp_path, TINY)
    run_dir = tmp_path / "run"
    st = crystal.start(path, run_dir)  # site local-threads: Parsl, the driver's workers
    assert st["state"] == "finished" and st["tasks"] == {"total": 8, "done": 8, "failed": 0}
    results = sorted((run_dir / "results").glob("crystal_point-*.json"))
    assert len(results) == 8 and not list(run_dir.rglob("*.pkl"))
    ran = _started(run_dir)
    assert sum(e["event"] == "task_done" for e in ran) == 8

    # physics: hcp is below fcc for LJ truncated and shifted at 2.5σ (the lattices' and the
    # vibrations' differences), by both methods; TI and flow agree up to O(kT/N) terms
    # (the TI's G = A(V*) + PV* drops the volume fluctuations) and their error bars
    for scan in ("temperature_scan", "pressure_scan"):
        for pt in st["delta_g"][scan]["points"]:
            ti, flow = pt["delta_g"]["hcp"]["ti"], pt["delta_g"]["hcp"]["flow"]
            assert ti[0] < -5 * ti[1] and flow[0] < -5 * flow[1]
            kt_per_atom = pt["temperature"] / 4
            assert abs(ti[0] - flow[0]) < 0.5 * kt_per_atom + 3 * (ti[1] ** 2 + flow[1] ** 2) ** .5
            assert 0.2 < pt["ess"]["fcc"] <= 1 and 0.05 < pt["ess"]["hcp"] <= 1
    # dG/dP = V: from P* = 0 to 0.5, G/N rises by between 0.5 V(0.5)/N and 0.5 V(0)/N
    g0, g1 = (st["delta_g"]["pressure_scan"]["points"][i]["g"]["ti"]["fcc"] for i in (0, 1))
    slack = 3 * (g0[1] ** 2 + g1[1] ** 2) ** 0.5
    assert 0.5 * g1[2] - slack < g1[0] - g0[0] < 0.5 * g0[2] + slack
    assert g1[2] < g0[2]  # compressed

    before = {p.name: p.stat().st_mtime_ns for p in (run_dir / "results").iterdir()}
    res = CliRunner().invoke(app, ["resume", str(run_dir)])  # the CLI's dispatch
    assert res.exit_code == 0, res.output
    assert "state: finished" in res.output and "tasks: 8/8 done" in res.output
    st2 = json.loads((run_dir / "status.json").read_text())
    assert st2["delta_g"] == st["delta_g"]
    again = _started(run_dir)
    assert not [e for e in again if e["event"] in ("task_start", "task_done")]
    assert sum(e["event"] == "task_cached" for e in again) == 8
    assert {p.name: p.stat().st_mtime_ns for p in (run_dir / "results").iterdir()} == before

    res = CliRunner().invoke(app, ["status", str(run_dir)])
    assert res.exit_code == 0, res.output
    assert "tasks: 8/8 done, 0 failed" in res.output and "ΔG(hcp − fcc)" in res.output
    res = CliRunner().invoke(app, ["status", str(run_dir), "--json"])
    assert json.loads(res.output)["kind"] == "crystal"

    res = CliRunner().invoke(app, ["report", str(run_dir)])
    assert res.exit_code == 0, res.output
    out = run_dir / "report"
    page = out / "index.html"
    assert (out / "figures" / "delta_g_temperature.png").stat().st_size > 1000
    assert (out / "figures" / "delta_g_pressure.png").stat().st_size > 1000
    rep = json.loads((out / "report.json").read_text())
    assert rep["missing"] == [] and "Einstein-crystal TI" in page.read_text()
    assert "flow − TI" in (out / "report.txt").read_text()

    other = _yaml(tmp_path, {**TINY, "name": "other"}, "other.yaml")
    with pytest.raises(ConfigError, match=r"run directory of another campaign \('tiny'"):
        crystal.start(other, run_dir)


def test_a_failing_task_loses_nothing_and_resume_runs_only_it(tmp_path):
    data = {**TINY, "pressures": [0.0]}
    cfg = load_crystal_campaign(_yaml(tmp_path, data))
    run = create_run_dir(tmp_path / "run")
    inline = inline_submitters(["cpu"])["cpu"]

    def faulty(fn, spec):
        if spec["method"] == "flow" and spec["phase"] == "hcp":
            fut: Future = Future()
            fut.set_exception(RuntimeError("deterministic fault"))
            return fut
        return inline(fn, spec)

    st = crystal.execute(cfg, run, submitters={"cpu": faulty})
    assert st["state"] == "failed"
    assert st["tasks"] == {"total": 4, "done": 3, "failed": 1}
    assert "deterministic fault" in next(iter(st["failed"].values()))
    pt = st["delta_g"]["temperature_scan"]["points"][0]
    assert pt["delta_g"]["hcp"]["flow"] is None and pt["delta_g"]["hcp"]["ti"] is not None
    failures = [e for e in read_lines(run.events) if e["event"] == "task_failed"]
    assert len(failures) == 2  # retries: 1

    st = crystal.execute(cfg, run, submitters={"cpu": inline})
    assert st["state"] == "finished" and st["tasks"]["done"] == 4
    again = _started(run.root)
    assert sum(e["event"] == "task_done" for e in again) == 1
    assert sum(e["event"] == "task_cached" for e in again) == 3
