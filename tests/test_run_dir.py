"""The run directory is recognised by alflow's own marker (``.alflow-run``), never by a file
name a user also uses: `alflow resume`, `alflow run --dir`, `alflow spectra` and `alflow
report` write nothing into a folder alflow did not create, and say what to do instead."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from alflow.campaign.config import load_campaign
from alflow.campaign.rundir import (
    CONFIG_HEADER,
    MARKER,
    create_run_dir,
    is_run_dir,
    open_run_dir,
)
from alflow.campaign.runner import save_config, start
from alflow.cli import main
from alflow.errors import AlflowError, ConfigError
from alflow.examples import write_example


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its bytes (None for directories)."""
    return {str(p.relative_to(root)): (None if p.is_dir() else p.read_bytes())
            for p in sorted(root.rglob("*"))}


def alflow(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """Run the console entry point in-process; (exit code, stderr)."""
    monkeypatch.setattr(sys, "argv", ["alflow", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    return int(exc.value.code or 0), capsys.readouterr().err


@pytest.fixture()
def source(tmp_path: Path) -> Path:
    """A user's campaign folder: their own campaign.yaml (with comments) and structures."""
    path = write_example("lj7", tmp_path / "lj7")
    path.write_text("# my notes: do not lose them\n" + path.read_text())
    return path.parent


@pytest.mark.parametrize("verb", ["resume", "spectra", "report"])
def test_verbs_on_a_campaign_folder_write_nothing(source, monkeypatch, capsys, verb):
    before = tree(source)
    rc, err = alflow(monkeypatch, capsys, verb, str(source))
    assert rc == 2, err
    assert "not an alflow run directory" in err and MARKER in err
    if verb == "resume":  # says how to start the campaign it found instead
        assert f"alflow run {source / 'campaign.yaml'} --dir" in err
    assert tree(source) == before  # the user's file byte for byte, and nothing added


def test_run_into_a_foreign_folder_is_refused_without_suggesting_resume(
        source, monkeypatch, capsys):
    before = tree(source)
    rc, err = alflow(monkeypatch, capsys, "run", str(source / "campaign.yaml"), "--dir",
                     str(source))
    assert rc == 2, err
    assert "choose another --dir" in err and "resume" not in err
    assert tree(source) == before


def test_new_and_empty_directories_get_the_marker(tmp_path: Path):
    run = create_run_dir(tmp_path / "a" / "run")
    assert json.loads(run.marker.read_text())["alflow_run_format"] == 1
    assert is_run_dir(run.root) and open_run_dir(run.root).root == run.root
    assert create_run_dir(run.root).root == run.root  # an existing run directory: as it is
    (tmp_path / "empty").mkdir()
    assert is_run_dir(create_run_dir(tmp_path / "empty").root)
    # scripts/campaign.sbatch writes its driver log before `alflow run` starts
    (tmp_path / "launched" / "logs").mkdir(parents=True)
    (tmp_path / "launched" / "logs" / "driver-17.out").write_text("campaign.sbatch: ...\n")
    assert is_run_dir(create_run_dir(tmp_path / "launched").root)
    (tmp_path / "other" / "logs").mkdir(parents=True)
    (tmp_path / "other" / "logs" / "notes.txt").write_text("mine\n")
    with pytest.raises(AlflowError, match="choose another --dir"):
        create_run_dir(tmp_path / "other")
    assert not (tmp_path / "other" / MARKER).exists()


def test_marker_of_a_newer_layout_or_damaged_is_refused(tmp_path: Path):
    run = create_run_dir(tmp_path / "run")
    run.marker.write_text('{"alflow_run_format": 99}')
    with pytest.raises(AlflowError, match="newer alflow"):
        open_run_dir(run.root)
    run.marker.write_text('{"alflow_run')
    with pytest.raises(AlflowError, match="damaged run-directory marker"):
        open_run_dir(run.root)


def _pre_marker_run(root: Path, checkpoint: bool) -> None:
    """What alflow wrote before the marker existed (or what resuming a folder left there)."""
    root.mkdir(parents=True)
    (root / "campaign.yaml").write_text(CONFIG_HEADER + "\nname: old\n")
    (root / "events.jsonl").write_text(json.dumps({"event": "run_start"}) + "\n")
    if checkpoint:
        (root / "results").mkdir()
        (root / "results" / "explore-abc.json").write_text("{}")


def test_run_directories_made_before_the_marker_are_recognised(tmp_path: Path):
    _pre_marker_run(tmp_path / "old", checkpoint=True)
    assert not is_run_dir(tmp_path / "old")
    assert open_run_dir(tmp_path / "old") and is_run_dir(tmp_path / "old")  # marker added
    # without checkpoints it is not taken for one (a folder an older alflow resumed by mistake)
    _pre_marker_run(tmp_path / "hit", checkpoint=False)
    before = tree(tmp_path / "hit")
    with pytest.raises(AlflowError, match="not an alflow run directory"):
        open_run_dir(tmp_path / "hit")
    assert tree(tmp_path / "hit") == before


def test_run_into_another_campaigns_run_directory_names_it(source, tmp_path: Path):
    cfg = load_campaign(source / "campaign.yaml")
    run = create_run_dir(tmp_path / "run")
    save_config(cfg.model_copy(update={"name": "first", "seed": 7}), run)
    before = tree(run.root)
    with pytest.raises(ConfigError, match="run directory of another campaign .'first'"):
        start(source / "campaign.yaml", run.root)
    assert tree(run.root) == before


@pytest.mark.slurm
def test_campaign_sbatch_into_a_campaign_folder_writes_nothing_there(source, tmp_path):
    """`sbatch scripts/campaign.sbatch CAMPAIGN RUN_DIR` with RUN_DIR the folder of the user's
    campaign.yaml: the job refuses it (rc 2) and the folder is unchanged, byte for byte."""
    import subprocess
    import time

    from slurm_support import ROOT, require_slurm, sbatch_env, squeue_ids

    require_slurm()
    env = sbatch_env()
    before = tree(source)
    out = tmp_path / "job.out"
    job = subprocess.run(["sbatch", "--parsable", "-o", str(out), "-t", "5",
                          str(ROOT / "scripts" / "campaign.sbatch"),
                          str(source / "campaign.yaml"), str(source), "local-threads"],
                         capture_output=True, text=True, env=env, timeout=60,
                         check=True).stdout.strip().split(";")[0]
    deadline = time.time() + 240
    while job in squeue_ids() and time.time() < deadline:
        time.sleep(0.5)
    text = out.read_text()
    assert "driver exited with 2" in text, text
    assert "not an alflow run directory" in text and "choose another --dir" in text, text
    assert tree(source) == before


def test_example_never_replaces_a_users_file(tmp_path: Path, monkeypatch, capsys):
    mine = tmp_path / "ex" / "structures" / "pbp.xyz"
    mine.parent.mkdir(parents=True)
    mine.write_text("my own structure\n")
    before = tree(tmp_path / "ex")
    rc, err = alflow(monkeypatch, capsys, "example", "lj7", str(tmp_path / "ex"))
    assert rc == 2 and f"{mine}" in err and "--force" in err, err
    assert tree(tmp_path / "ex") == before
