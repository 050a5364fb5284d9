"""Benchmark of DFT labelling: seconds per label, MPI parallel efficiency, driver overhead.

    python benchmarks/labelling.py            # Ag6 PBE/def2-SVP (about 30-40 min on 2 cores)
    python benchmarks/labelling.py --quick    # Ag2 PBE/def2-SVP, same figures (< 2 min)

Figures (the last line of output is one JSON object holding them):
- ``s_per_label_1_thread``, ``s_per_label_2_threads``: one energy+forces label (wall s) of
  the planar isomer with 1 and 2 OpenMP/BLAS threads, and the SCF iterations it took;
- ``mpi_wall_1_rank_s``, ``mpi_wall_2_ranks_s``, ``mpi_parallel_efficiency``: the MPI batch
  driver labelling ``--batch`` distinct configurations (8; quick: 4) with 1 thread per rank,
  timed inside rank 0 from the first dispatch to the last stored label (excludes ``mpiexec``
  start-up and imports, reported separately); efficiency = T1 / (2 T2);
- ``labeller_overhead_pct``: an alflow label (molecule build, SCF ladder, forces, provenance)
  vs the bare PySCF calls doing the same computation, same process, best of ``--repeats``;
- ``driver_overhead_s_per_label``, ``driver_overhead_pct``: batch wall time on 1 rank minus
  the labels' own wall times, per label (dispatch, pickling, HDF5 commits).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.io import read, write

ROOT = Path(__file__).resolve().parents[1]


def structures(quick: bool, n: int, seed: int = 0) -> tuple[Atoms, list[Atoms]]:
    """The reference structure and ``n`` distinct rattled copies (0.03 Å) for the batch."""
    if quick:
        ref = Atoms("Ag2", positions=[[0, 0, 0], [0.3, 0.2, 2.6]])
        pool = [ref]
    else:
        pool = read(ROOT / "alflow" / "examples" / "data" / "ag6.extxyz", ":")
        ref = pool[0]
    rng = np.random.default_rng(seed)
    batch = []
    for i in range(n):
        a = pool[i % len(pool)].copy()
        a.info = {}
        a.positions += rng.normal(0, 0.03, a.positions.shape)
        batch.append(a)
    return ref, batch


def bare_pyscf(atoms: Atoms, threads: int) -> float:
    """Wall time of the same computation written directly with PySCF."""
    from pyscf import dft, gto, lib

    lib.num_threads(threads)
    t0 = time.perf_counter()
    mol = gto.M(atom=[(s, tuple(p)) for s, p in zip(atoms.get_chemical_symbols(),
                                                    atoms.positions, strict=True)],
                unit="Angstrom", basis="def2-svp", ecp={"Ag": "def2-svp"},
                spin=int(atoms.numbers.sum()) % 2, verbose=0)
    mf = dft.RKS(mol) if mol.spin == 0 else dft.UKS(mol)
    mf.xc = "pbe"
    mf.conv_tol = 1e-9
    mf = mf.density_fit()
    mf.kernel()
    g = mf.nuc_grad_method()
    g.grid_response = True
    g.kernel()
    return time.perf_counter() - t0


def mpi_batch(batch_file: Path, ranks: int, work: Path) -> dict:
    store = work / f"mpi{ranks}.h5"
    store.unlink(missing_ok=True)
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMP_NUM_THREADS="1")
    cmd = ["mpiexec", "-n", str(ranks), "--oversubscribe", sys.executable, "-m",
           "alflow.labelling.batch", str(batch_file), "--store", str(store),
           "--method", "pyscf:pbe/def2-svp", "--threads", "1"]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    total = time.perf_counter() - t0
    if p.returncode:
        raise RuntimeError(f"mpiexec failed: {p.stderr[-2000:]}")
    out = json.loads(p.stdout.strip().splitlines()[-1])
    from alflow.dataset import LabelStore

    out["sum_label_s"] = sum(r.provenance["wall_time_s"]
                             for r in LabelStore(store).records(status=None))
    out["total_s"] = total
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="Ag2 instead of Ag6, 4-label batch")
    ap.add_argument("--batch", type=int, default=None, help="labels in the MPI batch")
    ap.add_argument("--repeats", type=int, default=None, help="repeats of the overhead timing")
    args = ap.parse_args()
    n_batch = args.batch or (4 if args.quick else 8)
    repeats = args.repeats or (2 if args.quick else 1)
    from alflow.labelling import make_labeller
    from alflow.labelling.base import set_threads

    ref, batch = structures(args.quick, n_batch)
    fig: dict = {"benchmark": "labelling", "quick": args.quick,
                 "system": f"{ref.get_chemical_formula()} PBE/def2-SVP (def2 ECP, RI-J)",
                 "cpus": os.cpu_count(), "load_avg_1min": os.getloadavg()[0]}
    warm = Atoms("Ag2", positions=[[0, 0, 0], [0, 0, 2.6]])
    make_labeller("pyscf:pbe/def2-svp", threads=1).label(warm)  # warm-up: imports, libxc, ECP

    for threads in (1, 2):
        set_threads(threads)
        lab = make_labeller("pyscf:pbe/def2-svp", threads=threads)
        res = lab.label(ref)
        key = "1_thread" if threads == 1 else "2_threads"
        fig[f"s_per_label_{key}"] = round(res.provenance["wall_time_s"], 3)
        fig[f"scf_iterations_{key}"] = res.provenance.get("scf_iterations")
        print(f"{fig['system']}: {threads} thread(s): {res.provenance['wall_time_s']:.2f} s "
              f"per label ({res.status}, {res.provenance.get('scf_iterations')} SCF iter.)",
              flush=True)
    fig["thread_speedup"] = round(fig["s_per_label_1_thread"] / fig["s_per_label_2_threads"], 3)

    threads = 2 if not args.quick else 1
    set_threads(threads)
    lab = make_labeller("pyscf:pbe/def2-svp", threads=threads)
    t_lab, t_bare = [], []
    for _ in range(repeats):
        t_bare.append(bare_pyscf(ref, threads))
        t0 = time.perf_counter()
        lab.label(ref)
        t_lab.append(time.perf_counter() - t0)
    fig["bare_pyscf_s"] = round(min(t_bare), 3)
    fig["alflow_label_s"] = round(min(t_lab), 3)
    fig["labeller_overhead_pct"] = round(100 * (min(t_lab) / min(t_bare) - 1), 2)
    print(f"bare PySCF {min(t_bare):.2f} s, alflow label {min(t_lab):.2f} s "
          f"({fig['labeller_overhead_pct']:+.2f} %)", flush=True)

    if shutil.which("mpiexec"):
        work = Path(tempfile.mkdtemp(prefix="alflow-bench-label-"))
        batch_file = work / "batch.extxyz"
        write(batch_file, batch)
        one = mpi_batch(batch_file, 1, work)
        two = mpi_batch(batch_file, 2, work)
        fig.update(
            mpi_batch_labels=n_batch, mpi_wall_1_rank_s=one["wall_s"],
            mpi_wall_2_ranks_s=two["wall_s"],
            mpi_total_1_rank_s=round(one["total_s"], 2),
            mpi_total_2_ranks_s=round(two["total_s"], 2),
            mpi_tasks_per_rank=two["tasks_per_rank"],
            mpi_parallel_efficiency=round(one["wall_s"] / (2 * two["wall_s"]), 3),
            driver_overhead_s_per_label=round((one["wall_s"] - one["sum_label_s"]) / n_batch, 4),
            driver_overhead_pct=round(100 * (one["wall_s"] / one["sum_label_s"] - 1), 2),
        )
        print(f"MPI batch of {n_batch}: 1 rank {one['wall_s']:.1f} s, 2 ranks "
              f"{two['wall_s']:.1f} s (tasks {two['tasks_per_rank']}), efficiency "
              f"{fig['mpi_parallel_efficiency']:.1%}; driver overhead "
              f"{fig['driver_overhead_s_per_label']:.3f} s/label "
              f"({fig['driver_overhead_pct']:+.2f} %)", flush=True)
        shutil.rmtree(work, ignore_errors=True)
    fig["load_avg_1min_end"] = os.getloadavg()[0]
    print(json.dumps(fig))


if __name__ == "__main__":
    main()
