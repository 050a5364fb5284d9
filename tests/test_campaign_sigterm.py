"""SIGTERM (scancel, walltime) stops the driver cleanly: Parsl's interchange and worker pools
go with it, and the campaign resumes."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml
from tiny_campaign import SMALL

from alflow.campaign.rundir import read_lines
from alflow.examples import write_example

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("target", ["driver", "group"])
def test_sigterm_stops_driver_and_its_parsl_processes(tmp_path: Path, target: str):
    """``driver``: the walltime signal the batch script forwards; ``group``: scancel, which
    signals every process of the job at once (the interchange too: Parsl's clean-up would wait
    for it forever, the watchdog ends it)."""
    path = write_example("lj7", tmp_path / "c")
    data = yaml.safe_load(path.read_text())
    data.update({k: {**data.get(k, {}), **v} for k, v in SMALL.items() if isinstance(v, dict)})
    path.write_text(yaml.safe_dump(data))
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ALFLOW_PAUSE_AT": "generation:0"}
    exe = str(Path(sys.executable).parent / "alflow")
    p = subprocess.Popen([exe, "run", str(path), "--dir", str(run), "--site", "local-htex"],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         start_new_session=True)
    deadline = time.monotonic() + 600
    while not any(e.get("event") == "paused" for e in read_lines(run / "events.jsonl")):
        assert p.poll() is None and time.monotonic() < deadline, p.communicate()[0]
        time.sleep(0.2)
    helpers = psutil.Process(p.pid).children(recursive=True)
    assert any("interchange" in " ".join(c.cmdline()) for c in helpers), helpers
    if target == "group":
        os.killpg(p.pid, signal.SIGTERM)
    else:
        p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=120)
    assert p.returncode == 128 + signal.SIGTERM, out
    assert "SIGTERM: stopping" in out
    _, alive = psutil.wait_procs(helpers, timeout=30)
    assert not alive, [(c.pid, c.cmdline()) for c in alive]
    # what finished is kept: generation 0's checkpoint is there for `alflow resume`
    assert any(e.get("event") == "generation_done" for e in read_lines(run / "events.jsonl"))
