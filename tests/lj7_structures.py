"""The two lowest LJ7 minima (σ = 3.405 Å), for the flow/MCMC/estimate tests: read from the
example structures alflow ships."""

from pathlib import Path

import numpy as np
from ase.io import read

_FRAMES = {a.info["state"]: a for a in read(
    Path(__file__).resolve().parents[1] / "alflow/examples/data/lj7.extxyz", ":")}
PBP = _FRAMES["bipyramid"].positions.copy()
COH = _FRAMES["capped_octahedron"].positions.copy()
NUMBERS = np.full(7, 18)


def perturbed(n: int, seed: int = 0, sigma: float = 0.05):
    """``n`` distinct LJ7 bipyramids, each position displaced by N(0, ``sigma``²) Å."""
    from ase import Atoms

    rng = np.random.default_rng(seed)
    return [Atoms(numbers=NUMBERS, positions=PBP + rng.normal(0, sigma, PBP.shape))
            for _ in range(n)]
