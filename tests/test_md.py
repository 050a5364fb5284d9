"""Langevin MD: equipartition on a harmonic oscillator, NVE energy conservation, agreement with
ASE's velocity Verlet, trust-region stopping, outputs readable by ASE."""

from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.calculators.emt import EMT
from ase.io import read

from alflow.potential import AseCalculatorPotential, LennardJones, PotentialOutput
from alflow.sampling.cvs import CoordinationNumber, RadiusOfGyration
from alflow.sampling.langevin import Trajectory, run_langevin


class Harmonic:
    """Isotropic harmonic wells about the origin: E = k/2 sum |x_i|^2 (eV, Å)."""

    def __init__(self, n, k=1.0):
        self.numbers = np.full(n, 18)
        self.k = k

    def energy(self, x):
        return 0.5 * self.k * (x**2).sum((-1, -2))


class HarmonicWithDeviation(Harmonic):
    """Harmonic wells whose (analytic) committee deviation grows with the distance of atom 0
    from the origin: force_dev = alpha |x_0| eV/Å. Counts evaluated configurations."""

    def __init__(self, n, k=1.0, alpha=0.1):
        super().__init__(n, k)
        self.alpha = alpha
        self.evaluated = 0

    def evaluate(self, x):
        self.evaluated += x.shape[0]
        return PotentialOutput(energy=self.energy(x), forces=-self.k * x,
                               force_dev=self.alpha * x[:, 0].norm(dim=-1))


def test_harmonic_equipartition():
    n, r, t = 2, 128, 300.0
    pot = Harmonic(n, k=2.0)
    masses = np.full(n, 10.0)
    # period 2 pi sqrt(m/k) = 22.4 ASE time = 228 fs; dt = 4 fs; friction ~ 1/50 fs
    traj = run_langevin(pot, np.zeros((r, n, 3)), masses, t, dt_fs=4.0, steps=3000,
                        friction_per_fs=0.02, record_every=5, seed=1)
    kt = units.kB * t
    keep = traj.steps >= 500
    for arr in (traj.kinetic, traj.energy):
        per_replica = arr[keep].mean(0)  # independent replicas -> honest error bar
        mean = per_replica.mean()
        err = per_replica.std(ddof=1) / np.sqrt(r)
        exact = 1.5 * n * kt
        assert abs(mean - exact) < 4 * err + 0.002 * exact, (mean, exact, err)
        assert err < 0.02 * exact  # the test has resolving power


def _lj7():
    """The LJ7 pentagonal bipyramid of the examples."""
    return read(Path(__file__).resolve().parents[1] / "alflow" / "examples" / "data"
                / "lj7.extxyz", index=0)


def test_nve_energy_conservation():
    atoms = _lj7()
    pot = LennardJones(atoms.numbers)
    masses = atoms.get_masses()
    traj = run_langevin(pot, atoms.positions[None], masses, 20.0, dt_fs=5.0, steps=4000,
                        friction_per_fs=0.0, record_every=10, seed=3)
    etot = traj.energy[:, 0] + traj.kinetic[:, 0]
    # stated: total energy drift/fluctuation below 1e-4 eV over 20 ps at dt = 5 fs for 7 Ar
    # atoms, while the kinetic energy itself fluctuates by > 1e-3 eV
    assert np.ptp(etot) < 1e-4, np.ptp(etot)
    assert np.ptp(traj.kinetic[:, 0]) > 1e-3


def test_zero_friction_matches_ase_velocity_verlet():
    from ase.md.verlet import VelocityVerlet

    ag = Atoms("Ag6", positions=[[0, 0, 0], [2.9, 0, 0], [1.45, 2.5, 0], [4.35, 2.5, 0],
                                 [-1.45, 2.5, 0], [1.45, 0.9, 2.3]])
    pot = AseCalculatorPotential(EMT, ag)
    rng = np.random.default_rng(0)
    v0 = rng.normal(size=(6, 3)) * 0.01
    traj = run_langevin(pot, ag.positions, ag.get_masses(), 0.0, dt_fs=2.0, steps=20,
                        friction_per_fs=0.0, record_every=20, velocities=v0[None])
    ref = ag.copy()
    ref.calc = EMT()
    ref.set_velocities(v0)
    VelocityVerlet(ref, timestep=2.0 * units.fs).run(20)
    assert np.allclose(traj.positions[-1, 0], ref.positions, atol=1e-9)
    assert np.allclose(traj.final_velocities[0], ref.get_velocities(), atol=1e-9)
    assert pot.calls == 21


def test_ase_calculator_energy_is_differentiable_with_forces_as_gradient():
    """Reverse-KL flow training needs dE/dx through an ASE calculator: the gradient is −F and
    matches central finite differences of EMT energies."""
    ag = Atoms("Ag6", positions=[[0, 0, 0], [2.9, 0, 0], [1.45, 2.5, 0], [4.35, 2.5, 0],
                                 [-1.45, 2.5, 0], [1.45, 0.9, 2.3]])
    pot = AseCalculatorPotential(EMT, ag)
    x = torch.tensor(ag.positions[None].repeat(2, 0) + 0.05 * np.arange(2)[:, None, None],
                     requires_grad=True)
    (2.0 * pot.energy(x)).sum().backward()
    ref = ag.copy()
    ref.calc = EMT()
    ref.positions = x[1].detach().numpy()
    assert np.allclose(x.grad[1].numpy(), -2.0 * ref.get_forces(), atol=1e-10)
    h = 1e-5
    for i, k in [(0, 0), (5, 2)]:
        e = []
        for s in (h, -h):
            y = x.detach().clone()
            y[1, i, k] += s
            e.append(float(pot.energy(y)[1]))
        assert abs((e[0] - e[1]) / (2 * h) - float(x.grad[1, i, k]) / 2.0) < 1e-5


def test_trust_region_stops_one_replica_others_go_on():
    n, r = 3, 4
    pot = HarmonicWithDeviation(n, k=1.0, alpha=0.1)
    x0 = np.zeros((r, n, 3))
    x0[:, 1:, 0] = 1.0
    v0 = np.zeros((r, n, 3))
    v0[2, 0, 0] = 0.4  # amplitude v/omega = 0.4 * sqrt(10) = 1.26 Å -> force_dev 0.126 > 0.1
    traj = run_langevin(pot, x0, np.full(n, 10.0), 1.0, dt_fs=2.0, steps=400,
                        friction_per_fs=0.0, record_every=5, trust_upper=0.1,
                        velocities=v0)
    # replica 2 reaches |x0| = 1 Å (force_dev 0.1) at t = asin(1/1.26)/omega ~ 0.91 * 3.16
    # ASE time = 29 fs ~ step 15; the others stay near the origin (T = 1 K)
    assert traj.stopped_at[2] > 0
    assert 10 <= traj.stopped_at[2] <= 20
    assert list(traj.stopped_at[[0, 1, 3]]) == [-1, -1, -1]
    assert traj.stop_force_dev[2] > 0.1
    valid = traj.valid
    assert valid[:, [0, 1, 3]].all()
    assert valid[:, 2].sum() == np.sum(traj.steps < traj.stopped_at[2])
    assert (traj.force_dev[valid] <= 0.1).all()
    # the stopped replica is frozen and no longer evaluated; the others ran all 400 steps
    after = traj.steps > traj.stopped_at[2]
    assert np.allclose(traj.positions[after, 2], traj.positions[after, 2][0])
    assert traj.steps[-1] == 400
    assert pot.evaluated == 4 * (traj.stopped_at[2] + 1) + 3 * (400 - traj.stopped_at[2])
    kept = traj.to_atoms(replicas=[2])
    assert len(kept) == valid[:, 2].sum() and all(a.info["force_dev"] <= 0.1 for a in kept)


def test_outputs_extxyz_and_hdf5(tmp_path):
    atoms = _lj7()
    pot = LennardJones(atoms.numbers)
    cvs = [CoordinationNumber(r0=4.2, name="cn"), RadiusOfGyration()]
    traj = run_langevin(pot, np.stack([atoms.positions] * 2), atoms.get_masses(), 30.0,
                        dt_fs=5.0, steps=50, record_every=10, cvs=cvs, seed=0)
    n = traj.write_extxyz(tmp_path / "t.extxyz")
    frames = read(tmp_path / "t.extxyz", index=":")
    assert n == len(frames) == 12
    f = frames[7]
    assert f.info["replica"] == 1 and f.info["step"] == 10
    rg = RadiusOfGyration()(torch.tensor(f.positions[None]))
    assert f.info["cv_gyration"] == pytest.approx(float(rg), abs=1e-6)
    assert f.info["potential_energy"] == pytest.approx(
        float(pot.energy(torch.tensor(f.positions[None]))), abs=1e-6)
    traj.write_hdf5(tmp_path / "t.h5")
    back = Trajectory.read_hdf5(tmp_path / "t.h5")
    assert back.cv_names == ["cn", "gyration"]
    assert np.array_equal(back.positions, traj.positions)
    assert back.force_dev is None
