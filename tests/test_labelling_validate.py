"""One validation of the labelling method before any work: every entry point, field named."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from ase import Atoms
from ase.io import write
from typer.testing import CliRunner

from alflow.campaign.config import load_campaign
from alflow.cli import app
from alflow.dataset import LabelStore
from alflow.errors import ConfigError
from alflow.examples import write_example
from alflow.labelling import label_many, make_labeller
from alflow.labelling.validate import validate_method

AG2 = Atoms("Ag2", positions=[[0, 0, 0], [0, 0, 2.6]])
H2 = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]])


@pytest.mark.parametrize("method, fields, atoms, field", [
    ("pyscf:nonsense/def2-svp", {}, H2, "functional: 'nonsense'"),
    ("pyscf:pbe,nonsense/def2-svp", {}, H2, "functional: 'pbe,nonsense'"),
    ("pyscf:pbe/nonsense-basis", {}, H2, "basis: 'nonsense-basis' has no functions for"),
    ("pyscf:pbe/def2-svp", {"ecp": "nonsense"}, AG2, "ecp: 'nonsense' has no pseudopotential"),
    ("pyscf:pbe/def2-svp", {"auxbasis": "nonsense"}, H2, "auxbasis: 'nonsense' has no"),
    ("pyscf:pbe/def2-svp", {"spin": 1}, H2, "spin: 2S=1 is impossible"),
    ("pyscf:pbe/def2-svp", {"grids_level": 12}, H2, "grids_level"),
    ("ase:lj(sigma=3.4, nonsense=1)", {}, H2, "ase_kwargs"),
    ("ase:emt", {}, Atoms("Ar2", positions=[[0, 0, 0], [0, 0, 3.7]]), "EMT has no parameters"),
])
def test_bad_methods_are_rejected_naming_the_field(method, fields, atoms, field):
    with pytest.raises(ConfigError, match=field.replace("(", r"\(")):
        validate_method(method, [atoms], **fields)


def test_good_methods_pass_without_scf():
    for method in ("pyscf:b3lyp/def2-svp", "pyscf:lda,vwn/sto-3g", "pyscf:pbe0/def2-svp"):
        validate_method(method, [H2, AG2])
    validate_method("pyscf:pbe/lanl2dz", [AG2], ecp="lanl2dz", auxbasis="def2-universal-jkfit")


def test_label_many_validates_before_computing(tmp_path):
    store = LabelStore(tmp_path / "d.h5")
    with pytest.raises(ConfigError, match="functional"):
        label_many([H2], make_labeller("pyscf:nonsense/def2-svp"), store)
    assert len(store) == 0


def test_cli_label_and_spectrum_reject_an_unknown_functional(tmp_path):
    write(tmp_path / "h2.xyz", H2)
    runner = CliRunner()
    r = runner.invoke(app, ["label", str(tmp_path / "h2.xyz"), "-s", str(tmp_path / "d.h5"),
                            "-m", "pyscf:nonsense/def2-svp"])
    assert isinstance(r.exception, ConfigError) and "functional: 'nonsense'" in str(r.exception)
    assert not (tmp_path / "d.h5").exists()  # nothing written
    r = runner.invoke(app, ["spectrum", str(tmp_path / "h2.xyz"), "-o", str(tmp_path / "s.json"),
                            "--method", "pyscf:nonsense/def2-svp"])
    assert isinstance(r.exception, ConfigError) and "functional: 'nonsense'" in str(r.exception)
    assert not (tmp_path / "s.json").exists()
    # the console script: one line, exit code 2, no traceback
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, "-c", "from alflow.cli import main; main()", "label",
                        str(tmp_path / "h2.xyz"), "-s", str(tmp_path / "d.h5"), "-m",
                        "pyscf:nonsense/def2-svp"], capture_output=True, text=True, env=env,
                       timeout=120)
    assert p.returncode == 2 and "functional: 'nonsense'" in p.stderr
    assert "Traceback" not in p.stderr


def test_campaign_oracle_is_validated_at_load(tmp_path: Path):
    path = write_example("lj7", tmp_path / "lj7")
    data = yaml.safe_load(path.read_text())
    data["oracle"] = {"method": "pyscf:nonsense/def2-svp"}
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="oracle: functional: 'nonsense'"):
        load_campaign(path)
    data["oracle"] = {"method": "pyscf:pbe/def2-svp", "options": {"ecp": "nonsense"}}
    path.write_text(yaml.safe_dump(data))
    load_campaign(path)  # argon (Z = 18) takes no ECP: nothing to reject
    data["oracle"] = {"method": "pyscf:pbe/6-31g*", "options": {"auxbasis": "nonsense"}}
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="oracle: auxbasis: 'nonsense'"):
        load_campaign(path)
