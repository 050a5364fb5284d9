"""``alflow spectrum`` end to end on tiny molecules with real PySCF."""

import json

import numpy as np
import pytest
import typer
from ase import Atoms
from ase.io import write
from typer.testing import CliRunner

from alflow.cli import spectrum
from alflow.observables.spectra import integrate


@pytest.fixture()
def cli():
    app = typer.Typer()
    app.callback()(lambda: None)  # keep 'spectrum' a sub-command even if it is the only one
    spectrum.register(app)
    return app


def test_spectrum_cli_writes_sticks_and_average(tmp_path, cli):
    mols = [Atoms("LiH", positions=[[0, 0, 0], [0, 0, d]]) for d in (1.55, 1.65)]
    write(tmp_path / "lih.xyz", mols)
    out = tmp_path / "spec.json"
    args = ["spectrum", str(tmp_path / "lih.xyz"), "--method", "pyscf:pbe/sto-3g",
            "--nstates", "3", "--out", str(out), "--tda", "--width", "0.1",
            "--store", str(tmp_path / "s.h5"), "--threads", "1"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    assert doc["n_ok"] == 2 and doc["method"] == "tda:pbe/sto-3g"
    per = doc["structures"]
    assert all(len(s["excitation_energies_ev"]) == 3 for s in per)
    mean_f = np.mean([sum(s["oscillator_strengths"]) for s in per])
    assert integrate(np.array(doc["grid_ev"]), np.array(doc["intensity"])) == pytest.approx(
        mean_f, rel=1e-6)
    # second run reads the store: same numbers
    r2 = CliRunner().invoke(cli, args)
    assert r2.exit_code == 0 and json.loads(out.read_text())["structures"] == per


def test_spectrum_cli_rejects_non_pyscf_method(tmp_path, cli):
    write(tmp_path / "h2.xyz", Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]]))
    r = CliRunner().invoke(cli, ["spectrum", str(tmp_path / "h2.xyz"), "--method", "ase:emt"])
    assert r.exit_code != 0
    assert "pyscf:XC/BASIS" in str(r.exception)
