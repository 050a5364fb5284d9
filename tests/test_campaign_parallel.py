"""The task graph of a generation submits the states' flows steps as independent futures:
each state's step is submitted before any state's result is awaited. Checked with an
injected executor map whose flows futures complete only once every state's step has been
submitted (a graph that waited for one state before submitting the next would stall)."""

import threading
from concurrent.futures import Future
from pathlib import Path

import yaml
from tiny_campaign import SMALL

from alflow.campaign import steps
from alflow.campaign.config import load_campaign
from alflow.campaign.rundir import create_run_dir
from alflow.campaign.runner import execute
from alflow.campaign.submit import inline_submitters
from alflow.examples import write_example


def _one_generation(tmp: Path):
    path = write_example("lj7", tmp)
    data = yaml.safe_load(path.read_text())
    for k, v in SMALL.items():
        data[k] = {**data.get(k, {}), **v} if isinstance(v, dict) else v
    data["convergence"]["max_generations"] = 1
    data["exploration"]["sampler"]["mcmc"] = {"enabled": False}  # the flows on MD seeds only
    path.write_text(yaml.safe_dump(data))
    return load_campaign(path)


def test_states_flows_steps_are_submitted_at_once(tmp_path: Path):
    cfg = _one_generation(tmp_path / "c")
    states = list(cfg.system.states)
    inline = inline_submitters(cfg.executors.values())
    all_submitted = threading.Barrier(len(states), timeout=120)
    submitted: list[str] = []

    def submit(fn, *args, **kwargs):
        if fn is not steps.flows:
            return inline["gpu"](fn, *args, **kwargs)
        submitted.append(args[2])  # the state
        fut: Future = Future()

        def run() -> None:
            try:
                all_submitted.wait()  # BrokenBarrierError if the others never come
                fut.set_result(fn(*args, **kwargs))
            except Exception as err:  # noqa: BLE001 - reported by the future
                fut.set_exception(err)

        threading.Thread(target=run, daemon=True).start()
        return fut

    run = create_run_dir(tmp_path / "run")
    status = execute(cfg, run, progress=False,
                     submitters={label: submit for label in cfg.executors.values()})
    assert sorted(submitted) == sorted(states)
    assert sorted(status["history"][0]["states"]) == sorted(states)  # both steps finished
