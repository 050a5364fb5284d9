"""Trainable periodic potentials for refinement: Lennard-Jones with log-parametrised ε and σ.

A :class:`TrainableLJ` holds ``log ε`` (ε in eV) and ``log σ`` (σ in Å) as torch leaves; the
trainable ones require grad, so energies, forces and everything computed from them
differentiate to the parameters. Energies use :func:`alflow.periodic.lennard_jones_energy`.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from alflow.periodic import PairList, VerletList, lennard_jones_energy

NAMES = ("epsilon_ev", "sigma_a")


class TrainableLJ:
    """4ε[(σ/r)¹² − (σ/r)⁶] for r < ``cutoff`` Å; ``trainable`` names the fitted parameters."""

    def __init__(self, epsilon_ev: float, sigma_a: float, cutoff_a: float,
                 trainable: tuple[str, ...] | list[str] = NAMES, dtype=torch.float64):
        unknown = set(trainable) - set(NAMES)
        if unknown:
            raise ValueError(f"unknown LJ parameters {sorted(unknown)}; have {NAMES}")
        self.cutoff = float(cutoff_a)
        self.log = {n: torch.tensor(math.log(v), dtype=dtype, requires_grad=n in trainable)
                    for n, v in (("epsilon_ev", epsilon_ev), ("sigma_a", sigma_a))}
        self.trainable = [n for n in NAMES if n in trainable]

    def leaves(self) -> list[torch.Tensor]:
        """The trainable log-parameters, in the order of ``self.trainable``."""
        return [self.log[n] for n in self.trainable]

    def values(self) -> dict[str, float]:
        """Current ε (eV) and σ (Å) by name."""
        return {n: float(self.log[n].detach().exp()) for n in NAMES}

    def set_values(self, values: dict[str, float]) -> None:
        """Set parameters by name (ε eV, σ Å), keeping the leaves."""
        with torch.no_grad():
            for n, v in values.items():
                self.log[n].fill_(math.log(v))

    def energy_of_distances(self, r: torch.Tensor, batch: torch.Tensor,
                            n_configs: int) -> torch.Tensor:
        """Energies (n_configs,) eV from pair distances r (P,) Å of configurations ``batch``
        (P,): the same sum as :meth:`energy`, for samples whose distances are stored."""
        inside = r < self.cutoff
        sr6 = (self.log["sigma_a"].exp() / torch.where(inside, r, torch.ones_like(r))) ** 6
        e = torch.where(inside, 4 * self.log["epsilon_ev"].exp() * (sr6 * sr6 - sr6),
                        torch.zeros_like(r))
        return torch.zeros(n_configs, dtype=e.dtype).index_add(0, batch, e)

    def sample_energies(self, ens) -> torch.Tensor:
        """Energies (S,) eV of the samples of an :class:`alflow.refine.reweight.Ensemble`
        from their stored pair distances."""
        return self.energy_of_distances(ens.r, ens.batch, ens.n_samples)

    def energy(self, positions: torch.Tensor, cell: torch.Tensor,
               pairs: PairList | None = None, detached: bool = False) -> torch.Tensor:
        """Energies (B,) eV of positions (B, N, 3) Å in cells (B, 3, 3) Å; ``detached``:
        at the current parameters, without their gradient."""
        logs = {n: (t.detach() if detached else t) for n, t in self.log.items()}
        return lennard_jones_energy(positions, cell, logs["epsilon_ev"].exp(),
                                    logs["sigma_a"].exp(), self.cutoff, pairs)


class FixedPotential:
    """The model (:class:`TrainableLJ` or :class:`alflow.refine.mlip.TrainableMLIP`) at its
    current parameters as an :class:`alflow.potential.Potential` for
    :func:`alflow.sampling.langevin.run_langevin`; every replica in the same cubic ``cell``;
    a Verlet list is kept between calls."""

    def __init__(self, model, numbers: np.ndarray, cell: torch.Tensor, skin: float = 1.0):
        self.model, self.numbers, self.cell = model, np.asarray(numbers), cell
        self.pairs = VerletList(model.cutoff, skin)

    def energy(self, positions: torch.Tensor) -> torch.Tensor:
        cell = self.cell.to(positions.dtype).expand(positions.shape[0], 3, 3)
        return self.model.energy(positions, cell, self.pairs(positions, cell), detached=True)
