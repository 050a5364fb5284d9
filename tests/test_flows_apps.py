"""The flow Parsl apps run on a real Parsl thread executor (labels cpu/gpu)."""

from __future__ import annotations

import numpy as np
import parsl
import pytest
import torch
from flow_targets import HarmonicFrame

from alflow.campaign.sites import local_threads
from alflow.flows import BoltzmannGenerator, FlowConfig


@pytest.fixture
def dfk(tmp_path):
    d = parsl.load(local_threads(tmp_path / "parsl"))
    yield d
    d.cleanup()
    parsl.clear()


def test_mcmc_and_delta_f_apps(dfk, tmp_path):
    from apps.flows import delta_f_app, mcmc_app, train_flow_app

    target = HarmonicFrame(n_atoms=4, s=0.08, temperature_k=100.0, seed=2)
    x0 = target.exact_samples(64, seed=0)
    torch.manual_seed(0)
    bg = BoltzmannGenerator.build(target.reference, target.numbers,
                                  FlowConfig(layers=2, hidden=8), samples=x0)
    bg.save(tmp_path / "flow")
    hist = train_flow_app(str(tmp_path / "flow"), x0, {"steps": 5}).result()
    assert hist["steps"] == 5
    out = mcmc_app(target, target.numbers, str(tmp_path / "flow"), x0, 100.0,
                   {"iterations": 4, "adapt_iterations": 0, "local_steps": 2,
                    "global_steps": 1}).result()
    assert out["positions"].shape == (4, 64, 4, 3)
    assert 0 < out["local_acceptance"] <= 1
    a = {"f_ev": 0.1, "err_ev": 0.003, "temperature_k": 100.0}
    b = {"f_ev": 0.15, "err_ev": 0.004, "temperature_k": 100.0}
    d = delta_f_app(a, b).result()
    assert np.isclose(d["value_ev"], 0.05) and np.isclose(d["error_ev"], 0.005)
