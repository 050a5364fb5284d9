"""A committee trained in float64 and evaluated in float32 (``mlip.inference_dtype``): the
loaded members are float32, energies and forces agree with the float64 committee to float32
precision, and the setting does not count as a different training (no retraining)."""

from __future__ import annotations

import json

import numpy as np
import torch
from test_mlip import emt_frames

from alflow.mlip import MLIPConfig, load_potential, train_committee
from alflow.mlip.committee import Committee

CFG = dict(cutoff=4.5, committee_size=2, epochs=3, batch_size=8, dtype="float64",
           builtin={"features": 8, "layers": 1, "n_rbf": 6, "radial_hidden": 8,
                    "readout_hidden": 8})


def test_float64_committee_evaluated_in_float32(tmp_path):
    frames = emt_frames(12)
    out = train_committee(frames, tmp_path / "c", MLIPConfig(**CFG, inference_dtype="float32"))
    meta = json.loads((out / "committee.json").read_text())
    c32 = Committee.load(out)
    assert all(p.dtype == torch.float32 for m in c32.members for p in m.parameters())
    c64 = Committee.load_members(out, meta["members"], MLIPConfig(**CFG), meta["stats"])
    assert all(p.dtype == torch.float64 for m in c64.members for p in m.parameters())

    x = torch.tensor(np.array([a.positions for a in emt_frames(5, seed=3)]))
    sp = c64.species(frames[0].numbers)
    e64, f64 = c64.predict_dense(x, sp)
    e32, f32 = c32.predict_dense(x, sp)
    assert e32.dtype == torch.float64  # summed with the float64 reference energies
    scale_e = e64.abs().max()
    assert torch.allclose(e32, e64, rtol=0, atol=float(1e-5 * scale_e))
    assert torch.allclose(f32.double(), f64, rtol=0, atol=float(1e-4 * f64.abs().max()))
    assert not torch.equal(e32, e64)  # really evaluated in another precision

    pot = load_potential(out, frames[0].numbers)  # what the campaign's steps load
    s = pot.stats(x)
    assert s["energy"].dtype == torch.float64
    assert torch.allclose(s["energy"], e32.mean(0))

    # the same labels and training settings with another inference dtype: no retraining
    again = train_committee(frames, tmp_path / "c", MLIPConfig(**CFG))
    assert json.loads((again / "committee.json").read_text())["created"] == meta["created"]
