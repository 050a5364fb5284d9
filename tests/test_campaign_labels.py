"""Campaign labelling: failing labels retried per config and recorded, journal of oracle
calls, recovery of labels finished while the driver was dead, the driver lock."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from alflow.campaign.checkpoint import Checkpoint
from alflow.campaign.config import load_campaign
from alflow.campaign.generation import Context, label_batch
from alflow.campaign.labels import ingest_pending, label_task
from alflow.campaign.rundir import DriverLock, EventLog, RunDir, oracle_calls, read_lines
from alflow.campaign.runner import config_hash
from alflow.campaign.submit import inline_submitters
from alflow.campaign.system import bootstrap_positions, build_system
from alflow.campaign.tasks import Tasks
from alflow.dataset import LabelStore
from alflow.errors import AlflowError
from alflow.examples import write_example


def _context(tmp_path: Path, min_distance: float, retries: int) -> Context:
    path = write_example("lj7", tmp_path / "lj7")
    data = yaml.safe_load(path.read_text())
    data["oracle"]["options"]["min_distance"] = min_distance  # the oracle refuses close pairs
    data["retries"] = retries
    path.write_text(yaml.safe_dump(data))
    cfg = load_campaign(path)
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    events = EventLog(run.events)
    return Context(cfg, run, build_system(cfg), LabelStore(run.dataset),
                   Tasks(Checkpoint(run.results), events, retries,
                         inline_submitters(cfg.executors.values())), events,
                   config_hash(cfg))


def test_failing_labels_are_retried_recorded_and_the_rest_stored(tmp_path: Path):
    ctx = _context(tmp_path, min_distance=3.45, retries=2)
    pos, states = bootstrap_positions(ctx.system, 5, 0.2, seed=3)
    tags = [{"state": s, "generation": 0, "purpose": "bootstrap"} for s in states]
    d_min = np.array([np.min(np.linalg.norm(x[:, None] - x[None], axis=-1)
                             + 1e9 * np.eye(len(x))) for x in pos])
    bad = d_min < 3.45
    assert 0 < bad.sum() < len(pos)  # the test needs both kinds
    recs = label_batch(ctx, pos, tags, 0)
    assert len(recs) == len(pos)
    status = {r.key: r.status for r in recs}
    assert sum(s == "failed" for s in status.values()) == bad.sum()
    summary = ctx.store.summary()["by_status"]
    assert summary == {"ok": int((~bad).sum()), "failed": int(bad.sum())}
    journal = read_lines(ctx.run.oracle_journal)
    per_key: dict[str, int] = {}
    for line in journal:
        per_key[line["key"]] = per_key.get(line["key"], 0) + 1
    for r in recs:  # a failing configuration is tried 1 + retries times, a good one once
        assert per_key[r.key] == (3 if r.status == "failed" else 1)
        if r.status == "failed":
            assert "rejected" in r.reason and r.provenance["attempts"] == 3
    assert oracle_calls(ctx.run) == int(3 * bad.sum() + (~bad).sum())
    failed_events = [e for e in read_lines(ctx.run.events)
                     if e["event"] == "label" and e["status"] == "failed"]
    assert len(failed_events) == bad.sum()
    # a second pass computes nothing: every key is stored (failed ones included)
    label_batch(ctx, pos, tags, 0)
    assert oracle_calls(ctx.run) == len(journal)
    assert not list(ctx.run.pending.glob("*.json"))


def test_labels_finished_while_the_driver_was_dead_are_recovered(tmp_path: Path):
    ctx = _context(tmp_path, min_distance=2.0, retries=0)
    pos, _ = bootstrap_positions(ctx.system, 1, 0.05, seed=0)
    lcfg = ctx.cfg.oracle.labeller_config()
    from alflow.labelling import make_labeller

    lab = make_labeller(lcfg)
    atoms = ctx.system.atoms(pos[0])
    rec = label_task(atoms, lcfg, {"state": "pbp"}, lab.key(atoms), str(ctx.run.root), 0)
    pending = ctx.run.pending / f"{rec.key}.json"
    assert pending.exists() and json.loads(pending.read_text())["status"] == "ok"
    assert not ctx.store.has(rec.key)
    assert ingest_pending(ctx.store, ctx.run.pending) == 1
    stored = ctx.store.get(rec.key)
    assert stored.energy == pytest.approx(rec.energy) and not pending.exists()
    label_batch(ctx, pos[:1], [{"state": "pbp"}], 0)  # stored: no new oracle call
    assert oracle_calls(ctx.run) == 1


def test_one_driver_per_run_directory(tmp_path: Path):
    lock = tmp_path / "run" / "lock"
    with DriverLock(lock):
        with pytest.raises(AlflowError, match="another driver"):
            DriverLock(lock).acquire()
    with DriverLock(lock):  # released on exit
        pass


def test_status_text_gives_history_in_kt_with_the_corrected_value():
    from alflow.campaign.rundir import format_status

    kt = 0.0015511
    hist = [{"generation": 0, "value_ev": 2.0 * kt, "error_ev": 0.05 * kt,
             "corrected_ev": 1.9 * kt, "corrected_error_ev": 0.1 * kt, "labels_total": 94,
             "rhat": 1.2},
            {"generation": 1, "value_ev": None, "error_ev": None, "labels_total": 120}]
    st = {"name": "x", "kt_ev": kt, "history": hist,
          "delta_f": {"from": "a", "to": "b", "value_ev": 2.0 * kt, "error_ev": 0.05 * kt,
                      "dft_corrected_ev": 1.9 * kt, "dft_corrected_error_ev": 0.1 * kt}}
    text = format_status(st)
    assert "gen   0: ΔF +2.000 ± 0.050 kT  corrected +1.900 ± 0.100 kT  labels 94" in text
    assert "gen   1: ΔF —  labels 120" in text
    assert "corrected to the oracle: " in text and "(1.900 ± 0.100 kT)" in text
    st.pop("kt_ev")  # without a temperature the history stays in eV
    assert f"ΔF {2.0 * kt:+.5f} ± {0.05 * kt:.5f} eV" in format_status(st)


def test_reweight_samples_are_distinct_mcmc_draws_with_their_energies():
    """The oracle correction labels production draws of the walkers (exact Boltzmann samples
    of the state), distinct and with the energy recorded for that draw; without MCMC, flow
    samples resampled by weight."""
    from types import SimpleNamespace

    from alflow.campaign.steps import _boltzmann_picks

    rng = np.random.default_rng(0)
    pos = rng.normal(size=(30, 4, 7, 3))
    mcmc = SimpleNamespace(positions=pos, energy=pos.sum((2, 3)))
    flow = SimpleNamespace(positions=rng.normal(size=(50, 7, 3)), log_w=np.zeros(50),
                           energy=np.zeros(50))
    x, e = _boltzmann_picks(flow, mcmc, 16, np.random.default_rng(1))
    assert x.shape == (16, 7, 3)
    assert np.allclose(e, x.sum((1, 2)))
    assert len({row.tobytes() for row in x}) == 16
    lw = np.full(50, -np.inf)
    lw[7] = 0.0  # all the weight on one flow sample
    x, _ = _boltzmann_picks(SimpleNamespace(**{**vars(flow), "log_w": lw}), None, 5,
                            np.random.default_rng(1))
    assert np.allclose(x, flow.positions[7])
