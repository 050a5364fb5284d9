"""Quench-basin membership: the certificates that stop a quench early never change its answer."""

from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch

from alflow.emt import EMT
from alflow.potential import LennardJones, evaluate
from alflow.sampling.langevin import run_langevin
from alflow.states import BasinStates, Fire, HarmonicBasins, _quench, kabsch_rotations, quench

DATA = Path(__file__).resolve().parents[1] / "alflow" / "examples" / "data"


def _system(name: str):
    frames = {a.info["state"]: a for a in ase.io.read(DATA / f"{name}.extxyz", ":")}
    if name == "lj7":
        refs = {"pbp": frames["bipyramid"], "coh": frames["capped_octahedron"]}
        return LennardJones(np.full(7, 18)), refs, (18.0, 100.0), 10.0
    refs = {s: frames[s] for s in ("octahedron", "bicapped_tetrahedron")}
    return EMT(refs["octahedron"].numbers), refs, (300.0, 1000.0), 5.0


@pytest.mark.parametrize("name", ["lj7", "ag6_emt"])
def test_early_stopped_quench_assigns_as_the_full_quench(name):
    """Thermal, hot and displaced frames of both states, including frames that
    left their basin: the assignment with certificates equals the full quench's (FIRE to
    fmax 5e-4 eV/Å, then the pair-distance match), and the certificates stop most quenches
    early (the full quench takes several times more force evaluations)."""
    pot, refs, temps, dt = _system(name)
    states = BasinStates(pot, {s: a.positions - a.positions.mean(0) for s, a in refs.items()})
    masses = next(iter(refs.values())).get_masses()
    rng = np.random.default_rng(0)
    xs = []
    for k, m in enumerate(states.minima):
        for t in temps:
            tr = run_langevin(pot, np.repeat(m[None], 8, 0), masses, t, dt, 150, 0.01,
                              record_every=10, seed=k)
            xs.append(np.asarray(tr.positions[3:]).reshape(-1, *m.shape))
        xs.append(m + 0.4 * rng.standard_normal((60, *m.shape)))
    x = np.concatenate(xs)
    minima, energies, ok = quench(pot, x, fmax=states.fmax, max_steps=states.max_steps)
    full = np.where(ok, states.match(minima, energies), -1)
    origin = np.repeat(np.arange(2), len(x) // 2)
    assert 0 < (full != origin).sum() < len(x) / 2  # some frames left their basin
    got = states.assign(x)
    np.testing.assert_array_equal(got, full)
    _, _, _, captured = _quench(pot, x, states.fmax, states.max_steps,
                                capture=states.certain_state)
    assert (captured >= 0).mean() > 0.9


def test_newton_miss_is_zero_for_harmonic_forces_and_rotation_invariant():
    pot = LennardJones(np.full(7, 18))
    frames = {a.info["state"]: a for a in ase.io.read(DATA / "lj7.extxyz", ":")}
    states = BasinStates(pot, {"pbp": frames["bipyramid"].positions})
    m = states.minima[0] - states.minima[0].mean(0)
    basins = HarmonicBasins(pot, m[None])
    # a small displacement along internal modes: the forces are the harmonic ones
    d = 1e-3 * np.random.default_rng(1).standard_normal((4, 7, 3))
    x = torch.as_tensor(m + d)
    f = evaluate(pot, x).forces
    assert float(basins.newton_miss(x, f).max()) < 1e-4
    # a proper rotation of the configuration and its forces changes nothing
    q, _ = np.linalg.qr(np.random.default_rng(2).standard_normal((3, 3)))
    q *= np.sign(np.linalg.det(q))
    xr, fr = x @ torch.as_tensor(q), f @ torch.as_tensor(q)
    torch.testing.assert_close(basins.newton_miss(xr, fr), basins.newton_miss(x, f))
    # far from the minimum (a displaced atom) the miss is large
    far = torch.as_tensor(m.copy())[None]
    far[0, 0] += 1.0
    assert float(basins.newton_miss(far, evaluate(pot, far).forces)) > 0.05
    r = kabsch_rotations(xr - xr.mean(-2, keepdim=True), torch.as_tensor(m))
    assert torch.allclose(torch.linalg.det(r), torch.ones(4, dtype=r.dtype))


def test_quench_check_answers_as_assign_whenever_configurations_join():
    """Configurations queued at different times (half with their forces, whose first FIRE
    step is then free), stepped a few times along with another batch's force calls and then
    drained, get the answers of ``assign`` (each quench's path is its own)."""
    pot, refs, temps, dt = _system("ag6_emt")
    states = BasinStates(pot, {s: a.positions - a.positions.mean(0) for s, a in refs.items()})
    m = states.minima[1]
    tr = run_langevin(pot, np.repeat(m[None], 8, 0), refs["octahedron"].get_masses(),
                      temps[1], dt, 150, 0.01, record_every=10, seed=3)
    x = torch.as_tensor(np.asarray(tr.positions[3:]).reshape(-1, *m.shape))
    expect = states.assign(x) == 1
    assert 0 < expect.sum() < len(x)  # hot frames: some left the basin
    check = states.checker("bicapped_tetrahedron")
    half = len(x) // 2
    out = evaluate(pot, x[:half])
    first = check.submit(x[:half], out.energy, out.forces)
    for _ in range(7):  # riding along: the caller evaluates its batch and the pending ones
        batch = torch.cat([x[half:], check.fire.positions()])
        out = evaluate(pot, batch)
        check.fire.advance(out.energy[len(x) - half:], out.forces[len(x) - half:])
    second = check.submit(x[half:])
    assert (check.status(torch.cat([first, second])) == 0).any()
    check.drain()
    got = check.status(torch.cat([first, second]))
    np.testing.assert_array_equal(got.numpy(), np.where(expect, 1, -1))


def test_fire_path_of_a_configuration_does_not_depend_on_its_batch():
    """FIRE on views of its queue: configurations quenched in one batch, joining it at
    different times (some with known forces) or one by one reach the same minima to the last
    bit, in the same number of steps (a row stepped with another's state would not)."""
    pot = LennardJones(np.full(7, 18))
    frames = {a.info["state"]: a for a in ase.io.read(DATA / "lj7.extxyz", ":")}
    m = frames["capped_octahedron"].positions
    x = torch.as_tensor(m + 0.15 * np.random.default_rng(4).standard_normal((9, 7, 3)))
    alone = [quench(pot, x[i:i + 1])[0][0] for i in range(len(x))]
    fire = Fire()
    ids = [fire.submit(x[:3])]
    for k in range(2):
        out = evaluate(pot, fire.positions())
        fire.advance(out.energy, out.forces)
        extra = x[3 + 3 * k:6 + 3 * k]
        known = evaluate(pot, extra) if k else None
        ids.append(fire.submit(extra, *((known.energy, known.forces) if k else ())))
    fire.drain(pot)
    minima, _, ok, _ = fire.results(torch.cat(ids))
    assert ok.all()
    for i in range(len(x)):
        np.testing.assert_array_equal(minima[i], alone[i])
    assert fire.force_evals > 9 * 20
