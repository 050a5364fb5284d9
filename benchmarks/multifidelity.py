"""How many expensive labels does a committee need when it is pretrained on a cheap oracle?
Transfer learning vs Δ-learning vs no pretraining (alflow.mlip.transfer), on a DFT-free
stand-in: Ag6 with a Morse pair potential as the cheap oracle (Girifalco-Weizer silver:
D 0.3323 eV, α 1.369 1/Å, r0 3.115 Å) and EMT (many-body) as the expensive one.

Configurations: Langevin MD on EMT at 300 and 700 K from every Ag6 isomer of the examples, and
random displacements (0.05, 0.1 Å), shuffled; a pool labelled by both oracles and a held-out
set labelled by EMT (never trained on). The pretrained committee trains on every cheap label
of the pool. Each method then trains on the first n expensive labels of the pool (the same
nested subsets, epochs and learning rate for every method unless ``--finetune-lr`` says
otherwise, so the comparison is of the training modes alone):

- ``scratch``: a committee on the n EMT labels, from random weights;
- ``transfer``: the pretrained committee fine-tuned on them (reference energies shifted first);
- ``delta``: the pretrained committee plus a committee of the difference EMT − Morse.

Figures: force MAE (eV/Å) and energy MAE (meV/atom) of the committee mean on the held-out
set per method and n, and per method the fewest labels reaching ``--target`` force MAE
(null: none of the sizes tried).

    nice -n 19 python benchmarks/multifidelity.py [--quick] [--target 0.1] [--out DIR]

``--quick``: a smaller pool, sizes 4-32, fewer epochs (under 2 minutes on an idle 2-core CPU).
The last line is one JSON object: ``{"target_f_mae", "labels_to_target": {method: n},
"curves": {method: [[n, f_mae, e_mae_mev], ...]}, ...}``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CHEAP = ("ase:morse", {"epsilon": 0.3323, "r0": 3.115, "rho0": 4.264})
METHODS = ("scratch", "transfer", "delta")


def frames(n_total: int, seed: int = 0) -> list:
    """Ag6 configurations (unlabelled ASE Atoms) of every isomer, shuffled."""
    from ase import units
    from ase.calculators.emt import EMT
    from ase.io import read
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    rng = np.random.default_rng(seed)
    isomers = read(ROOT / "alflow/examples/data/ag6.extxyz", ":")
    out = []
    per = n_total // (4 * len(isomers)) + 1
    for iso in isomers:
        for temp in (300, 700):
            a = iso.copy()
            a.calc = EMT()
            MaxwellBoltzmannDistribution(a, temperature_K=temp, rng=rng)
            md = Langevin(a, 5 * units.fs, temperature_K=temp, friction=0.02, rng=rng,
                          fixcm=False)
            for _ in range(per):
                md.run(10)
                out.append(a.copy())
        for sigma in (0.05, 0.1):
            for _ in range(per):
                b = iso.copy()
                b.positions += rng.normal(0, sigma, b.positions.shape)
                out.append(b)
    return [out[i] for i in rng.permutation(len(out))[:n_total]]


def label(atoms: list, method: str, kwargs: dict | None = None) -> list:
    """Both labels' Atoms in input order (None where the oracle failed)."""
    from alflow.labelling import label_many, parse_method

    recs = label_many(atoms, parse_method(method, ase_kwargs=kwargs or {}), store=None)
    return [r.to_atoms() if r.status == "ok" else None for r in recs]


def metrics(model_dir: Path, test: list) -> tuple[float, float]:
    """Force MAE (eV/Å) and energy MAE (meV/atom) of the committee mean on ``test``."""
    from alflow.mlip.committee import Committee
    from alflow.mlip.data import from_atoms

    data, _ = from_atoms(test)
    m = Committee.load(model_dir).metrics(data)
    return m["f_mae"], 1e3 * m["e_mae_per_atom"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--target", type=float, default=0.1, help="force MAE target, eV/Å")
    ap.add_argument("--finetune-lr", type=float, default=None,
                    help="learning rate of the fine-tuning (default: the others' 0.005)")
    ap.add_argument("--out", default=None, help="directory for the committees (default: tmp)")
    args = ap.parse_args()
    import torch

    from alflow.mlip import MLIPConfig, train_committee
    from alflow.mlip.transfer import (
        difference_atoms,
        finetune_committee,
        write_delta_committee,
    )

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    n_pool, n_test = (160, 60) if args.quick else (400, 150)
    sizes = [4, 8, 16, 32] if args.quick else [4, 8, 16, 32, 64, 128]
    epochs = 150 if args.quick else 400
    base = {"cutoff": 6.0, "committee_size": 2, "dtype": "float64", "lr": 0.005,
            "patience": 1000, "builtin": {"features": 16, "layers": 1, "n_rbf": 8,
                                          "radial_hidden": 16, "readout_hidden": 16}}
    t0, c0 = time.time(), time.process_time()
    pool_x = frames(n_pool + n_test)
    hi = label(pool_x, "ase:emt")
    lo = label(pool_x[:n_pool], CHEAP[0], CHEAP[1])
    test = [a for a in hi[n_pool:] if a is not None]
    pairs = [(h, c) for h, c in zip(hi[:n_pool], lo, strict=True)
             if h is not None and c is not None]
    work = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="alflow-mf-"))
    pre = train_committee([c for _, c in pairs], work / "pretrained",
                          MLIPConfig(**base, epochs=epochs, seed=1))
    curves: dict[str, list] = {m: [] for m in METHODS}
    for n in sizes:
        sub = pairs[:n]
        exp = [h for h, _ in sub]
        cfg = MLIPConfig(**base, epochs=epochs, seed=2)
        ft = MLIPConfig(**{**base, "lr": args.finetune_lr or base["lr"]}, epochs=epochs,
                        seed=2)
        dirs = {"scratch": train_committee(exp, work / f"scratch-{n}", cfg),
                "transfer": finetune_committee(exp, work / f"transfer-{n}", ft, pre)}
        d = train_committee(difference_atoms(exp, [c for _, c in sub]),
                            work / f"delta-{n}" / "delta", cfg)
        dirs["delta"] = write_delta_committee(work / f"delta-{n}", pre, d)
        for m in METHODS:
            f, e = metrics(dirs[m], test)
            curves[m].append([n, round(f, 4), round(e, 3)])
            print(f"n={n:4d} {m:9s} force MAE {f:.4f} eV/Å  energy MAE {e:.2f} meV/atom",
                  flush=True)
    pf, pe = metrics(pre, test)
    to_target = {m: next((n for n, f, _ in curves[m] if f <= args.target), None)
                 for m in METHODS}
    print(f"pretrained (cheap labels only) on the EMT test set: force MAE {pf:.4f} eV/Å, "
          f"energy MAE {pe:.2f} meV/atom")
    print(f"labels to force MAE <= {args.target} eV/Å: {to_target}")
    print(json.dumps({"benchmark": "multifidelity", "quick": args.quick,
                      "cheap": f"{CHEAP[0]}{CHEAP[1]}", "expensive": "ase:emt",
                      "n_cheap": len(pairs), "n_test": len(test), "epochs": epochs,
                      "lr": base["lr"], "finetune_lr": args.finetune_lr or base["lr"],
                      "target_f_mae": args.target, "labels_to_target": to_target,
                      "pretrained_only": [round(pf, 4), round(pe, 3)], "curves": curves,
                      "wall_s": round(time.time() - t0, 1),
                      "cpu_s": round(time.process_time() - c0, 1),
                      "load": os.getloadavg()[0]}))


if __name__ == "__main__":
    main()
