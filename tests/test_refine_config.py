"""The ``alflow refine`` YAML contract: the issue's example validates; unknown, missing or
inconsistent fields and bad target files fail before any MD with rc 2, naming the field or
file; target paths are relative to the YAML file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from test_cli_errors import alflow

from alflow.refine.config import load_config

EXAMPLE = """\
system: {element: Ar, mass_amu: 39.948, n_atoms: 256, number_density_per_A3: 0.0213, temperature_k: 100.0}
potential: {kind: lj, epsilon_ev: 0.0093, sigma_a: 3.2, cutoff_a: 10.0, trainable: [epsilon_ev, sigma_a]}
md: {dt_fs: 5.0}
targets:
  rdf: {file: rdf.csv}                       # columns r_angstrom,g (header line), pairs of all atoms
  diffusion_coefficient_A2_per_ps: 0.19      # NVE self-diffusion after NVT equilibration
"""  # noqa: E501


@pytest.fixture()
def example(tmp_path: Path) -> Path:
    d = tmp_path / "fit"
    d.mkdir()
    (d / "rdf.csv").write_text("r_angstrom,g\n3.0,0.1\n3.5,2.5\n4.0,1.5\n5.0,0.8\n")
    path = d / "refine.yaml"
    path.write_text(EXAMPLE)
    return path


def test_the_issue_example_validates_with_paths_relative_to_the_yaml(example, monkeypatch):
    monkeypatch.chdir(example.parent.parent)
    cfg = load_config(Path("fit") / "refine.yaml")
    assert cfg.targets.rdf.file == example.parent.resolve() / "rdf.csv"
    assert cfg.targets.diffusion_coefficient_A2_per_ps == 0.19
    assert cfg.system.box_a == pytest.approx((256 / 0.0213) ** (1 / 3))
    assert cfg.potential.trainable == ["epsilon_ev", "sigma_a"]


def _edit(path: Path, fn) -> Path:
    doc = yaml.safe_load(path.read_text())
    fn(doc)
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize(("edit", "named"), [
    (lambda d: d["system"].update(densty=1.0), "system.densty: unknown field"),
    (lambda d: d["system"].pop("temperature_k"), "system.temperature_k: Field required"),
    (lambda d: d["potential"].update(kind="morse"),
     "potential: Input tag 'morse' found using 'kind'"),
    (lambda d: d["potential"].update(trainable=["epsilon_ev", "rc"]), "potential.lj.trainable.1"),
    (lambda d: d["potential"].update(cutoff_a=12.0), "potential.cutoff_a (12.0 Å) exceeds half"),
    (lambda d: d.pop("md"), "md: Field required"),
    (lambda d: d["targets"].update(rdf={"file": "nothere.csv"}), "targets.rdf.file: no such"),
    (lambda d: d.update(targets={}), "give at least one target"),
    (lambda d: d["md"].update(gradient_steps=900, segment_steps=400), "gradient_steps (900)"),
    (lambda d: d["targets"].update(potential_energy_ev_per_atom=0.0),
     "potential_energy_ev_per_atom must not be 0"),
    (lambda d: d["potential"].update(kind="mlip"), "model_dir"),
])
def test_bad_config_fails_before_any_work_naming_the_field(example, monkeypatch, capsys, edit,
                                                          named, tmp_path):
    _edit(example, edit)
    out = tmp_path / "out"
    rc, _, err = alflow(monkeypatch, capsys, "refine", str(example), "--out", str(out))
    assert rc == 2, err
    assert named in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize(("text", "named"), [
    ("r,g\n1,2\n", "lacks column(s) ['r_angstrom']"),
    ("r_angstrom,g\n3.0,0.1\n3.5,x\n4.0,1\n", "line 3: expected numbers"),
    ("r_angstrom,g\n3.0,0.1\n2.5,2\n4.0,1\n", "strictly increasing"),
    ("r_angstrom,g\n30.0,0.1\n35,2\n40.0,1\n", "points below"),
])
def test_bad_target_file_is_named(example, monkeypatch, capsys, text, named, tmp_path):
    (example.parent / "rdf.csv").write_text(text)
    rc, _, err = alflow(monkeypatch, capsys, "refine", str(example), "--out",
                        str(tmp_path / "out"))
    assert rc == 2, err
    assert named in err and "rdf.csv" in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()
