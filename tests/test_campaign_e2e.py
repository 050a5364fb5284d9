"""End to end: a small lj7 campaign on local threads converges with an error bar; killed
(SIGKILL) between generations, during labelling and during training, then resumed, it
finishes with the same dataset as an uninterrupted run and never labels a configuration
twice."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from tiny_campaign import SMALL

from alflow.campaign.rundir import read_lines
from alflow.dataset import LabelStore
from alflow.examples import write_example

pytestmark = pytest.mark.slow



def _campaign(tmp: Path) -> Path:
    path = write_example("lj7", tmp)
    data = yaml.safe_load(path.read_text())
    for k, v in SMALL.items():
        data[k] = {**data.get(k, {}), **v} if isinstance(v, dict) else v
    path.write_text(yaml.safe_dump(data))
    return path


def _alflow(*args: str, pause: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("ALFLOW_PAUSE_AT", None)
    if pause:
        env["ALFLOW_PAUSE_AT"] = pause
    exe = str(Path(sys.executable).parent / "alflow")
    return subprocess.Popen([exe, *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _run_to_end(*args: str) -> str:
    p = _alflow(*args)
    out, _ = p.communicate(timeout=900)
    assert p.returncode == 0, out
    return out


def _kill_at(run: Path, args: list[str], point: str) -> None:
    p = _alflow(*args, pause=point)
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        if any(e.get("event") == "paused" and f"{e['point']}:{e['generation']}" == point
               for e in read_lines(run / "events.jsonl")):
            break
        assert p.poll() is None, p.communicate()[0]
        time.sleep(0.2)
    else:
        pytest.fail(f"never reached {point}")
    p.send_signal(signal.SIGKILL)
    p.wait()


def _dataset(run: Path) -> dict[str, float]:
    return {r.key: r.energy for r in LabelStore(run / "dataset.h5").records(status=None)}


def test_campaign_converges_and_survives_kill_minus_nine(tmp_path: Path):
    yaml_path = _campaign(tmp_path / "c")
    ref = tmp_path / "ref"
    _run_to_end("run", str(yaml_path), "--dir", str(ref))
    st = json.loads(_run_to_end("status", str(ref), "--json"))
    assert st["converged"] is True and st["state"] == "finished"
    d = st["delta_f"]
    assert (d["from"], d["to"]) == ("pbp", "coh")
    assert np.isfinite(d["value_ev"]) and d["error_ev"] > 0
    assert st["temperature_k"] == 18.0 and st["labels"]["ok"] > 0
    assert st["oracle_calls"] == st["labels"]["ok"] + st["labels"]["failed"]

    run = tmp_path / "killed"
    _kill_at(run, ["run", str(yaml_path), "--dir", str(run)], "generation:0")
    for point in ("label:1", "train:1"):
        _kill_at(run, ["resume", str(run)], point)
    _run_to_end("resume", str(run))
    st2 = json.loads(_run_to_end("status", str(run), "--json"))
    assert st2["converged"] is True
    assert _dataset(run) == _dataset(ref)  # same configurations, same labels
    keys = [e["key"] for e in read_lines(run / "oracle_calls.jsonl")]
    assert len(keys) == len(set(keys))  # the oracle never ran twice on one configuration
    assert st2["delta_f"]["value_ev"] == pytest.approx(d["value_ev"], rel=1e-6, abs=1e-9)
    events = [e["event"] for e in read_lines(run / "events.jsonl")]
    assert events.count("run_start") == 4 and "task_cached" in events
