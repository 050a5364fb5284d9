"""Multi-fidelity campaigns (alflow.campaign.fidelity, alflow.mlip.transfer): a Morse cheap
oracle, the LJ expensive one, on the tiny lj7 campaign. The cheap stage pretrains, the
expensive stage fine-tunes (transfer) or learns the difference (delta), ΔF is corrected to the
expensive oracle and says so, the latest committee loads from ``status --json``'s
``model_dir``, and a resume recomputes no label of either oracle."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from ase.calculators.lj import LennardJones
from ase.calculators.morse import MorsePotential
from ase.calculators.singlepoint import SinglePointCalculator
from mf_campaign import MORSE, mf_campaign

from alflow.campaign.config import load_campaign
from alflow.campaign.rundir import create_run_dir, read_lines
from alflow.campaign.runner import execute, resume
from alflow.campaign.status import read_status
from alflow.dataset import LabelStore
from alflow.errors import ConfigError

LJ_KW = {"sigma": 3.405, "epsilon": 0.0103, "rc": 34.05, "smooth": False}


def _names(cfg):
    return cfg.pretrain.labeller_config().name, cfg.oracle.labeller_config().name


def _journal(run: Path) -> list[tuple[str, int]]:
    return [(e["key"], e["attempt"]) for e in read_lines(run / "oracle_calls.jsonl")]


def _edit(path: Path, **pretrain) -> Path:
    data = yaml.safe_load(path.read_text())
    data["pretrain"].update(pretrain)
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(("change", "field"), [
    ({"method": "ase:lj", "options": {"ase_kwargs": LJ_KW, "min_distance": 2.0,
                                      "min_covalent_fraction": 0.0}}, "pretrain.method"),
    ({"finetune": {"cutoff": 5.0}}, "pretrain.finetune"),
    ({"finetune": {"lr": -1.0}}, "pretrain.finetune"),
    ({"mode": "stacked"}, "pretrain.mode"),
    ({"generations": 0}, "pretrain.generations"),
    ({"method": "ase:emt"}, "pretrain"),  # EMT has no argon
])
def test_pretrain_config_errors_name_the_field(tmp_path: Path, change: dict, field: str):
    path = _edit(mf_campaign(tmp_path), **change)
    with pytest.raises(ConfigError) as err:
        load_campaign(path)
    assert field in str(err.value), err.value


def test_one_oracle_config_hash_is_unchanged(tmp_path: Path):
    """A campaign without ``pretrain`` hashes as before the field existed (its run
    directories and checkpoints stay valid)."""
    from alflow.campaign.checkpoint import task_key
    from alflow.campaign.runner import config_hash

    path = mf_campaign(tmp_path)
    data = yaml.safe_load(path.read_text())
    del data["pretrain"]
    path.write_text(yaml.safe_dump(data))
    cfg = load_campaign(path)
    dump = cfg.model_dump(mode="json", by_alias=True)
    for k in ("site", "executors", "pretrain"):
        dump.pop(k)
    assert config_hash(cfg) == task_key("campaign", dump)


def _check_stages(cfg, run: Path, st: dict) -> None:
    """Generation 0 is all cheap labels and reports ΔF corrected to the cheap oracle; the
    later ones label with the expensive oracle and are corrected to it; the status's answer
    names the expensive oracle and its committee loads as an ASE calculator."""
    from alflow.mlip import load

    cheap, hi = _names(cfg)
    store = LabelStore(run / "dataset.h5")
    for r in store.records(status=None):
        g = r.tags["generation"]
        assert r.method["name"] == (cheap if g == 0 else hi) or (
            cfg.pretrain.mode == "delta" and r.method["name"] == cheap), (g, r.method)
    gens = {h["generation"]: h for h in st["history"]}
    assert gens[0]["oracle"] == cheap and gens[1]["oracle"] == hi
    assert all(h["oracle"] == hi for g, h in gens.items() if g >= 1)
    assert any(h["corrected_ev"] is not None for g, h in gens.items() if g >= 1)
    d = st["delta_f"]
    assert d["corrected_to"] == (hi if d["dft_corrected_ev"] is not None else None)
    # the expensive stage's labels: the user's structures (both states) and selected ones
    first = [r.tags for r in store.records(method=hi) if r.tags["generation"] == 1]
    assert {t["state"] for t in first if t["purpose"] == "bootstrap"} == {"pbp", "coh"}
    # model_dir: the last generation's committee, an ASE calculator
    live = read_status(run)
    assert set(live["labels_by_oracle"]) == set(st["labels_by_oracle"]) == {cheap, hi}
    assert live["model_dir"] == st["model_dir"] == str(run / "models" / "gen002")
    calc = load(live["model_dir"])
    errors = []
    for rec in store.records(method=hi):
        atoms = rec.to_atoms()
        ref = atoms.get_potential_energy()
        atoms.calc = calc
        e, f = atoms.get_potential_energy(), atoms.get_forces()
        assert f.shape == (7, 3) and np.isfinite(f).all()
        assert np.isfinite(calc.results["force_dev"])
        errors.append(e - ref)
    # the tiny committees (8 epochs) test orchestration, not accuracy (mean error 0.1-0.14 eV
    # here; benchmarks/multifidelity.py measures accuracy)
    assert np.mean(np.abs(errors)) < 0.5, errors


def test_transfer_campaign_pretrains_finetunes_and_corrects_to_the_expensive_oracle(
        tmp_path: Path):
    cfg = load_campaign(mf_campaign(tmp_path / "c", "transfer"))
    run = create_run_dir(tmp_path / "run")
    st = execute(cfg, run, inline=True, progress=False)
    assert st["state"] == "finished"
    _check_stages(cfg, run.root, st)
    cheap, hi = _names(cfg)
    store = LabelStore(run.dataset)
    # the pretrained committee saw cheap labels only; the fine-tuned one started from it
    # (reference energies shifted to the expensive oracle) and saw expensive labels only
    m0 = json.loads((run.models(0) / "committee.json").read_text())
    m1 = json.loads((run.models(1) / "committee.json").read_text())
    n_cheap0 = sum(1 for r in store.records(method=cheap) if r.tags["purpose"] != "reweight")
    assert m0["n_configs"] == n_cheap0
    n_hi1 = sum(1 for r in store.records(method=hi) if r.tags["generation"] == 1
                and r.tags["purpose"] != "reweight")
    assert m1["n_configs"] == n_hi1
    assert m1["init_from"] == str(run.models(1) / "init")
    # the first expensive generation's flows started from the cheap stage's weights
    flows = {(r.generation, r.state): r.result for r in run.step_results("flows")}
    for state in ("pbp", "coh"):
        assert flows[(1, state)]["init_flow"] == str(run.flows(0, state))
        assert "init_flow" not in flows[(0, state)] and "init_flow" not in flows[(2, state)]
    init = json.loads((run.models(1) / "init" / "committee.json").read_text())
    assert init["e0_shift"] != [0.0]
    n_calls = len(_journal(run.root))
    assert n_calls == len(set(_journal(run.root)))
    # the report's parity plots compare the committee with the expensive oracle alone
    from alflow.campaign.report_loader import load_report_data

    parity = load_report_data(run.root, temperatures=[cfg.temperature_k]).parity
    assert sum(len(p.energy_dft_ev) for p in parity) == sum(1 for _ in store.records(
        method=hi))
    # resuming the finished campaign recomputes nothing: every step and label is stored
    again = resume(run.root, inline=True, progress=False)
    assert len(_journal(run.root)) == n_calls
    assert again["delta_f"] == st["delta_f"]
    events = read_lines(run.events)
    last_start = max(i for i, e in enumerate(events) if e["event"] == "run_start")
    assert not [e for e in events[last_start:] if e["event"] == "task_start"]


def test_shift_reference_removes_the_mean_offset(tmp_path: Path):
    """The e0 shift makes the pretrained committee's mean error on the new oracle's labels
    zero (one composition: the least-squares offset), without touching the weights."""
    from ase import Atoms

    from alflow.mlip import MLIPConfig, load, train_committee
    from alflow.mlip.transfer import shift_reference

    rng = np.random.default_rng(0)
    base = Atoms("Ar4", positions=[[0, 0, 0], [3.8, 0, 0], [0, 3.8, 0], [0, 0, 3.8]])

    def labelled(calc, n, offset=0.0):
        out = []
        for _ in range(n):
            a = base.copy()
            a.positions += rng.normal(scale=0.1, size=(4, 3))
            a.calc = calc
            e, f = a.get_potential_energy(), a.get_forces()
            a.calc = SinglePointCalculator(a, energy=e + offset, forces=f)
            out.append(a)
        return out

    cfg = MLIPConfig(cutoff=9.0, committee_size=2, epochs=3, dtype="float64",
                     builtin={"features": 4, "layers": 1, "radial_hidden": 4,
                              "readout_hidden": 4, "n_rbf": 4})
    cheap = train_committee(labelled(MorsePotential(**MORSE["options"]["ase_kwargs"]), 12),
                            tmp_path / "cheap", cfg)
    hi = labelled(LennardJones(**LJ_KW), 6, offset=4 * 12.5)  # another energy zero
    shifted = shift_reference(cheap, hi, tmp_path / "shifted")
    ref = np.array([a.get_potential_energy() for a in hi])
    before, after = (np.array([load(d).get_potential_energy(a.copy()) for a in hi])
                     for d in (cheap, shifted))
    assert abs(np.mean(before - ref)) > 40  # eV: the offset is there before
    assert abs(np.mean(after - ref)) < 1e-9  # and gone after
    assert np.allclose(after - before, (after - before)[0])  # a constant: weights unchanged


def test_delta_committee_is_the_sum_of_its_parts(tmp_path: Path):
    """A Δ-committee's member k is cheap member k plus difference member k: energies and
    forces of the loaded calculator are the sums; difference labels are expensive − cheap."""
    from ase import Atoms

    from alflow.mlip import MLIPConfig, load, train_committee
    from alflow.mlip.transfer import difference_atoms, write_delta_committee

    rng = np.random.default_rng(1)
    base = Atoms("Ar3", positions=[[0, 0, 0], [3.8, 0, 0], [1.9, 3.3, 0]])
    lo, hi = [], []
    for _ in range(8):
        x = base.positions + rng.normal(scale=0.1, size=(3, 3))
        for calc, out in ((MorsePotential(**MORSE["options"]["ase_kwargs"]), lo),
                          (LennardJones(**LJ_KW), hi)):
            a = Atoms("Ar3", positions=x)
            a.calc = calc
            a.get_forces()
            out.append(a)
    diff = difference_atoms(hi, lo)
    assert diff[0].get_potential_energy() == pytest.approx(
        hi[0].get_potential_energy() - lo[0].get_potential_energy())
    assert np.allclose(diff[0].get_forces(), hi[0].get_forces() - lo[0].get_forces())
    cfg = MLIPConfig(cutoff=9.0, committee_size=2, epochs=2, dtype="float64",
                     builtin={"features": 4, "layers": 1, "radial_hidden": 4,
                              "readout_hidden": 4, "n_rbf": 4})
    b = train_committee(lo, tmp_path / "m" / "base", cfg)
    d = train_committee(diff, tmp_path / "m" / "delta", cfg)
    write_delta_committee(tmp_path / "m", b, d)
    assert json.loads((tmp_path / "m" / "committee.json").read_text())["base"] == "base"
    probe = hi[3].copy()
    parts = []
    for path in (b, d, tmp_path / "m"):
        calc = load(path)
        parts.append((calc.get_potential_energy(probe), calc.get_forces(probe),
                      calc.results["energy_std"]))
    assert parts[2][0] == pytest.approx(parts[0][0] + parts[1][0], abs=1e-10)
    assert np.allclose(parts[2][1], parts[0][1] + parts[1][1], atol=1e-10)
    with pytest.raises(ValueError, match="different configurations"):
        difference_atoms(hi[:1], lo[1:2])


def test_delta_campaign_pairs_every_expensive_label_and_resumes_without_labelling(
        tmp_path: Path):
    cfg = load_campaign(mf_campaign(tmp_path / "c", "delta"))
    run = create_run_dir(tmp_path / "run")
    st = execute(cfg, run, inline=True, progress=False)
    _check_stages(cfg, run.root, st)
    cheap, hi = _names(cfg)
    store = LabelStore(run.dataset)
    # every expensive label has a cheap label of the same configuration
    lo = {r.positions.round(8).tobytes() for r in store.records(status=None, method=cheap)}
    assert all(r.positions.round(8).tobytes() in lo
               for r in store.records(status=None, method=hi))
    meta = json.loads((run.models(2) / "committee.json").read_text())
    assert meta["format"] == "alflow-mlip-delta" and meta["cheap_oracle"] == cheap
    n_hi = sum(1 for r in store.records(method=hi) if r.tags["generation"] < 2
               or r.tags["purpose"] != "reweight")
    assert meta["n_pairs"] == n_hi
    n_calls = len(_journal(run.root))
    assert len(set(_journal(run.root))) == n_calls  # no (label, attempt) computed twice
    resume(run.root, inline=True, progress=False)
    assert len(_journal(run.root)) == n_calls


def test_flow_warm_start_copies_weights_not_normalisation(tmp_path: Path):
    """A flow starts from another flow's parameters (same architecture) and keeps its own
    normalisation; another architecture is refused and nothing changes."""
    import torch
    from ase.io import read

    from alflow.examples import DATA
    from alflow.flows.generator import BoltzmannGenerator
    from alflow.flows.model import FlowConfig

    a = read(DATA / "lj7.extxyz", 0)
    x = a.positions[None] + np.random.default_rng(0).normal(scale=0.05, size=(50, 7, 3))
    old = BoltzmannGenerator.build(a.positions, a.numbers, samples=x)
    old.save(tmp_path / "old")
    new = BoltzmannGenerator.build(a.positions, a.numbers, samples=1.02 * x)
    assert new.warm_start(tmp_path / "old")
    p_old, p_new = dict(old.flow.named_parameters()), dict(new.flow.named_parameters())
    assert all(torch.equal(p_old[k], p_new[k]) for k in p_old)
    assert not torch.equal(old.flow.scale, new.flow.scale)  # normalisation: its own seeds
    other = BoltzmannGenerator.build(a.positions, a.numbers, FlowConfig(layers=old.cfg.layers + 2),
                                       samples=x)
    before = {k: p.clone() for k, p in other.flow.named_parameters()}
    assert not other.warm_start(tmp_path / "old")
    assert all(torch.equal(before[k], p) for k, p in other.flow.named_parameters())
    assert not new.warm_start(tmp_path / "missing")
