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


def test_committee_members_are_tasks_submitted_at_once(tmp_path: Path):
    """Each committee member is a task of its own, run in the driver's worker processes, every
    member submitted before any is awaited; the committee written from them holds every
    member and equals a one-process training of the same labels (same seeds, one thread)."""
    import json

    import torch

    from alflow.campaign.submit import ProcessPool, run_in_worker
    from alflow.dataset import LabelStore
    from alflow.mlip import MLIPConfig, train_committee
    from alflow.seeds import step_seed

    cfg = _one_generation(tmp_path / "c")
    cfg.convergence.max_generations = 1
    size = MLIPConfig(**cfg.mlip).committee_size
    assert size >= 2
    inline = inline_submitters(cfg.executors.values())
    all_submitted = threading.Barrier(size, timeout=120)
    members: list[int] = []
    pool = ProcessPool(size)

    def submit(fn, *args, **kwargs):
        if fn is not steps.train_member:
            return inline["gpu"](fn, *args, **kwargs)
        members.append(args[-1])
        fut: Future = Future()

        def run() -> None:
            try:
                all_submitted.wait()  # BrokenBarrierError if the others never come
                fut.set_result(pool.run(run_in_worker, fn, 1, None, *args, **kwargs))
            except Exception as err:  # noqa: BLE001 - reported by the future
                fut.set_exception(err)

        threading.Thread(target=run, daemon=True).start()
        return fut

    run = create_run_dir(tmp_path / "run")
    try:
        execute(cfg, run, progress=False,
                submitters={label: submit for label in cfg.executors.values()})
    finally:
        pool.close()
    assert sorted(members) == list(range(size))
    model_dir = run.models(0)
    meta = json.loads((model_dir / "committee.json").read_text())
    assert meta["members"] == [f"member_{k}" for k in range(size)]

    # the same committee trained in one call, members one after the other, one thread
    store = LabelStore(run.dataset, create=False)
    atoms = [r.to_atoms() for r in store.records(status="ok")
             if r.tags.get("purpose") == "bootstrap"]
    mlip = MLIPConfig(**{"seed": step_seed(cfg.seed, "train", 0), **cfg.mlip})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ref = train_committee(atoms, tmp_path / "one-call", mlip)
    finally:
        torch.set_num_threads(threads)
    for k in range(size):
        a = torch.load(model_dir / f"member_{k}" / "best.pt", weights_only=True)
        b = torch.load(ref / f"member_{k}" / "best.pt", weights_only=True)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[n], b[n]) for n in a)

