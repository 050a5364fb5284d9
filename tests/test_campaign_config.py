"""Campaign config validation: every bad config fails before any work, naming the field."""

import shutil
from pathlib import Path

import pytest
import yaml

from alflow.campaign.config import load_campaign
from alflow.errors import ConfigError
from alflow.examples import write_example


@pytest.fixture()
def example(tmp_path: Path) -> Path:
    return write_example("lj7", tmp_path / "lj7")


def _edit(path: Path, fn) -> Path:
    data = yaml.safe_load(path.read_text())
    fn(data)
    path.write_text(yaml.safe_dump(data))
    return path


def test_example_is_valid_and_resolved(example: Path):
    cfg = load_campaign(example)
    assert cfg.temperature_k == 18.0 and cfg.system.wall_radius == pytest.approx(8.5125)
    assert Path(cfg.system.states["coh"].structures[0]).is_absolute()
    lab = cfg.oracle.labeller_config()
    assert lab.ase_kwargs == {"sigma": 3.405, "epsilon": 0.0103, "rc": 34.05, "smooth": False}
    assert (cfg.system.delta_f.from_, cfg.system.delta_f.to) == ("pbp", "coh")


@pytest.mark.parametrize("edit, field", [
    (lambda d: d["system"]["delta_f"].update({"to": "octahedron"}), "system.delta_f.to"),
    (lambda d: d.update({"executors": {"label": "bigmem"}}), "executors.label"),
    (lambda d: d["exploration"]["sampler"].update({"temperature_k": 300}),
     "exploration.sampler.temperature_k"),
    (lambda d: d["exploration"]["md"].update({"temperature_k": 5}),
     "exploration.md.temperature_k"),
    (lambda d: d["system"]["states"]["coh"].update({"structures": "missing.xyz"}),
     "system.states.coh.structures[0]"),
    (lambda d: d["oracle"].update({"method": "gaussian:b3lyp"}), "oracle"),
    (lambda d: d["selection"].update({"budgt": 3}), "selection.budgt"),
    (lambda d: d["exploration"]["sampler"].update({"anneal": {"levls": 3}}),
     "exploration.sampler.anneal.levls"),
])
def test_bad_configs_name_the_field(example: Path, edit, field):
    _edit(example, edit)
    with pytest.raises(ConfigError) as err:
        load_campaign(example)
    assert field in str(err.value)


def test_unreadable_structure_file(example: Path):
    bad = example.parent / "structures" / "coh.xyz"
    bad.write_text("this is not\na structure file\n")
    with pytest.raises(ConfigError, match=r"system\.states\.coh\.structures\[0\]"):
        load_campaign(example)


def test_mixed_compositions_rejected(example: Path, tmp_path: Path):
    other = write_example("ag6-emt", tmp_path / "ag6")
    shutil.copyfile(other.parent / "structures" / "octahedron.xyz",
                    example.parent / "structures" / "coh.xyz")
    with pytest.raises(ConfigError, match="composition"):
        load_campaign(example)


def test_campaign_basins_are_full_quench_basins(example: Path):
    """The lj7 example's states on the exact potential: every 18 K MD frame of either basin
    is assigned as a full quench (FIRE to 5e-4 eV/Å, exact pair-distance match) assigns it,
    and the early-stopped quench agrees with it (a loose quench left 11-20 % in no state)."""
    import numpy as np

    from alflow.campaign.steps import state_sets
    from alflow.campaign.system import build_system
    from alflow.potential import LennardJones
    from alflow.sampling.langevin import run_langevin
    from alflow.states import quench

    cfg = load_campaign(example)
    system = build_system(cfg)
    pot = LennardJones(system.numbers)
    states = state_sets(pot, system, cfg.system.states)
    frames = []
    for k in range(len(states.names)):
        tr = run_langevin(pot, np.repeat(states.minima[k][None], 8, 0), system.masses, 18.0,
                          10.0, 600, record_every=20, seed=k)
        frames.append(np.asarray(tr.positions[5:]).reshape(-1, 7, 3))
    x = np.concatenate(frames)
    got = states.assign(x)
    minima, energies, ok = quench(pot, x, fmax=5e-4, max_steps=3000)
    full = np.where(ok, states.match(minima, energies), -1)
    assert np.array_equal(got, full)
    starts = np.cumsum([0] + [len(f) for f in frames])
    for k in range(len(frames)):  # MD from a minimum stays in its basin most of the time
        share = (got[starts[k]:starts[k + 1]] == k).mean()
        assert share > 0.85, (states.names[k], share)
