"""The committee as an ASE calculator and as a batched alflow Potential."""

from __future__ import annotations

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from alflow.mlip.committee import Committee, committee_stats
from alflow.mlip.graph import DenseBatch
from alflow.mlip.stress import committee_stress
from alflow.potential import PotentialOutput


class CommitteeCalculator(Calculator):
    """ASE calculator of a committee: ``results`` holds energy (eV, committee mean), forces
    (eV/Å), force_dev (eV/Å, max over atoms of the committee force std), energy_std (eV) and
    energies (M,) of the members. Finite clusters use all pairs, periodic cells a
    neighbour list; a cell periodic in all three directions also gets stress (eV/Å³, committee
    mean, ASE's Voigt order and sign) and stresses (M, 6) of the members."""

    implemented_properties = ["energy", "free_energy", "forces", "stress", "force_dev",
                              "energy_std"]

    def __init__(self, committee: Committee, **kwargs):
        super().__init__(**kwargs)
        self.committee = committee

    def calculate(self, atoms: Atoms | None = None, properties=("energy",),
                  system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        a = self.atoms
        c = self.committee
        stress = None
        if a.pbc.all():
            g = c.graph([a.positions], a.numbers, a.cell.array, a.pbc).to(c.device, c.dtype)
            e, f, s = committee_stress(c.members, g)
            f = f[:, None]
            stress = np.array([full_3x3_to_voigt_6_stress(m) for m in
                               s[:, 0].detach().cpu().double().numpy()])
        elif a.pbc.any():
            e, f = c.predict_graph(c.graph([a.positions], a.numbers, a.cell.array, a.pbc))
            f = f[:, None]
        else:
            x = torch.tensor(a.positions[None])
            e, f = c.predict_dense(x, c.species(a.numbers))
        em, fm, fd, es = committee_stats(e, f)
        self.results = {"energy": float(em[0]), "free_energy": float(em[0]),
                        "forces": fm[0].detach().cpu().double().numpy(),
                        "force_dev": float(fd[0]), "energy_std": float(es[0]),
                        "energies": e[:, 0].detach().cpu().numpy()}
        if stress is not None:
            self.results["stress"] = stress.mean(0)
            self.results["stresses"] = stress


class CommitteePotential:
    """Batched committee potential of one system (alflow.potential.Potential protocol).

    ``energy(positions (B, N, 3) Å)`` is the committee-mean energy (B,) eV, differentiable
    with respect to positions; ``evaluate`` also returns mean forces and ``force_dev``;
    :meth:`stats` adds ``energy_std``. Outputs have the input dtype (energies are formed in
    float64 before the cast). Finite clusters only use all pairs; with ``pbc`` a neighbour
    list is built per configuration. Batches are processed in chunks of ``chunk``.
    """

    def __init__(self, committee: Committee, numbers, cell=None, pbc=None, chunk: int = 4096):
        self.committee = committee
        self.numbers = np.asarray(numbers)
        self.species = committee.species(self.numbers)
        self.cell = None if cell is None else np.asarray(cell, dtype=float)
        self.pbc = np.zeros(3, bool) if pbc is None else np.asarray(pbc, dtype=bool)
        self.periodic = bool(self.pbc.any())
        self.chunk = chunk

    def _check(self, positions: torch.Tensor) -> None:
        if positions.dim() != 3 or positions.shape[1:] != (len(self.numbers), 3):
            raise ValueError(f"positions must be (B, {len(self.numbers)}, 3), "
                             f"got {tuple(positions.shape)}")

    def energy(self, positions: torch.Tensor) -> torch.Tensor:
        """Committee-mean energy (B,) eV; gradients flow to ``positions``."""
        self._check(positions)
        c = self.committee
        x = positions.to(c.device, c.dtype)
        if self.periodic:
            out = []
            for k in range(len(x)):
                g = c.graph([x[k].detach().cpu().double().numpy()], self.numbers, self.cell,
                            self.pbc)
                g.positions = x[k]
                out.append(torch.stack([m.total_energy(g) for m in c.members]).mean(0))
            e = torch.cat(out)
        elif (stacked := c.stacked()) is not None:
            e = stacked.total_energy(x, self.species.to(c.device)).mean(0)
        else:
            b = DenseBatch(x, self.species)
            e = torch.stack([m.total_energy(b) for m in c.members]).mean(0)
        return e.to(positions.device, positions.dtype)

    def stats(self, positions: torch.Tensor) -> dict[str, torch.Tensor]:
        """energy, forces (mean), force_dev, energy_std, energies (M, B) of a batch."""
        self._check(positions)
        c = self.committee
        parts: list[tuple] = []
        for s in range(0, len(positions), self.chunk):
            x = positions[s:s + self.chunk]
            if self.periodic:
                es, fs = [], []
                for k in range(len(x)):
                    e, f = c.predict_graph(c.graph([x[k].detach().cpu().double().numpy()],
                                                   self.numbers, self.cell, self.pbc))
                    es.append(e)
                    fs.append(f)
                e, f = torch.cat(es, 1), torch.stack(fs, 1)
            else:
                e, f = c.predict_dense(x, self.species)
            parts.append((e, *committee_stats(e, f)))
        dt, dev = positions.dtype, positions.device
        cat = parts[0] if len(parts) == 1 else [
            torch.cat([p[i] for p in parts], dim=1 if i == 0 else 0) for i in range(5)]
        names = ["energies", "energy", "forces", "force_dev", "energy_std"]
        return {n: t.detach().to(dev, dt) for n, t in zip(names, cat, strict=True)}

    def evaluate(self, positions: torch.Tensor) -> PotentialOutput:
        """Mean energy (B,) eV, mean forces (B, N, 3) eV/Å and force_dev (B,) eV/Å."""
        s = self.stats(positions)
        return PotentialOutput(energy=s["energy"], forces=s["forces"],
                               force_dev=s["force_dev"])


__all__ = ["CommitteeCalculator", "CommitteePotential"]
