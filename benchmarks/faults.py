"""Faults at random moments: nothing finished is lost, nothing is computed twice.

Three kinds of runs, each killed at random moments and restarted until it finishes:

1. an lj7 campaign (``alflow example lj7`` with the tiny settings of the end-to-end tests,
   ``tests/tiny_campaign.py``: 8-epoch committee of 2, 2 MD replicas of 60 steps, 200 flow
   samples, budget 4 labels, at most 3 generations, site ``local-threads``), its driver
   killed with SIGKILL, then ``alflow resume``;
2. ``alflow label`` of perturbed LJ7 clusters, stopped with SIGTERM, then run again;
3. the MPI batch driver on 2 ranks, one rank (0 or 1, at random) killed with SIGKILL, then
   run again.

The oracle is ASE's Lennard-Jones argon wrapped by ``tests/fake_oracle.py``, which logs every
calculation it starts and finishes, with its time, from every process. Figures:

- ``kills``: SIGKILLs/SIGTERMs delivered (a run that ended before its kill moment is not one);
- ``runs_finished``: runs that reached their end after their kills;
- ``labels_lost``: labels whose calculation finished ≥ 1 s before a kill but that were in
  neither the store nor the campaign's pending-label journal right after it;
- ``labels_recomputed``: calculations finished more than once for one configuration (from the
  oracle's log, not the store), beyond those of the uninterrupted reference run;
- ``datasets_identical``: whether every run's final labels (keys, status, energies) equal
  those of the same run uninterrupted.

Usage: ``python benchmarks/faults.py [--quick] [--seed 0]``; the last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
sys.path.insert(0, str(TESTS))

from fake_oracle import read_log  # noqa: E402
from lj7_structures import perturbed  # noqa: E402
from tiny_campaign import SMALL  # noqa: E402

from alflow.dataset import LabelStore  # noqa: E402
from alflow.examples import write_example  # noqa: E402

LJ_KWARGS = {"sigma": 3.405, "epsilon": 0.0103, "rc": 34.05, "smooth": False}
METHOD = "ase:fake_oracle.LoggedLJ(sigma=3.405, epsilon=0.0103, rc=34.05)"
DURABLE_S = 1.0  # a label finished this long before a kill must be stored
ALFLOW = str(Path(sys.executable).parent / "alflow")


def env_for(oracle_dir: Path) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", FAKE_ORACLE_DIR=str(oracle_dir),
               PYTHONPATH=os.pathsep.join([str(TESTS), str(ROOT),
                                           os.environ.get("PYTHONPATH", "")]),
               OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    for k in ("ALFLOW_PAUSE_AT", "FAKE_ORACLE_STALL_AFTER", "FAKE_ORACLE_BARRIER"):
        env.pop(k, None)
    return env


def labels(store: Path) -> dict[str, tuple[str, float | None]]:
    if not store.exists():
        return {}
    return {r.key: (r.status, r.energy) for r in LabelStore(store).records(status=None)}


def recomputed(oracle_dir: Path) -> int:
    done = Counter(h for e, h, _ in read_log(oracle_dir) if e == "done")
    return sum(c - 1 for c in done.values())


def durable_hashes(store: Path, pending: Path | None) -> set[str]:
    """Oracle hashes of the labels in the store (and the campaign's pending journal)."""
    from fake_oracle import config_hash

    from alflow.campaign.labels import record_from_json

    out = set()
    if store.exists():
        out |= {config_hash(r.to_atoms()) for r in LabelStore(store).records(status=None)}
    if pending is not None and pending.exists():
        for f in pending.glob("*.json"):
            try:
                out.add(config_hash(record_from_json(json.loads(f.read_text())).to_atoms()))
            except (ValueError, KeyError):
                pass
    return out


def lost_at_kill(oracle_dir: Path, t_kill: float, store: Path, pending: Path | None) -> int:
    """Labels finished ≥ DURABLE_S before ``t_kill`` and absent from the store/journal."""
    done = {h for e, h, _, t in read_log(oracle_dir, times=True)
            if e == "done" and t <= t_kill - DURABLE_S}
    return len(done - durable_hashes(store, pending))


def kill_at_random(cmd: list[str], env: dict, t_max: float, rng: random.Random, sig: int,
                   victim=None) -> tuple[bool, float | None, subprocess.CompletedProcess | None]:
    """Run ``cmd``; at a uniform random moment in [0.5, 0.9 t_max] s send ``sig`` (to the pid
    ``victim(proc)`` returns, else to the process). Returns (killed, kill time, result if
    it ended first)."""
    t_kill = rng.uniform(0.5, 0.9 * t_max)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=t_kill)
        return False, None, subprocess.CompletedProcess(cmd, proc.returncode, out)
    except subprocess.TimeoutExpired:
        pass
    pid = victim(proc) if victim is not None else proc.pid
    t = time.time()
    try:
        os.kill(pid or proc.pid, sig)
    except ProcessLookupError:
        pass
    try:
        proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        pass
    if proc.poll() is None or sig == signal.SIGKILL:  # what a scheduler does after a kill
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    return True, t, None


def run_to_end(cmd: list[str], env: dict) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


# -- campaigns ---------------------------------------------------------------------------
def campaign_yaml(directory: Path) -> Path:
    path = write_example("lj7", directory)
    data = yaml.safe_load(path.read_text())
    for k, v in SMALL.items():
        data[k] = {**data.get(k, {}), **v} if isinstance(v, dict) else v
    data["oracle"] = {"method": "ase:fake_oracle.LoggedLJ",
                      "options": {**data["oracle"]["options"], "ase_kwargs": LJ_KWARGS}}
    data["site"] = "local-threads"
    path.write_text(yaml.safe_dump(data))
    return path


def campaigns(work: Path, n_runs: int, kills_per_run: int, rng: random.Random) -> dict:
    cfg = campaign_yaml(work / "campaign")
    ref_dir = work / "ref-oracle"
    ref_dir.mkdir()
    t0 = time.perf_counter()
    run_to_end([ALFLOW, "run", str(cfg), "--dir", str(work / "ref")], env_for(ref_dir))
    t_ref = time.perf_counter() - t0
    ref = labels(work / "ref" / "dataset.h5")
    base_recomputed = recomputed(ref_dir)
    out = {"kills": 0, "runs_finished": 0, "labels_lost": 0, "labels_recomputed": 0,
           "datasets_identical": True, "reference_s": round(t_ref, 1),
           "reference_labels": len(ref), "reference_recomputed": base_recomputed, "runs": []}
    for r in range(n_runs):
        run, odir = work / f"run{r}", work / f"oracle{r}"
        odir.mkdir()
        env = env_for(odir)
        kills = lost = 0
        for _ in range(kills_per_run):
            cmd = ([ALFLOW, "resume", str(run)] if run.exists()
                   else [ALFLOW, "run", str(cfg), "--dir", str(run)])
            killed, t_kill, res = kill_at_random(cmd, env, t_ref, rng, signal.SIGKILL)
            if not killed:
                if res.returncode != 0:
                    raise RuntimeError(f"campaign run {r} failed:\n{res.stdout}")
                break
            kills += 1
            lost += lost_at_kill(odir, t_kill, run / "dataset.h5", run / "labels" / "pending")
        if not run.exists():
            run_to_end([ALFLOW, "run", str(cfg), "--dir", str(run)], env)
        st = json.loads(run_to_end([ALFLOW, "status", str(run), "--json"], env).stdout)
        if st.get("state") != "finished":
            run_to_end([ALFLOW, "resume", str(run)], env)
        final = labels(run / "dataset.h5")
        same = final == ref
        rec = recomputed(odir) - base_recomputed
        out["runs"].append({"kills": kills, "labels": len(final), "identical": same,
                            "lost": lost, "recomputed": rec,
                            "missing": len(set(ref) - set(final)),
                            "extra": len(set(final) - set(ref))})
        out["kills"] += kills
        out["runs_finished"] += 1
        out["labels_lost"] += lost
        out["labels_recomputed"] += max(rec, 0)
        out["datasets_identical"] &= same
        print(f"campaign run {r}: {out['runs'][-1]}", flush=True)
    return out


# -- labelling batches -------------------------------------------------------------------
def lj7_structures(path: Path, n: int, seed: int) -> Path:
    from ase.io import write

    write(path, perturbed(n, seed))
    return path


def mpi_rank_pid(proc: subprocess.Popen, rank: int) -> int | None:
    """The pid of MPI rank ``rank`` under ``proc`` (mpiexec), from OMPI_COMM_WORLD_RANK."""
    import psutil

    for child in psutil.Process(proc.pid).children(recursive=True):
        try:
            if child.environ().get("OMPI_COMM_WORLD_RANK") == str(rank):
                return child.pid
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return None


def batches(work: Path, kind: str, n_runs: int, kills_per_run: int, n_structures: int,
            rng: random.Random) -> dict:
    """``kind``: ``label`` (SIGTERM to ``alflow label``) or ``mpi`` (SIGKILL to a rank)."""
    structures = lj7_structures(work / f"{kind}.extxyz", n_structures, seed=7)

    def cmd(store: Path) -> list[str]:
        if kind == "label":
            return [ALFLOW, "label", str(structures), "-s", str(store), "-m", METHOD]
        return ["mpiexec", "-n", "2", "--oversubscribe", sys.executable, "-m",
                "alflow.labelling.batch", str(structures), "--store", str(store), "--method",
                METHOD]

    ref_dir = work / f"{kind}-ref-oracle"
    ref_dir.mkdir()
    env = {**env_for(ref_dir), "FAKE_ORACLE_SLEEP": "0.1"}
    t0 = time.perf_counter()
    run_to_end(cmd(work / f"{kind}-ref.h5"), env)
    t_ref = time.perf_counter() - t0
    ref = labels(work / f"{kind}-ref.h5")
    out = {"kills": 0, "runs_finished": 0, "labels_lost": 0, "labels_recomputed": 0,
           "datasets_identical": True, "reference_s": round(t_ref, 1), "runs": []}
    for r in range(n_runs):
        store, odir = work / f"{kind}{r}.h5", work / f"{kind}-oracle{r}"
        odir.mkdir()
        env = {**env_for(odir), "FAKE_ORACLE_SLEEP": "0.1"}
        kills = lost = 0
        for _ in range(kills_per_run):
            if kind == "label":
                killed, t_kill, res = kill_at_random(cmd(store), env, t_ref, rng,
                                                     signal.SIGTERM)
            else:
                rank = rng.randrange(2)
                killed, t_kill, res = kill_at_random(cmd(store), env, t_ref, rng,
                                                     signal.SIGKILL,
                                                     victim=lambda p, k=rank: mpi_rank_pid(p, k))
            if not killed:
                break
            kills += 1
            lost += lost_at_kill(odir, t_kill, store, None)
        run_to_end(cmd(store), env)
        final = labels(store)
        same = final == ref
        rec = recomputed(odir)
        out["runs"].append({"kills": kills, "lost": lost, "recomputed": rec,
                            "identical": same})
        out["kills"] += kills
        out["runs_finished"] += 1
        out["labels_lost"] += lost
        out["labels_recomputed"] += rec
        out["datasets_identical"] &= same
        print(f"{kind} run {r}: {out['runs'][-1]}", flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer runs and kills (< 2 min)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", help="work directory to keep (default: a temporary one)")
    args = p.parse_args()
    rng = random.Random(args.seed)
    if args.quick:
        plan = {"campaign": (1, 2), "label": (1, 2), "mpi": (1, 2)}
    else:
        plan = {"campaign": (3, 7), "label": (2, 4), "mpi": (2, 4)}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="alflow-faults-") as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        parts = {"campaign": campaigns(work, *plan["campaign"], rng),
                 "label": batches(work, "label", *plan["label"], 30, rng),
                 "mpi": batches(work, "mpi", *plan["mpi"], 30, rng)}
    total = {k: sum(part[k] for part in parts.values())
             for k in ("kills", "runs_finished", "labels_lost", "labels_recomputed")}
    total["datasets_identical"] = all(part["datasets_identical"] for part in parts.values())
    for name, part in parts.items():
        print(f"{name}: " + json.dumps({k: v for k, v in part.items() if k != "runs"}))
    print(f"wall {time.perf_counter() - t0:.0f} s; load {os.getloadavg()[0]:.1f} "
          f"({os.cpu_count()} cores)")
    print(json.dumps(total))


if __name__ == "__main__":
    main()
