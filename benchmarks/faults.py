"""Faults at random moments: nothing finished is lost, nothing is computed twice.

Three kinds of runs, each killed at random moments and restarted until it finishes:

1. lj7 campaigns (``alflow example lj7`` with the tiny settings of the end-to-end tests,
   ``tests/tiny_campaign.py``: 8-epoch committee of 2 without L-BFGS polish, 2 MD replicas
   of 60 steps, flows of 2 layers trained 20 steps on 200 samples, 3 bootstrap
   displacements, budget 4 labels, loose convergence, at most 3 generations; site
   ``local-threads``), the driver killed with SIGKILL at random moments of the campaign
   and resumed with ``alflow resume``, until 20 kills (``--quick``: 2);
2. ``alflow label`` of 30 perturbed LJ7 clusters (0.1 s per label), stopped with SIGTERM at
   a random moment while it labels, then run again (2 runs of up to 4 kills; ``--quick``: 1 of 2);
3. the MPI batch driver on 2 ranks over the same clusters, one rank (0 or 1, at random)
   killed with SIGKILL at a random moment while they label, then run again (as 2.).

The oracle is ASE's Lennard-Jones argon wrapped by ``tests/fake_oracle.py``, which logs every
calculation it starts and finishes, with its time, from every process. Figures:

- ``kills``: SIGKILLs/SIGTERMs delivered (a run that ended before its kill moment is not one);
- ``runs_finished``: runs that reached their end after their kills;
- ``labels_lost``: labels whose calculation finished ≥ 1 s before a kill but that were in
  neither the store nor the campaign's pending-label journal right after it;
- ``labels_recomputed``: calculations finished more than once for one configuration (from the
  oracle's log, not the store), beyond those of the uninterrupted reference run;
- ``recomputed_finished_within_1s_of_a_kill``: of those, the ones whose first calculation
  finished less than 1 s before a kill (inside the durability bound: a SIGKILL can land
  between the oracle's return and the commit) or after it (a rank finishing a label after
  rank 0, the writer, was killed);
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
TEARDOWN_S = 10.0  # after a kill, the job's other processes may finish a label before they end
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


def recomputed_in_window(oracle_dir: Path, kill_times: list[float]) -> int:
    """Recomputations of labels whose first calculation finished less than DURABLE_S before a
    kill (caught between the oracle's return and their commit) or after it (by a rank of a job
    whose writer was killed, before the job ended)."""
    first: dict[str, float] = {}
    again: Counter = Counter()
    for e, h, _, t in read_log(oracle_dir, times=True):
        if e == "done":
            if h in first:
                again[h] += 1
            else:
                first[h] = t
    return sum(n for h, n in again.items()
               if any(-TEARDOWN_S <= tk - first[h] < DURABLE_S for tk in kill_times))


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
                   victim=None, started=None
                   ) -> tuple[bool, float | None, subprocess.CompletedProcess | None]:
    """Run ``cmd``; once ``started()`` holds (default: at once), wait a uniform random time in
    [0, t_max] s, then send ``sig`` (to the pid ``victim(proc)`` returns, else to the
    process). Returns (killed, kill time, the result if it ended first)."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    while started is not None and not started() and proc.poll() is None:
        time.sleep(0.05)
    try:
        out, _ = proc.communicate(timeout=rng.uniform(0, t_max))
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


def run_starts(run: Path) -> int:
    path = run / "events.jsonl"
    if not path.exists():
        return 0
    return sum('"run_start"' in line for line in path.read_text().splitlines())


def run_to_end(cmd: list[str], env: dict) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


# -- campaigns ---------------------------------------------------------------------------
def campaign_yaml(directory: Path, site: str) -> Path:
    path = write_example("lj7", directory)
    data = yaml.safe_load(path.read_text())
    for k, v in SMALL.items():
        data[k] = {**data.get(k, {}), **v} if isinstance(v, dict) else v
    data["oracle"] = {"method": "ase:fake_oracle.LoggedLJ",
                      "options": {**data["oracle"]["options"], "ase_kwargs": LJ_KWARGS}}
    data["site"] = site
    path.write_text(yaml.safe_dump(data))
    return path


def first_difference(ref: Path, run: Path) -> str | None:
    """``generation/purpose/state`` of the earliest label in one dataset but not the other."""
    recs = {}
    for d in (ref, run):
        recs[d] = {r.key: r for r in LabelStore(d / "dataset.h5").records(status=None)}
    keys = set(recs[ref]) ^ set(recs[run])
    tags = sorted((int(t.get("generation", 0)), t.get("purpose", ""), t.get("state", ""))
                  for t in ((recs[ref].get(k) or recs[run][k]).tags for k in keys))
    return "/".join(map(str, tags[0])) if tags else None


def campaigns(work: Path, target_kills: int, max_kills_per_run: int, rng: random.Random,
              site: str = "local-threads") -> dict:
    """Campaign runs, each killed up to ``max_kills_per_run`` times (SIGKILL at a uniform
    random moment of the campaign proper: from the driver's ``run_start`` event to the
    reference's duration after it) and resumed, until ``target_kills`` kills are done."""
    cfg = campaign_yaml(work / "campaign", site)
    ref_dir = work / "ref-oracle"
    ref_dir.mkdir()
    t0 = time.perf_counter()
    run_to_end([ALFLOW, "run", str(cfg), "--dir", str(work / "ref")], env_for(ref_dir))
    t_ref = time.perf_counter() - t0
    events = (work / "ref" / "events.jsonl").read_text().splitlines()
    d_ref = json.loads(events[-1])["elapsed_s"]  # run_start -> run_end
    ref = labels(work / "ref" / "dataset.h5")
    base_recomputed = recomputed(ref_dir)
    out = {"kills": 0, "runs_finished": 0, "labels_lost": 0, "labels_recomputed": 0,
           "recomputed_finished_within_1s_of_a_kill": 0, "datasets_identical": True,
           "reference_s": round(t_ref, 1),
           "reference_campaign_s": d_ref, "reference_labels": len(ref),
           "reference_recomputed": base_recomputed, "runs": []}
    r = 0
    while out["kills"] < target_kills:
        run, odir = work / f"run{r}", work / f"oracle{r}"
        odir.mkdir()
        env = env_for(odir)
        kills = lost = 0
        kill_times: list[float] = []
        while kills < max_kills_per_run:
            cmd = ([ALFLOW, "resume", str(run)] if run.exists()
                   else [ALFLOW, "run", str(cfg), "--dir", str(run)])
            n0 = run_starts(run)
            killed, t_kill, res = kill_at_random(
                cmd, env, d_ref, rng, signal.SIGKILL,
                started=lambda run=run, n0=n0: run_starts(run) > n0)
            if not killed:
                if res.returncode != 0:
                    raise RuntimeError(f"campaign run {r} failed:\n{res.stdout}")
                break
            kills += 1
            kill_times.append(t_kill)
            lost += lost_at_kill(odir, t_kill, run / "dataset.h5", run / "labels" / "pending")
        if not run.exists():
            run_to_end([ALFLOW, "run", str(cfg), "--dir", str(run)], env)
        st = json.loads(run_to_end([ALFLOW, "status", str(run), "--json"], env).stdout)
        if st.get("state") != "finished":
            run_to_end([ALFLOW, "resume", str(run)], env)
        final = labels(run / "dataset.h5")
        same = final == ref
        rec = recomputed(odir) - base_recomputed
        window = recomputed_in_window(odir, kill_times)
        out["runs"].append({"kills": kills, "labels": len(final), "identical": same,
                            "lost": lost, "recomputed": rec, "recomputed_in_window": window,
                            "missing": len(set(ref) - set(final)),
                            "extra": len(set(final) - set(ref)),
                            "first_difference": first_difference(work / "ref", run)})
        out["kills"] += kills
        out["runs_finished"] += 1
        out["labels_lost"] += lost
        out["labels_recomputed"] += max(rec, 0)
        out["recomputed_finished_within_1s_of_a_kill"] += window
        out["datasets_identical"] &= same
        print(f"campaign run {r}: {out['runs'][-1]}", flush=True)
        r += 1
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
    times = [t for _, _, _, t in read_log(ref_dir, times=True)]
    t_label = max(times) - min(times)  # first calculation started -> last one finished

    def starts(directory: Path) -> int:
        return sum(e == "start" for e, _, _ in read_log(directory))

    out = {"kills": 0, "runs_finished": 0, "labels_lost": 0, "labels_recomputed": 0,
           "recomputed_finished_within_1s_of_a_kill": 0, "datasets_identical": True,
           "reference_s": round(t_ref, 1),
           "reference_labelling_s": round(t_label, 1), "runs": []}
    for r in range(n_runs):
        store, odir = work / f"{kind}{r}.h5", work / f"{kind}-oracle{r}"
        odir.mkdir()
        env = {**env_for(odir), "FAKE_ORACLE_SLEEP": "0.1"}
        kills = lost = 0
        kill_times: list[float] = []
        for _ in range(kills_per_run):
            n0 = starts(odir)
            started = lambda d=odir, n0=n0: starts(d) > n0  # noqa: E731
            if kind == "label":
                killed, t_kill, res = kill_at_random(cmd(store), env, t_label, rng,
                                                     signal.SIGTERM, started=started)
            else:
                rank = rng.randrange(2)
                killed, t_kill, res = kill_at_random(
                    cmd(store), env, t_label, rng, signal.SIGKILL, started=started,
                    victim=lambda p, k=rank: mpi_rank_pid(p, k))
            if not killed:
                break
            kills += 1
            kill_times.append(t_kill)
            lost += lost_at_kill(odir, t_kill, store, None)
        run_to_end(cmd(store), env)
        final = labels(store)
        same = final == ref
        rec = recomputed(odir)
        window = recomputed_in_window(odir, kill_times)
        out["runs"].append({"kills": kills, "lost": lost, "recomputed": rec,
                            "recomputed_in_window": window, "identical": same})
        out["kills"] += kills
        out["runs_finished"] += 1
        out["labels_lost"] += lost
        out["labels_recomputed"] += rec
        out["recomputed_finished_within_1s_of_a_kill"] += window
        out["datasets_identical"] &= same
        print(f"{kind} run {r}: {out['runs'][-1]}", flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer runs and kills (< 2 min)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", help="work directory to keep (default: a temporary one)")
    p.add_argument("--site", default="local-threads", help="the campaigns' site")
    p.add_argument("--campaign-kills", type=int, help="kills of campaign drivers (default: "
                                                      "20; --quick: 2)")
    p.add_argument("--only", choices=["campaign", "label", "mpi"], action="append",
                   help="run only these parts (repeatable)")
    args = p.parse_args()
    rng = random.Random(args.seed)
    if args.quick:
        plan = {"campaign": (2, 2), "label": (1, 2), "mpi": (1, 2)}
    else:
        plan = {"campaign": (20, 5), "label": (2, 4), "mpi": (2, 4)}
    if args.campaign_kills is not None:
        plan["campaign"] = (args.campaign_kills, plan["campaign"][1])
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="alflow-faults-") as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        only = set(args.only or plan)
        parts = {}
        if "campaign" in only:
            parts["campaign"] = campaigns(work, *plan["campaign"], rng, args.site)
        for kind in ("label", "mpi"):
            if kind in only:
                parts[kind] = batches(work, kind, *plan[kind], 30, rng)
    total = {k: sum(part[k] for part in parts.values())
             for k in ("kills", "runs_finished", "labels_lost", "labels_recomputed",
                       "recomputed_finished_within_1s_of_a_kill")}
    total["datasets_identical"] = all(part["datasets_identical"] for part in parts.values())
    for name, part in parts.items():
        print(f"{name}: " + json.dumps({k: v for k, v in part.items() if k != "runs"}))
    print(f"wall {time.perf_counter() - t0:.0f} s; load {os.getloadavg()[0]:.1f} "
          f"({os.cpu_count()} cores)")
    print(json.dumps(total))


if __name__ == "__main__":
    main()
