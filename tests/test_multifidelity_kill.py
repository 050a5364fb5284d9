"""A multi-fidelity campaign killed (SIGKILL, at named pause points: never a timer) while the
cheap oracle labels, while the expensive oracle labels and while the committee is fine-tuned,
then resumed, ends with the labels of an uninterrupted run and never computes a label of either
oracle twice; ``alflow status --json`` names the expensive oracle and a loadable committee."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mf_campaign import mf_campaign
from test_campaign_e2e import _alflow, _dataset, _kill_at, _run_to_end

from alflow.campaign.rundir import read_lines
from alflow.dataset import LabelStore

pytestmark = pytest.mark.slow


def test_multifidelity_campaign_survives_kill_minus_nine(tmp_path: Path):
    yaml_path = mf_campaign(tmp_path / "c", "transfer")
    ref = tmp_path / "ref"
    _run_to_end("run", str(yaml_path), "--dir", str(ref))

    run = tmp_path / "killed"
    _kill_at(run, ["run", str(yaml_path), "--dir", str(run)], "label:0")  # cheap labels
    _kill_at(run, ["resume", str(run)], "label:1")  # expensive labels
    _kill_at(run, ["resume", str(run)], "train:1")  # fine-tuning
    _run_to_end("resume", str(run))
    assert _dataset(run) == _dataset(ref)
    calls = [(e["key"], e["attempt"]) for e in read_lines(run / "oracle_calls.jsonl")]
    assert len(calls) == len(set(calls))  # neither oracle labelled a configuration twice
    by_method = LabelStore(run / "dataset.h5").summary()["by_method"]
    assert len(by_method) == 2 and all(m["ok"] > 0 for m in by_method.values())
    assert len(calls) == sum(m["ok"] + m["failed"] for m in by_method.values())

    st = json.loads(_run_to_end("status", str(run), "--json"))
    hi = next(n for n in by_method if n.startswith("ase:lj"))
    assert st["history"][0]["oracle"].startswith("ase:morse")
    assert {n: c["ok"] for n, c in st["labels_by_oracle"].items()} == {
        n: m["ok"] for n, m in by_method.items()}
    assert st["delta_f"]["corrected_to"] == hi
    assert st["model_dir"] == str(run / "models" / "gen002")
    code = ("import sys; from ase.io import read; from alflow.mlip import load; "
            "a = read(sys.argv[2]); a.calc = load(sys.argv[1]); "
            "print(a.get_potential_energy())")
    p = _alflow("status", str(run))  # the text view names the oracle too
    out, _ = p.communicate(timeout=300)
    assert hi in out
    xyz = sorted((tmp_path / "c" / "structures").glob("pbp*"))[0]
    e = subprocess.run([sys.executable, "-c", code, st["model_dir"], str(xyz)],
                       capture_output=True, text=True, check=True).stdout
    assert np.isfinite(float(e))


def test_pretrain_config_error_is_rc_2(tmp_path: Path):
    path = mf_campaign(tmp_path / "c")
    path.write_text(path.read_text().replace("mode: transfer", "mode: stacked"))
    p = _alflow("run", str(path), "--dir", str(tmp_path / "run"))
    out, _ = p.communicate(timeout=300)
    assert p.returncode == 2 and "pretrain.mode" in out, out
