"""The lattice neighbour list (alflow.solids.lattice) against ASE's neighbour list: every pair
within the cutoff, with every periodic image, in strained and rattled cells; the completeness
bound, and a configuration's own list beyond it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.neighborlist import neighbor_list

from alflow.solids.crystals import crystal
from alflow.solids.lattice import lattice_pairs, own_pairs, pair_distances, pair_vectors


def _ase_distances(atoms, cutoff):
    return np.sort(neighbor_list("d", atoms, cutoff))


@pytest.mark.parametrize("structure,n", [("fcc", 4), ("hcp", 4), ("hcp", 32)])
def test_pairs_within_the_cutoff_equal_ase_in_strained_rattled_cells(structure, n):
    ref = crystal(structure, n, 1.0)
    pl = lattice_pairs(ref.positions, ref.cell.array, 2.5, skin=0.7)
    rng = np.random.default_rng(n)
    for strain_scale in (0.0, 0.03):
        strain = np.eye(3) + strain_scale * rng.normal(size=(3, 3))
        atoms = ref.copy()
        atoms.set_cell(ref.cell.array @ strain, scale_atoms=True)
        atoms.rattle(0.08, seed=int(rng.integers(1000)))
        x = torch.tensor(atoms.positions)[None]
        x = x + torch.tensor(atoms.cell.array)[0]  # another image of every atom: same crystal
        r, ok = pair_distances(x, torch.tensor(atoms.cell.array)[None], pl)
        assert bool(ok[0])
        ours = np.sort(r[0][r[0] < 2.5].numpy())
        np.testing.assert_allclose(ours, _ase_distances(atoms, 2.5), atol=1e-10)
        vec = pair_vectors(x, torch.tensor(atoms.cell.array), pl)
        np.testing.assert_allclose(vec.norm(dim=-1).numpy(), r.numpy(), atol=1e-12)


def test_beyond_the_bound_the_list_says_so_and_the_own_list_is_exact():
    ref = crystal("fcc", 32, 1.0)
    pl = lattice_pairs(ref.positions, ref.cell.array, 2.5, skin=0.3)
    atoms = ref.copy()
    atoms.positions[[2, 9]] += [[0.2, 0.0, 0.0], [0.0, -0.2, 0.0]]  # 0.4 > skin
    x, h = torch.tensor(atoms.positions)[None], torch.tensor(atoms.cell.array)[None]
    _, ok = pair_distances(x, h, pl)
    assert not bool(ok[0])
    with pytest.raises(ValueError, match="melted or slipped"):
        pl.check(x)
    _, _, r = own_pairs(x, h, 2.5)
    np.testing.assert_allclose(np.sort(r[0].numpy()), _ase_distances(atoms, 2.5), atol=1e-10)
