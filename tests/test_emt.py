"""The torch EMT (alflow.emt) equals ASE's EMT calculator; its forces are −dE/dx."""

from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.emt import EMT as AseEMT
from ase.cluster import Icosahedron
from ase.io import read

from alflow.emt import EMT
from alflow.errors import InputError
from alflow.exploration import load_potential_spec
from alflow.potential import evaluate

DATA = Path(__file__).resolve().parents[1] / "alflow" / "examples" / "data"


def _ase(atoms: Atoms) -> tuple[float, np.ndarray]:
    a = atoms.copy()
    a.calc = AseEMT()
    return a.get_potential_energy(), a.get_forces()


def _batch(frames: list[Atoms]) -> tuple[np.ndarray, np.ndarray]:
    pot = EMT(frames[0].numbers)
    out = evaluate(pot, torch.tensor(np.stack([a.positions for a in frames])))
    return out.energy.numpy(), out.forces.numpy()


@pytest.mark.parametrize("data", ["ag6.extxyz", "ag6_emt.extxyz"])
def test_matches_ase_on_displaced_ag6(data):
    rng = np.random.default_rng(0)
    frames = []
    for a in read(DATA / data, ":"):
        for sigma in (0.0, 0.1, 0.3):
            b = a.copy()
            b.positions += rng.normal(0.0, sigma, b.positions.shape)
            frames.append(b)
    e, f = _batch(frames)
    for a, ei, fi in zip(frames, e, f, strict=True):
        e_ref, f_ref = _ase(a)
        assert ei == pytest.approx(e_ref, abs=1e-10)
        np.testing.assert_allclose(fi, f_ref, atol=1e-10)


def test_matches_ase_mixed_elements_and_far_pairs():
    """A Cu/Au icosahedron (two parameter sets, chi ≠ 1) and a dimer beyond the cutoff."""
    rng = np.random.default_rng(1)
    ico = Icosahedron("Cu", 2)
    ico.numbers[::3] = 79
    ico.positions += rng.normal(0.0, 0.1, ico.positions.shape)
    e, f = _batch([ico])
    e_ref, f_ref = _ase(ico)
    assert e[0] == pytest.approx(e_ref, abs=1e-10)
    np.testing.assert_allclose(f[0], f_ref, atol=1e-10)
    far = Atoms("Ag2", positions=[[0, 0, 0], [0, 0, 7.0]])  # beyond rc + 0.5 Å: isolated atoms
    e, f = _batch([far])
    assert e[0] == pytest.approx(_ase(far)[0], abs=1e-12)
    assert e[0] == pytest.approx(2 * 2.96)  # each isolated atom: −E0 (ASAP convention)
    assert np.all(np.isfinite(f)) and np.abs(f).max() == 0.0


def test_forces_finite_differences_and_minima():
    frames = read(DATA / "ag6_emt.extxyz", ":")
    x = frames[1].positions + np.random.default_rng(2).normal(0.0, 0.05, (6, 3))
    pot = EMT(frames[1].numbers)
    f = evaluate(pot, torch.tensor(x[None])).forces.numpy()[0]
    h = 1e-5
    for i, k in [(0, 0), (3, 1), (5, 2)]:
        xp, xm = x.copy(), x.copy()
        xp[i, k] += h
        xm[i, k] -= h
        e = pot.energy(torch.tensor(np.stack([xp, xm]))).numpy()
        assert -(e[0] - e[1]) / (2 * h) == pytest.approx(f[i, k], abs=1e-7)
    # the example structures are EMT minima with the stored energies
    e, f = _batch(frames)
    np.testing.assert_allclose(e, [a.info["energy_ev"] for a in frames], atol=1e-8)
    assert np.abs(f).max() < 1e-4


def test_spec_and_unsupported_element():
    pot = load_potential_spec("torch:emt", [47] * 6)
    assert isinstance(pot, EMT)
    with pytest.raises(InputError, match="EMT has no parameters for Ar"):
        EMT([18, 47])
