"""Multi-fidelity committees: a committee pretrained on a cheap oracle's labels, carried to an
expensive oracle's labels by transfer learning or by Δ-learning.

Transfer: :func:`finetune_committee` fine-tunes every pretrained member on the expensive
labels. Two oracles' absolute energies differ by a large per-element constant (xTB and PBE:
hundreds of eV per atom), which the network must not learn: the members' reference energies
e0 are first shifted by the least-squares fit of the per-element offset of the expensive
labels from the pretrained committee (:func:`shift_reference`), then the weights are trained.

Δ-learning: a committee of the difference (expensive − cheap, energies eV and forces eV/Å, on
configurations both oracles labelled; :func:`difference_atoms`) is added member by member to
the cheap committee (:class:`SumModel`); :func:`write_delta_committee` writes the pair as one
committee directory that :func:`alflow.mlip.load` reads like any other.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from torch import nn

from alflow.errors import InputError
from alflow.mlip.config import MLIPConfig

DELTA_FORMAT = "alflow-mlip-delta"


def _element_counts(atoms_list: Sequence[Atoms], elements: list[int]) -> np.ndarray:
    return np.array([[int(np.sum(a.numbers == z)) for z in elements] for a in atoms_list],
                    dtype=float)


def shift_reference(pretrained: str | Path, atoms_list: Sequence[Atoms], out_dir: str | Path
                    ) -> Path:
    """A copy of the committee ``pretrained`` in ``out_dir`` whose per-element reference
    energies e0 (eV) are moved by the least-squares offset of the labelled ``atoms_list``
    (energies of another oracle) from the committee's mean prediction; weights unchanged.
    The copy warm-starts :func:`alflow.mlip.train_committee` (``init_from``)."""
    from alflow.mlip.committee import Committee
    from alflow.mlip.data import from_atoms

    src = Path(pretrained)
    committee = Committee.load(src)
    if committee.meta.get("format") == DELTA_FORMAT:
        raise InputError(f"{src}: a Δ-committee cannot be fine-tuned; pretrain with "
                         "mode transfer")
    data, _ = from_atoms(list(atoms_list))
    if len(data) == 0:
        raise InputError("no labelled configurations to shift the reference energies to")
    pred = np.array(committee.predict_data(data)["energy"])
    elements = [int(z) for z in committee.meta["stats"]["atomic_numbers"]]
    counts = _element_counts([Atoms(numbers=z) for z in data.numbers], elements)
    shift, *_ = np.linalg.lstsq(counts, data.energy - pred, rcond=None)
    out = Path(out_dir)
    meta = json.loads((src / "committee.json").read_text())
    meta["stats"]["e0"] = [float(a + b) for a, b in zip(meta["stats"]["e0"], shift,
                                                        strict=True)]
    meta["e0_shift"] = [float(v) for v in shift]
    for name in meta["members"]:
        state = torch.load(src / name / "best.pt", map_location="cpu", weights_only=True)
        state["e0"] = torch.tensor(meta["stats"]["e0"], dtype=torch.float64)
        (out / name).mkdir(parents=True, exist_ok=True)
        torch.save(state, out / name / "best.pt")
    (out / "committee.json").write_text(json.dumps(meta, indent=1))
    return out


def finetune_committee(atoms_list: Sequence[Atoms], out_dir: str | Path,
                       config: MLIPConfig, pretrained: str | Path,
                       members: list[int] | None = None) -> Path:
    """Transfer learning: the committee ``pretrained`` (cheap oracle) fine-tuned on the
    labelled ``atoms_list`` (expensive oracle) into ``out_dir``, from reference energies
    shifted to the new oracle (:func:`shift_reference`, kept in ``out_dir/init``). The
    architecture must be the pretrained one (else training would start from scratch)."""
    from alflow.mlip.train import train_committee

    out = Path(out_dir)
    pre = json.loads((Path(pretrained) / "committee.json").read_text())
    pcfg = MLIPConfig.model_validate(pre["config"])
    if (pcfg.backend, pcfg.cutoff, getattr(pcfg, pcfg.backend)) != \
            (config.backend, config.cutoff, getattr(config, config.backend)):
        raise InputError(f"{pretrained}: the pretrained committee has another architecture "
                         "than the fine-tuning configuration")
    init = out / "init"
    if not (init / "committee.json").exists():
        shift_reference(pretrained, atoms_list, init)
    return train_committee(list(atoms_list), out, config, init_from=init, members=members)


def difference_atoms(expensive: Sequence[Atoms], cheap: Sequence[Atoms]) -> list[Atoms]:
    """Configurations labelled by both oracles (pairs in order) -> Atoms labelled with the
    difference expensive − cheap (energy eV, forces eV/Å)."""
    out = []
    for hi, lo in zip(expensive, cheap, strict=True):
        if not np.allclose(hi.positions, lo.positions, atol=1e-8, rtol=0):
            raise ValueError("difference_atoms: the two labels are of different configurations")
        a = Atoms(numbers=hi.numbers, positions=hi.positions, cell=hi.cell, pbc=hi.pbc)
        a.calc = SinglePointCalculator(
            a, energy=hi.get_potential_energy() - lo.get_potential_energy(),
            forces=hi.get_forces() - lo.get_forces())
        out.append(a)
    return out


class SumModel(nn.Module):
    """One member of a Δ-committee: a cheap-oracle member plus a difference member, with the
    interface of :class:`alflow.mlip.model.EnergyModel` (energies eV, float64 references)."""

    def __init__(self, base: nn.Module, delta: nn.Module):
        super().__init__()
        if base.atomic_numbers.tolist() != delta.atomic_numbers.tolist():
            raise InputError("Δ-committee: the cheap and difference committees know other "
                             f"elements ({base.atomic_numbers.tolist()} vs "
                             f"{delta.atomic_numbers.tolist()})")
        self.base = base
        self.delta = delta

    @property
    def atomic_numbers(self) -> torch.Tensor:
        return self.base.atomic_numbers

    @property
    def scale(self) -> torch.Tensor:
        return self.base.scale

    def species_index(self, numbers) -> torch.Tensor:
        return self.base.species_index(numbers)

    def forward(self, batch) -> torch.Tensor:
        """Interaction energy (B,) eV of both parts."""
        return self.base(batch) + self.delta(batch)

    def reference_energy(self, batch) -> torch.Tensor:
        return self.base.reference_energy(batch) + self.delta.reference_energy(batch)

    def total_energy(self, batch) -> torch.Tensor:
        return self.forward(batch).double() + self.reference_energy(batch)


def write_delta_committee(out_dir: str | Path, base: str | Path, delta: str | Path,
                          extra: dict | None = None) -> Path:
    """``out_dir/committee.json`` naming a cheap committee ``base`` and a difference committee
    ``delta`` (paths relative to ``out_dir`` when inside it) of the same size and cutoff."""
    out = Path(out_dir)
    metas = []
    for d in (base, delta):
        path = Path(d) / "committee.json"
        if not path.exists():
            raise InputError(f"{d}: not a trained committee (no committee.json)")
        metas.append(json.loads(path.read_text()))
    (bm, dm) = metas
    if len(bm["members"]) != len(dm["members"]):
        raise InputError("Δ-committee: the cheap and difference committees differ in size")
    if bm["config"]["cutoff"] != dm["config"]["cutoff"]:
        raise InputError("Δ-committee: the cheap and difference committees differ in cutoff")

    def rel(p: str | Path) -> str:
        p = Path(p).resolve()
        try:
            return str(p.relative_to(out.resolve()))
        except ValueError:
            return str(p)

    meta = {"format": DELTA_FORMAT, "version": 1, "base": rel(base), "delta": rel(delta),
            "config": bm["config"], "stats": bm["stats"], "val": dm.get("val", {}),
            **(extra or {})}
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".committee.json.tmp"
    tmp.write_text(json.dumps(meta, indent=1))
    tmp.replace(out / "committee.json")
    return out


def load_delta(model_dir: str | Path, meta: dict, device: str = "cpu"):
    """The Δ-committee described by ``meta`` (its committee.json) in ``model_dir``: members
    ``base_k + delta_k``."""
    from alflow.mlip.committee import Committee

    root = Path(model_dir)
    parts = [Committee.load(root / meta[k], device) for k in ("base", "delta")]
    members = [SumModel(b, d) for b, d in zip(parts[0].members, parts[1].members,
                                               strict=True)]
    return Committee(members, parts[0].config, meta)


__all__ = ["DELTA_FORMAT", "SumModel", "difference_atoms", "finetune_committee", "load_delta",
           "shift_reference", "write_delta_committee"]
