"""The generation's task graph overlaps work: the oracle labels of one state's reweighting
samples start as soon as that state's flows step returns, while another state's flows step
is still running; a resumed finished campaign recomputes nothing."""

import json
from pathlib import Path

import yaml
from tiny_campaign import SMALL

from alflow.campaign.rundir import read_lines
from alflow.campaign.runner import resume, start
from alflow.dataset import LabelStore
from alflow.examples import write_example

SAMPLES, TRAIN_STEPS = 400, 60


def _one_generation(tmp: Path) -> Path:
    path = write_example("lj7", tmp)
    data = yaml.safe_load(path.read_text())
    for k, v in SMALL.items():
        data[k] = {**data.get(k, {}), **v} if isinstance(v, dict) else v
    data["convergence"]["max_generations"] = 1
    # enough flow training and samples that both states have samples inside them
    data["exploration"]["sampler"].update(samples=SAMPLES, train={"steps": TRAIN_STEPS})
    # one "gpu" thread: the states' flows run one after another
    site = tmp / "one-gpu-thread.yaml"
    site.write_text("kind: local-threads\nclasses: {gpu: {max_threads: 1}}\n")
    data["site"] = str(site)
    path.write_text(yaml.safe_dump(data))
    return path


def test_reweight_labels_of_a_state_start_while_another_state_trains(tmp_path: Path):
    run = tmp_path / "run"
    start(_one_generation(tmp_path / "c"), run, progress=False)
    flows = {}  # state -> (t0, t1) epoch s inside its flows step
    for f in (run / "results").glob("flows-*.json"):
        js = json.loads(f.read_text())["result"]
        flows[js["state"]] = (js["_t0"], js["_t1"])
    assert set(flows) == {"pbp", "coh"}
    first = {}  # state -> epoch s at which its first reweighting label started
    for r in LabelStore(run / "dataset.h5", create=False).records(status=None):
        if r.tags.get("purpose") == "reweight":
            s = r.tags["state"]
            first[s] = min(first.get(s, float("inf")), r.provenance["task_t0"])
    assert set(first) == {"pbp", "coh"}
    a, b = sorted(flows, key=lambda s: flows[s][1])  # a's flows step finished first
    assert flows[a][1] <= first[a]  # its labels need its samples
    assert first[a] < flows[b][1], (first, flows)  # ... and ran while b's flows step did
    status = json.loads((run / "status.json").read_text())

    # resuming the finished campaign reads every result and label: nothing is recomputed
    calls = len(read_lines(run / "oracle_calls.jsonl"))
    n_events = len(read_lines(run / "events.jsonl"))
    resume(run, progress=False)
    later = [e["event"] for e in read_lines(run / "events.jsonl")[n_events:]]
    assert "task_cached" in later and "task_start" not in later and "label" not in later
    assert len(read_lines(run / "oracle_calls.jsonl")) == calls
    again = json.loads((run / "status.json").read_text())
    assert again["history"] == status["history"]
