"""MLIP benchmark on Ag6 (planar D3h and pyramid C5v isomers) labelled with EMT by alflow.

Figures (the last line of output is one JSON object):

* accuracy: force MAE (eV/Å) and energy MAE (meV/atom) on 200 held-out configurations after
  training on 50, 200 and 1000 configurations, for the built-in model, MACE and sGDML (same
  training sets, same test set; one model each, no committee);
* throughput: energy+forces of a batch of 1024 Ag6 configurations, configurations per
  second, built-in vs MACE (single model, and the built-in committee of 4 through
  ``load_potential``), on ``--device``: the batch in one call, and each model's best over
  calls of 128, 256 and 1024 configurations (MACE is faster in smaller calls);
* DDP scaling: training samples per second of one member on 2000 labelled configurations
  (random displacements of the two isomers) at global batches 64 and 256 (``--ddp-batch``;
  the 2 processes' per-rank work is half of it): time inside training steps (including the
  gradient all-reduce) and the wall time of the epochs (with validation and checkpoints),
  for 1 process with 1 thread and 2 processes (gloo on CPU, NCCL on CUDA) with cores/2
  threads each, interleaved over ``--ddp-rounds`` rounds with the load average before each
  run, every one a fresh process started by ``alflow.distributed.spawn``;
  efficiency = rate(2 processes) / (2 rate(1 process, 1 thread)) at the same global batch
  (the same weights either way), per round and the median (``efficiency``: steps, the
  largest batch), also per CPU second of the busiest rank's steps (``cpu``: the work DDP
  adds, duplicated per-step work and the all-reduce, without the waits a loaded machine
  adds); at the largest batch also 1 process with all cores' threads (not with
  ``--quick``), two independent one-thread trainings run at the same time (the ceiling two
  processes have on the machine at that moment: DDP's own cost is the 2-process rate
  against their sum), and the rank count ``parallel: auto`` chooses from its probe.

``--quick`` runs the same figures at 50 training configurations and fewer epochs.
Data: MD frames (ASE Langevin on EMT, 300 K and 700 K) and random displacements (0.05 and
0.1 Å) of both isomers from ``alflow/examples/data/ag6.extxyz``, labelled through
``alflow.labelling.label_many(..., "ase:emt")``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from alflow.mlip import MLIPConfig, load_potential, train_committee  # noqa: E402
from alflow.mlip.committee import Committee  # noqa: E402
from alflow.mlip.data import LabelledData, from_atoms  # noqa: E402

log = logging.getLogger("bench.mlip")


def make_dataset(n_total: int, seed: int = 0) -> list:
    """Ag6 frames of both isomers, labelled with EMT through alflow; shuffled."""
    from ase import units
    from ase.calculators.emt import EMT
    from ase.io import read
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    from alflow.labelling import label_many

    rng = np.random.default_rng(seed)
    isomers = read(ROOT / "alflow/examples/data/ag6.extxyz", ":")
    frames, tags = [], []
    per = n_total // (2 * len(isomers)) + 1
    for iso in isomers:
        state = iso.info.get("state", "?")
        for temp in (300, 700):  # MD frames
            a = iso.copy()
            a.calc = EMT()
            MaxwellBoltzmannDistribution(a, temperature_K=temp, rng=rng)
            md = Langevin(a, 5 * units.fs, temperature_K=temp, friction=0.02, rng=rng,
                          fixcm=False)
            for _ in range(per // 2):
                md.run(10)
                b = a.copy()
                b.calc = None
                frames.append(b)
                tags.append({"state": state, "kind": f"md{temp}"})
        for sigma in (0.05, 0.1):  # random displacements
            for _ in range(per // 2):
                b = iso.copy()
                b.positions += rng.normal(0, sigma, b.positions.shape)
                frames.append(b)
                tags.append({"state": state, "kind": f"disp{sigma}"})
    order = rng.permutation(len(frames))[:n_total]
    frames = [frames[i] for i in order]
    tags = [tags[i] for i in order]
    records = label_many(frames, "ase:emt", store=None, tags=tags)
    return [r.to_atoms() for r in records if r.status == "ok"]


def errors(pred_e, pred_f, data: LabelledData) -> dict:
    n = np.array([len(z) for z in data.numbers], float)
    de = (np.asarray(pred_e) - data.energy) / n
    df = np.concatenate([(np.asarray(a) - b).ravel() for a, b in zip(pred_f, data.forces,
                                                                       strict=True)])
    return {"f_mae": float(np.abs(df).mean()), "e_mae_mev_atom": 1000 * float(np.abs(de).mean()),
            "f_rmse": float(np.sqrt((df**2).mean()))}


def train_ours(backend: str, train, test: LabelledData, epochs: int, workdir: Path,
               device: str) -> tuple[dict, Path]:
    cfg = MLIPConfig(backend=backend, committee_size=1, epochs=epochs,
                     patience=max(20, epochs // 4), device=device, valid_fraction=0.1, seed=0)
    out = workdir / f"{backend}_{len(train)}"
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    train_committee(train, out, cfg)
    sec = time.perf_counter() - t0
    p = Committee.load(out, device).predict_data(test)
    return {**errors(p["energy"], p["forces"], test), "train_s": round(sec, 1),
            "epochs": epochs}, out


def train_sgdml(train_data: LabelledData, test: LabelledData,
                sigmas: tuple[float, ...] = (2, 5, 10, 20, 40)) -> dict:
    """sGDML with the kernel width chosen on a validation tenth (grid of ``sigmas``)."""
    if not hasattr(np, "in1d"):  # sgdml 1.0.3 calls np.in1d, removed in numpy 2.4
        np.in1d = np.isin
    try:
        from sgdml.predict import GDMLPredict
        from sgdml.train import GDMLTrain
    except Exception as err:  # pragma: no cover - reported in the JSON
        return {"error": f"sgdml import failed: {err}"}
    n = len(train_data)
    R = np.array(train_data.positions)
    ds = {"type": "d", "name": np.array("ag6"), "theory": np.array("EMT"),
          "z": np.asarray(train_data.numbers[0]), "R": R, "E": train_data.energy.copy(),
          "F": np.array(train_data.forces), "r_unit": np.array("Ang"),
          "e_unit": np.array("eV")}
    from sgdml.utils import io

    ds["md5"] = np.array(io.dataset_md5(ds))
    n_val = max(5, n // 10)
    n_tr = n - n_val
    best, t0 = None, time.perf_counter()
    gdml = GDMLTrain(max_processes=1, use_torch=False)
    for sig in sigmas:
        for use_sym in (True, False):
            try:
                task = gdml.create_task(ds, n_tr, ds, n_val, sig=sig, use_sym=use_sym)
                model = gdml.train(task)
            except Exception as err:  # symmetry search can fail across isomers
                log.info("sgdml sig=%s sym=%s failed: %s", sig, use_sym, err)
                continue
            pred = GDMLPredict(model, max_processes=1)
            idx = model["idxs_valid"] if "idxs_valid" in model else np.arange(n)
            e, f = pred.predict(R[idx].reshape(len(idx), -1))
            val = errors(e, f.reshape(len(idx), -1, 3), train_data.subset(idx))["f_mae"]
            if best is None or val < best[0]:
                best = (val, sig, use_sym, model)
            break  # the first use_sym that works
    if best is None:
        return {"error": "every sGDML fit failed"}
    _, sig, use_sym, model = best
    pred = GDMLPredict(model, max_processes=1)
    Rt = np.array(test.positions)
    e, f = pred.predict(Rt.reshape(len(Rt), -1))
    return {**errors(e, f.reshape(len(Rt), -1, 3), test), "sigma": sig, "use_sym": use_sym,
            "train_s": round(time.perf_counter() - t0, 1)}


def throughput(model_dir: Path, numbers, x: torch.Tensor, device: str, repeat: int = 3,
               chunks: tuple[int, ...] = (1024,)) -> dict[int, dict[str, float]]:
    """Energy+forces of the committee in ``model_dir`` on batch ``x`` in calls of each size in
    ``chunks``: configurations per second of wall time and per CPU second of this process
    (best of ``repeat``; with one thread the CPU figure is what an unshared core delivers)."""
    pot = load_potential(model_dir, numbers, device=device)
    xd = x.to(device)
    pot.evaluate(xd[:8])
    out = {}
    for chunk in chunks:
        pot.chunk = chunk
        wall = cpu = 0.0
        for _ in range(repeat):
            t0, c0 = time.perf_counter(), time.process_time()
            pot.evaluate(xd)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            wall = max(wall, len(x) / (time.perf_counter() - t0))
            cpu = max(cpu, len(x) / max(time.process_time() - c0, 1e-9))
        out[chunk] = {"wall": wall, "cpu": cpu}
    return out


def ddp_data(n: int, seed: int = 2) -> LabelledData:
    """``n`` random displacements (0.07 Å) of both Ag6 isomers, labelled with EMT."""
    from ase.io import read

    from alflow.labelling import label_many

    rng = np.random.default_rng(seed)
    isomers = read(ROOT / "alflow/examples/data/ag6.extxyz", ":")
    frames = []
    for k in range(n):
        a = isomers[k % len(isomers)].copy()
        a.positions += rng.normal(0, 0.07, a.positions.shape)
        frames.append(a)
    records = label_many(frames, "ase:emt", store=None)
    return from_atoms([r.to_atoms() for r in records if r.status == "ok"])[0]


def _ddp_rates(info, job) -> dict:
    """Samples/s inside steps, over the epochs' wall time, and per CPU second of the busiest
    rank's steps (what the ranks would deliver each on a core of its own, waiting aside)."""
    from alflow.mlip.train import train_member

    out = train_member(info, **job)
    n = len(job["train_idx"]) * out["epochs"]
    cpu = torch.tensor([out["step_cpu_s"]], dtype=torch.float64)
    if info.world_size > 1:
        torch.distributed.all_reduce(cpu, op=torch.distributed.ReduceOp.MAX)
    return {"steps": out["samples_per_s"], "epochs": n / out["train_loop_s"],
            "cpu": n / max(float(cpu), 1e-9)}


def ddp_scaling(data: LabelledData, workdir: Path, device: str, epochs: int,
                batches: tuple[int, ...] = (64, 256), rounds: int = 2,
                all_threads: bool = True) -> dict:
    """Samples/s of one member's training in fresh processes (each pays its own start-up,
    e.g. oneDNN kernel generation, inside the first steps), per global batch: 1 process with
    1 thread and 2 processes with their share of the cores each, interleaved over ``rounds``
    (the order alternates; the load average is recorded before each run), then, at the
    largest batch, 1 process with every core's threads (if ``all_threads``), two
    independent 1-thread trainings at the same time and the ``parallel: auto`` probe."""
    from concurrent.futures import ThreadPoolExecutor

    from alflow.distributed import spawn, threads_per_process
    from alflow.mlip.data import fit_statistics
    from alflow.mlip.ranks import choose_ranks

    n, n_val = len(data), max(16, len(data) // 20)
    cores, per_rank = threads_per_process(1), threads_per_process(2)
    res: dict = {"n_train": n - n_val, "epochs": epochs, "cores": cores,
                 "threads_per_rank": per_rank}

    def job(batch: int) -> dict:
        cfg = MLIPConfig(epochs=epochs, batch_size=batch, patience=1000, device=device)
        return dict(data=data, train_idx=np.arange(n - n_val), val_idx=np.arange(n - n_val, n),
                    cfg=cfg, stats=fit_statistics(data, cfg.cutoff), seed=1, data_key="bench")

    def run(batch: int, nproc: int, threads: int, tag: str) -> dict:
        load = os.getloadavg()[0]
        out = spawn(_ddp_rates, nproc, {**job(batch), "member_dir": str(workdir / tag)},
                    device=device, threads=threads)
        return {**{k: round(v, 1) for k, v in out.items()}, "load": round(load, 1)}

    for batch in batches:
        runs: dict[str, list] = {"1x1": [], "2x": []}
        for r in range(rounds):
            order = [("1x1", 1, 1), ("2x", 2, per_rank)]
            for key, nproc, threads in order if r % 2 == 0 else order[::-1]:
                runs[key].append(run(batch, nproc, threads, f"ddp_{batch}_{key}_{r}"))
        res[f"batch_{batch}"] = dict(runs)
        for w in ("steps", "epochs", "cpu"):
            eff = [round(b[w] / (2 * a[w]), 3) for a, b in zip(runs["1x1"], runs["2x"],
                                                               strict=True)]
            res[f"batch_{batch}"][f"efficiency_{w}"] = eff
            res[f"batch_{batch}"][f"efficiency_{w}_median"] = float(np.median(eff))
    big = max(batches)
    res["efficiency"] = res[f"batch_{big}"]["efficiency_steps_median"]
    res["efficiency_batch"] = big
    if all_threads:
        res[f"1x{cores}"] = run(big, 1, cores, "ddp_threads")
    # the ceiling two processes have on this machine now: two independent 1-thread trainings
    # (no communication) at the same time; DDP's own cost is the 2-rank rate against their sum
    with ThreadPoolExecutor(2) as pool:
        ind = list(pool.map(lambda k: run(big, 1, per_rank, f"ind{k}"), range(2)))
    res["2_independent"] = {w: round(ind[0][w] + ind[1][w], 1)
                            for w in ("steps", "epochs", "cpu")}
    ranks, probe = choose_ranks(job(big), 2, device)  # what `parallel: auto` would train with
    res["auto"] = {"ranks": ranks, "probe_samples_per_s": probe}
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--skip-mace", action="store_true")
    ap.add_argument("--skip-sgdml", action="store_true")
    ap.add_argument("--skip-builtin", action="store_true")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--sizes", default=None, help="training sizes, e.g. 200,1000")
    ap.add_argument("--epochs", default=None, help="epochs per size, e.g. 300,100")
    ap.add_argument("--ddp-batch", default="64,256",
                    help="global batches of the DDP figures, e.g. 64,256")
    ap.add_argument("--ddp-rounds", type=int, default=None,
                    help="interleaved rounds of the 1- and 2-process DDP runs (default: 1 "
                         "with --quick, else 3)")
    ap.add_argument("--accuracy-only", action="store_true",
                    help="skip the throughput and DDP figures")
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    t_start = time.perf_counter()
    sizes = [50] if a.quick else [50, 200, 1000]
    epochs = {50: 40} if a.quick else {50: 200, 200: 80, 1000: 20}
    if a.sizes:
        sizes = [int(v) for v in a.sizes.split(",")]
        ep = [int(v) for v in a.epochs.split(",")] if a.epochs else [100] * len(sizes)
        epochs = dict(zip(sizes, ep, strict=True))
    n_test = 200
    work = a.workdir or Path(tempfile.mkdtemp(prefix="alflow-bench-mlip-"))
    work.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    import warnings

    warnings.filterwarnings("ignore")
    atoms = make_dataset((50 if a.quick else 1000) + n_test)
    data_s = time.perf_counter() - t0
    test_atoms, pool = atoms[:n_test], atoms[n_test:]
    test, _ = from_atoms(test_atoms)
    res: dict = {"benchmark": "mlip", "quick": a.quick, "device": a.device,
                 "threads": torch.get_num_threads(), "n_test": n_test,
                 "data": {"n": len(atoms), "label_s": round(data_s, 1), "oracle": "ase:emt"},
                 "accuracy": {}}
    models: dict[str, Path] = {}
    last_sg: dict = {}
    for n in sizes:
        train = pool[:n]
        row: dict = {}
        for backend in ("builtin", "mace"):
            if (backend == "mace" and a.skip_mace) or (backend == "builtin" and a.skip_builtin):
                continue
            row[backend], models[backend] = train_ours(backend, train, test, epochs[n], work,
                                                       a.device)
            print(f"n={n} {backend}: {row[backend]}", flush=True)
        if not a.skip_sgdml:
            # sigma grid at <= 200 configurations; at 1000 the best sigma found at 200
            # (each analytic solve is O((3Nn)^3))
            sig = (2, 5, 10, 20, 40) if n <= 200 or "sigma" not in last_sg else \
                (last_sg["sigma"],)
            row["sgdml"] = last_sg = train_sgdml(from_atoms(train)[0], test, sig)
            print(f"n={n} sgdml: {row['sgdml']}", flush=True)
        res["accuracy"][str(n)] = row
    if a.accuracy_only:
        res["wall_s"] = round(time.perf_counter() - t_start, 1)
        print(json.dumps(res))
        return

    # throughput, batch of 1024 test-like configurations
    rng = np.random.default_rng(1)
    x = torch.tensor(np.array([test.positions[i] for i in rng.integers(0, len(test), 1024)]))
    numbers = test.numbers[0]
    chunks = (128, 256, 1024)
    ours = throughput(models["builtin"], numbers, x, a.device, chunks=chunks)
    if "mace" not in models:  # speed does not depend on the weights: a 1-epoch MACE
        models["mace"] = work / "mace_speed"
        shutil.rmtree(models["mace"], ignore_errors=True)
        train_committee(pool[:50], models["mace"],
                        MLIPConfig(backend="mace", committee_size=1, epochs=1))
    mace = throughput(models["mace"], numbers, x, a.device, chunks=chunks)
    tp: dict = {"batch": 1024, "chunks": list(chunks)}
    for clock in ("wall", "cpu"):  # per second of wall time / of this process's CPU time
        o = {c: v[clock] for c, v in ours.items()}
        m = {c: v[clock] for c, v in mace.items()}
        best_o, best_m = max(o, key=o.get), max(m, key=m.get)
        tp[clock] = {"builtin": round(o[1024], 1), "mace": round(m[1024], 1),
                     "speedup": round(o[1024] / m[1024], 2),
                     "builtin_best": round(o[best_o], 1), "builtin_best_chunk": best_o,
                     "mace_best": round(m[best_m], 1), "mace_best_chunk": best_m,
                     "speedup_best": round(o[best_o] / m[best_m], 2)}
    cdir = work / "committee4"
    shutil.rmtree(cdir, ignore_errors=True)
    train_committee(pool[:50], cdir, MLIPConfig(committee_size=4, epochs=2))
    c4 = throughput(cdir, numbers, x, a.device)[1024]
    tp["wall"]["builtin_committee4"] = round(c4["wall"], 1)
    tp["cpu"]["builtin_committee4"] = round(c4["cpu"], 1)
    res["throughput_cfg_per_s"] = tp
    print(f"throughput: {tp}", flush=True)

    t0 = time.perf_counter()
    ddp_set = ddp_data(2000)
    label_s = round(time.perf_counter() - t0, 1)
    res["ddp"] = {**ddp_scaling(ddp_set, work, a.device, epochs=2 if a.quick else 4,
                                batches=tuple(int(v) for v in a.ddp_batch.split(",")),
                                rounds=a.ddp_rounds or (1 if a.quick else 3),
                                all_threads=not a.quick),
                  "label_s": label_s}
    print(f"ddp: {res['ddp']}", flush=True)
    res["wall_s"] = round(time.perf_counter() - t_start, 1)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
