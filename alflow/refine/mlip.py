"""The built-in committee MLIP as a refinable potential, anchored to its labels.

:class:`TrainableMLIP` holds the members of a trained committee (``alflow.mlip``) in float64
with every weight trainable. Its energy is the committee mean, on periodic boxes through
the same neighbour lists as the Lennard-Jones model (pairs built outside the gradient,
turned into the members' edge graph here), so the refinement's MD, reweighting and
trajectory gradients reach the network weights unchanged. The anchor
(:meth:`TrainableMLIP.label_loss`) is the members' training loss on labelled
configurations (energy per atom and forces, the weights of the committee's own
configuration), which keeps the refined committee close to its reference labels.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from ase.io import read

from alflow.errors import InputError
from alflow.mlip.committee import Committee
from alflow.mlip.data import Batcher, from_atoms
from alflow.mlip.graph import GraphBatch
from alflow.mlip.train import batch_loss
from alflow.periodic import PairList


def read_labels(path: str | Path):
    """Labelled configurations (energies and forces) of an ASE-readable file, as
    :class:`alflow.mlip.data.LabelledData`; InputError naming the file otherwise."""
    try:
        frames = read(str(path), index=":")
    except Exception as err:  # ASE raises many kinds for a malformed file
        raise InputError(f"{path}: cannot read labelled configurations: {err}") from None
    data, dropped = from_atoms(frames)
    if len(data) == 0:
        raise InputError(f"{path}: no configuration with energy and forces "
                         f"({len(dropped)} dropped: {dropped[:3]})")
    return data


def graph_of_pairs(positions: torch.Tensor, cell: torch.Tensor, pairs: PairList,
                   species: torch.Tensor) -> GraphBatch:
    """The members' edge graph of configurations (B, N, 3) Å in cells (B, 3, 3) Å from a
    pair list (i < j, minimum image): both directions of every pair; positions stay
    connected to the autograd graph, the image shifts are constants."""
    b, n = positions.shape[:2]
    with torch.no_grad():
        c = cell[pairs.batch]
        dr = positions[pairs.batch, pairs.j] - positions[pairs.batch, pairs.i]
        frac = torch.einsum("pk,pkl->pl", dr, torch.linalg.inv(c))
        shift = torch.einsum("pk,pkl->pl", -torch.round(frac), c)
    off = pairs.batch * n
    ei = torch.cat([off + pairs.i, off + pairs.j])
    ej = torch.cat([off + pairs.j, off + pairs.i])
    shifts = torch.cat([shift, -shift])
    return GraphBatch(positions=positions.reshape(b * n, 3), species=species.repeat(b),
                      batch=torch.arange(b).repeat_interleave(n), edge_i=ei, edge_j=ej,
                      shifts=shifts, unit_shifts=torch.zeros_like(shifts), cell=cell,
                      n_graphs=b)


class TrainableMLIP:
    """A committee in ``model_dir`` refined on ``numbers`` (N,); anchored to ``labels``."""

    def __init__(self, model_dir: str | Path, numbers, labels: str | Path):
        self.model_dir = Path(model_dir)
        committee = Committee.load(self.model_dir)
        self.config, self.meta = committee.config, committee.meta
        self.members = [m.to(torch.float64) for m in committee.members]
        self.trainable = []
        for k, m in enumerate(self.members):
            for name, p in m.named_parameters():
                p.requires_grad_(True)
                self.trainable.append(f"member_{k}.{name}")
        self.cutoff = float(committee.cutoff)
        self.species = committee.species(np.asarray(numbers))
        self.labels = read_labels(labels)
        first = self.members[0]
        self.batcher = Batcher(self.labels, first.atomic_numbers.tolist(),
                               first.e0.tolist(), self.cutoff, torch.float64,
                               torch.device("cpu"))
        self.n_label_atoms = float(sum(len(z) for z in self.labels.numbers))

    def leaves(self) -> list[torch.Tensor]:
        """Every member's weights, in the order of ``self.trainable``."""
        return [p for m in self.members for p in m.parameters()]

    def energy(self, positions: torch.Tensor, cell: torch.Tensor, pairs: PairList,
               detached: bool = False) -> torch.Tensor:
        """Committee-mean energies (B,) eV of positions (B, N, 3) Å in cells (B, 3, 3) Å
        (``detached`` is accepted for the Lennard-Jones model's interface; forces are
        derivatives in positions only)."""
        g = graph_of_pairs(positions, cell, pairs, self.species)
        return torch.stack([m.total_energy(g) for m in self.members]).mean(0)

    def sample_energies(self, ens) -> torch.Tensor:
        """Energies (S,) eV of the frames of an :class:`alflow.refine.reweight.Ensemble`,
        through its stored pair lists (differentiable in the weights)."""
        out = []
        for lo, hi, pairs in ens.chunks:
            out.append(self.energy(ens.frames[lo:hi], ens.cell[lo:hi], pairs))
        return torch.cat(out)

    def label_loss(self) -> torch.Tensor:
        """Mean over members of their training loss on the labels (differentiable)."""
        idx = np.arange(len(self.labels))
        losses = []
        for m in self.members:
            batch, tgt = self.batcher(idx)
            loss, _ = batch_loss(m, batch, tgt, self.config, len(idx), self.n_label_atoms)
            losses.append(loss)
        return torch.stack(losses).mean()

    def values(self) -> dict[str, float]:
        """The committee mean's errors on the labels: energy per atom (eV) and force
        component (eV/Å) root-mean-square errors."""
        idx = np.arange(len(self.labels))
        batch, tgt = self.batcher(idx)
        es, fs = [], []
        for m in self.members:
            with torch.enable_grad():
                e = m(batch)
                (g,) = torch.autograd.grad(e.sum(), batch.positions)
            es.append(e.detach())
            fs.append(-g.detach())
        de = (torch.stack(es).mean(0) - tgt.energy) / tgt.n_atoms
        df = torch.stack(fs).mean(0) - tgt.forces
        return {"label_energy_rmse_ev_per_atom": float(de.square().mean().sqrt()),
                "label_force_rmse_ev_per_A": float(df.square().mean().sqrt())}

    def save(self, out_dir: str | Path) -> Path:
        """Write the refined committee (committee.json and member_k/best.pt, in the
        committee's training dtype) to ``out_dir``; load it with ``alflow.mlip.load``."""
        out = Path(out_dir)
        dtype = getattr(torch, self.config.dtype)
        names = []
        for k, m in enumerate(self.members):
            names.append(f"member_{k}")
            (out / names[-1]).mkdir(parents=True, exist_ok=True)
            state = {key: (v.to(dtype) if v.is_floating_point() and key != "e0" else v)
                     for key, v in m.state_dict().items()}
            torch.save(state, out / names[-1] / "best.pt")
        meta = {**self.meta, "members": names, "refined_from": str(self.model_dir)}
        (out / "committee.json").write_text(json.dumps(meta, indent=1, default=str))
        return out


def check_model_dir(model_dir: Path, half_box: float, where: str) -> None:
    """Raise InputError unless ``model_dir`` holds a committee whose cutoff fits in half the
    box (``where`` names the field)."""
    path = model_dir / "committee.json"
    if not path.is_file():
        raise InputError(f"{where}: {model_dir} is not a trained committee (no committee.json)")
    cutoff = json.loads(path.read_text()).get("config", {}).get("cutoff", 5.0)
    if cutoff > half_box:
        raise InputError(f"{where}: the committee's cutoff ({cutoff} Å) exceeds half the box "
                         f"({half_box:.3f} Å): use more atoms")
