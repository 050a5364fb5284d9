"""``alflow label`` and ``alflow data`` through typer's CliRunner, and one real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from ase import Atoms
from ase.io import read, write
from typer.testing import CliRunner

from alflow.cli import app
from alflow.dataset import LabelStore
from alflow.errors import ConfigError, InputError

LJ = "ase:lj(sigma=3.405, epsilon=0.0103, rc=34.05)"
runner = CliRunner()


def text(result) -> str:
    return " ".join(result.output.split())  # independent of line wrapping


def test_label_example_twice_and_export(tmp_path):
    store = tmp_path / "d.h5"
    r = runner.invoke(app, ["label", "lj7", "--store", str(store), "--method", LJ,
                            "--tag", "generation=0"])
    assert r.exit_code == 0, r.output
    assert "2 to compute" in text(r)
    recs = list(LabelStore(store).records())
    assert sorted(x.tags["state"] for x in recs) == ["bipyramid", "capped_octahedron"]
    assert all(x.tags["generation"] == 0 for x in recs)
    # LJ7 minima: -16.505 and -15.935 epsilon
    e = sorted(x.energy / 0.0103 for x in recs)
    assert e == pytest.approx([-16.505, -15.935], abs=2e-3)
    r = runner.invoke(app, ["label", "lj7", "--store", str(store), "--method", LJ])
    assert r.exit_code == 0 and "nothing to compute" in text(r)
    r = runner.invoke(app, ["data", str(store), "--export", str(tmp_path / "o.extxyz")])
    assert r.exit_code == 0, r.output
    assert "ase:lj" in text(r) and "wrote 2 configuration(s)" in text(r)
    images = read(tmp_path / "o.extxyz", ":")
    assert len(images) == 2 and images[0].get_forces().shape == (7, 3)


def test_default_method_is_pyscf_pbe_def2svp(tmp_path):
    write(tmp_path / "h2.xyz", Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]]))
    r = runner.invoke(app, ["label", str(tmp_path / "h2.xyz"), "-s", str(tmp_path / "d.h5")])
    assert r.exit_code == 0, r.output
    rec = next(LabelStore(tmp_path / "d.h5").records())
    assert rec.method["name"] == "pyscf:pbe/def2-svp" and rec.energy < -30  # about -31.7 eV


def test_config_file(tmp_path):
    cfg = tmp_path / "lab.yaml"
    cfg.write_text("backend: ase\ncalculator: lj\nase_kwargs: {sigma: 3.405, epsilon: 0.0103, "
                   "rc: 34.05}\n")
    r = runner.invoke(app, ["label", "lj7", "-s", str(tmp_path / "d.h5"), "-c", str(cfg)])
    assert r.exit_code == 0, r.output
    # the same method as the shorthand: nothing new
    r = runner.invoke(app, ["label", "lj7", "-s", str(tmp_path / "d.h5"), "-m", LJ])
    assert "nothing to compute" in text(r)


def test_bad_inputs(tmp_path):
    bad = tmp_path / "bad.xyz"
    bad.write_text("3\ncomment\nAg 0 0\n")
    r = runner.invoke(app, ["label", str(bad), "-s", str(tmp_path / "d.h5"), "-m", "ase:emt"])
    assert isinstance(r.exception, InputError) and "cannot read structures" in str(r.exception)
    cfg = tmp_path / "lab.yaml"
    cfg.write_text("backend: ase\ncalculater: emt\n")
    r = runner.invoke(app, ["label", "ag6", "-s", str(tmp_path / "d.h5"), "-c", str(cfg)])
    assert isinstance(r.exception, ConfigError)
    assert str(cfg) in str(r.exception) and "calculater: unknown field" in str(r.exception)
    r = runner.invoke(app, ["data", str(tmp_path / "missing.h5")])
    assert isinstance(r.exception, InputError) and "not found" in str(r.exception)


def test_cli_error_exit_code_and_message(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, "-c", "from alflow.cli import main; main()", "label",
                        "ag6", "-s", str(tmp_path / "d.h5"), "-m", "pyscf:pbe/6-31g"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 2
    assert "error: basis: '6-31g' has no functions for element(s) Ag" in p.stderr
    assert "Traceback" not in p.stderr
