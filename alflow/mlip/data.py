"""Labelled configurations as arrays, their statistics, and training batches.

Input is a list of ASE Atoms carrying energy (eV) and forces (eV/Å) through their calculator
(what ``LabelStore.read_atoms()`` returns). Configurations with missing or non-finite labels
are dropped and reported; they never reach the loss.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field

import numpy as np
import torch
from ase import Atoms

from alflow.errors import InputError
from alflow.mlip.graph import DenseBatch, GraphBatch, make_graph, neighbor_edges

log = logging.getLogger(__name__)


@dataclass
class LabelledData:
    """Per-configuration arrays: numbers (N,), positions (N, 3) Å, energy eV, forces (N, 3)
    eV/Å, cell (3, 3) Å, pbc (3,), tags (the Atoms' ``info``)."""

    numbers: list[np.ndarray]
    positions: list[np.ndarray]
    energy: np.ndarray
    forces: list[np.ndarray]
    cells: list[np.ndarray]
    pbcs: list[np.ndarray]
    tags: list[dict] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.energy)

    def subset(self, idx) -> LabelledData:
        idx = [int(i) for i in idx]
        return LabelledData([self.numbers[i] for i in idx], [self.positions[i] for i in idx],
                            self.energy[idx], [self.forces[i] for i in idx],
                            [self.cells[i] for i in idx], [self.pbcs[i] for i in idx],
                            [self.tags[i] for i in idx] if self.tags else [])

    @property
    def periodic(self) -> bool:
        return any(bool(np.any(p)) for p in self.pbcs)

    @property
    def same_size(self) -> bool:
        return len({len(z) for z in self.numbers}) <= 1


def from_atoms(atoms_list: list[Atoms]) -> tuple[LabelledData, list[tuple[int, str]]]:
    """Arrays of the labelled configurations and the (index, reason) of those dropped."""
    keep: dict[str, list] = {k: [] for k in ("z", "x", "e", "f", "c", "p", "t")}
    dropped: list[tuple[int, str]] = []
    for k, atoms in enumerate(atoms_list):
        calc = atoms.calc
        res = getattr(calc, "results", {}) if calc is not None else {}
        e, f = res.get("energy"), res.get("forces")
        if e is None or f is None:
            dropped.append((k, "no energy/forces"))
            continue
        f = np.asarray(f, dtype=float)
        if f.shape != (len(atoms), 3):
            dropped.append((k, f"forces shape {f.shape} != ({len(atoms)}, 3)"))
            continue
        if not (np.isfinite(e) and np.all(np.isfinite(f))):
            dropped.append((k, "non-finite energy or forces"))
            continue
        if not np.all(np.isfinite(atoms.positions)):
            dropped.append((k, "non-finite positions"))
            continue
        keep["z"].append(np.asarray(atoms.numbers, dtype=np.int64))
        keep["x"].append(np.asarray(atoms.positions, dtype=float))
        keep["e"].append(float(e))
        keep["f"].append(f)
        keep["c"].append(np.asarray(atoms.cell.array, dtype=float))
        keep["p"].append(np.asarray(atoms.pbc, dtype=bool))
        keep["t"].append(dict(atoms.info))
    for k, why in dropped:
        log.warning("configuration %d dropped: %s", k, why)
    data = LabelledData(keep["z"], keep["x"], np.array(keep["e"], dtype=float), keep["f"],
                        keep["c"], keep["p"], keep["t"])
    return data, dropped


def data_hash(data: LabelledData) -> str:
    """sha256 (hex, 16 chars) of the numbers, positions, cells, energies and forces in order."""
    h = hashlib.sha256()
    for z, x, e, f, c, p in zip(data.numbers, data.positions, data.energy, data.forces,
                                data.cells, data.pbcs, strict=True):
        for a in (z, np.round(x, 10), np.array([e]), np.round(f, 10), np.round(c, 10), p):
            h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def fit_statistics(data: LabelledData, cutoff: float) -> dict:
    """Elements, per-element reference energies e0 (least squares of E on element counts),
    force RMS (the model's energy scale), and the mean neighbour count within ``cutoff``."""
    if len(data) == 0:
        raise InputError("no labelled configurations to train on")
    z = sorted({int(v) for zz in data.numbers for v in zz})
    counts = np.array([[np.sum(zz == s) for s in z] for zz in data.numbers], dtype=float)
    e0, *_ = np.linalg.lstsq(counts, data.energy, rcond=None)
    f = np.concatenate([ff.reshape(-1) for ff in data.forces])
    scale = float(np.sqrt(np.mean(f**2))) if len(f) else 1.0
    if not np.isfinite(scale) or scale < 1e-6:
        scale = 1.0
    sample = np.linspace(0, len(data) - 1, min(len(data), 200)).astype(int)
    neigh = [len(neighbor_edges(data.positions[k], data.cells[k], data.pbcs[k], cutoff)[0])
             / len(data.numbers[k]) for k in sample]
    return {"atomic_numbers": z, "e0": [float(v) for v in e0], "scale": scale, "shift": 0.0,
            "avg_num_neighbors": float(max(np.mean(neigh), 1.0))}


@dataclass
class Targets:
    """Labels of one (local) batch: energy minus reference (B,) eV, forces, atoms per config."""

    energy: torch.Tensor
    forces: torch.Tensor
    n_atoms: torch.Tensor


class Batcher:
    """Builds model batches + targets from index lists; dense all-pairs when every
    configuration is a finite cluster of the same size, else a neighbour-list graph."""

    def __init__(self, data: LabelledData, atomic_numbers: list[int], e0: list[float],
                 cutoff: float, dtype: torch.dtype, device: torch.device):
        self.data = data
        self.dtype = dtype
        self.device = device
        self.cutoff = cutoff
        lut = {int(z): k for k, z in enumerate(atomic_numbers)}
        try:
            self.species = [np.array([lut[int(v)] for v in zz]) for zz in data.numbers]
        except KeyError as err:
            raise InputError(f"element Z={err.args[0]} is not in the model "
                             f"(model elements {atomic_numbers})") from None
        e0a = np.asarray(e0, dtype=float)
        self.residual = np.array([data.energy[k] - e0a[s].sum()
                                  for k, s in enumerate(self.species)])
        self.dense = (not data.periodic) and data.same_size
        if self.dense and len(data):
            t = {"dtype": dtype, "device": device}
            self._x = torch.tensor(np.array(data.positions), **t)
            self._f = torch.tensor(np.array(data.forces), **t)
            self._s = torch.tensor(np.array(self.species), dtype=torch.long, device=device)
        else:
            self._edges = [neighbor_edges(x, c, p, cutoff) for x, c, p in
                           zip(data.positions, data.cells, data.pbcs, strict=True)]
        self._e = torch.tensor(self.residual, dtype=dtype, device=device)
        self._n = torch.tensor([len(z) for z in data.numbers], dtype=dtype, device=device)

    def __call__(self, idx) -> tuple[DenseBatch | GraphBatch, Targets]:
        """Batch (positions with requires_grad) and targets of configurations ``idx``."""
        idx_t = torch.as_tensor(np.asarray(idx, dtype=np.int64), device=self.device)
        tgt_e, tgt_n = self._e[idx_t], self._n[idx_t]
        if self.dense:
            x = self._x[idx_t].clone().requires_grad_(True)
            return DenseBatch(x, self._s[idx_t]), Targets(tgt_e, self._f[idx_t], tgt_n)
        d = self.data
        sel = [int(i) for i in idx]
        g = make_graph([d.positions[i] for i in sel], [self.species[i] for i in sel],
                       [d.cells[i] for i in sel], [d.pbcs[i] for i in sel], self.cutoff,
                       dtype=self.dtype, device=self.device,
                       edges=[self._edges[i] for i in sel])
        g.positions.requires_grad_(True)
        f = torch.tensor(np.concatenate([d.forces[i] for i in sel]), dtype=self.dtype,
                         device=self.device)
        return g, Targets(tgt_e, f, tgt_n)


__all__ = ["Batcher", "LabelledData", "Targets", "data_hash", "fit_statistics", "from_atoms"]
