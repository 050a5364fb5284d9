"""Built-in/MACE models: forces vs finite differences, invariances, periodic cells; committee
calculator/potential; training accuracy, uncertainty, NaN rollback, bad config."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.cluster import Octahedron

from alflow.config import validate_model
from alflow.distributed import DistInfo
from alflow.errors import ConfigError, InputError
from alflow.mlip import MLIPConfig, load, load_potential, train_committee
from alflow.mlip.data import fit_statistics, from_atoms
from alflow.mlip.graph import DenseBatch, dense_to_graph, make_graph
from alflow.mlip.model import build_model
from alflow.mlip.train import TrainingDiverged, train_member

STATS = {"atomic_numbers": [29, 47], "e0": [-1.0, -2.0], "scale": 0.7, "shift": 0.1,
         "avg_num_neighbors": 4.0}


def _model(backend="builtin", seed=0):
    torch.manual_seed(seed)
    cfg = MLIPConfig(backend=backend, dtype="float64", cutoff=4.5)
    model = build_model(cfg, STATS, torch.Generator().manual_seed(seed))
    with torch.no_grad():  # larger random weights than the init: a rugged test surface
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model


def _cluster(n=6, seed=0):
    rng = np.random.default_rng(seed)
    return Octahedron("Ag", 2).positions[:n] + rng.normal(0, 0.2, (n, 3))


def _energy(model, x, species):
    return model.total_energy(DenseBatch(x, species))


def emt_frames(n, sigma=0.15, seed=0, base=None):
    """Ag6 octahedron frames randomly displaced by ``sigma`` Å, labelled with EMT."""
    rng = np.random.default_rng(seed)
    base = Octahedron("Ag", 2) if base is None else base
    out = []
    for _ in range(n):
        a = base.copy()
        a.positions += rng.normal(0, sigma, a.positions.shape)
        a.calc = EMT()
        e, f = a.get_potential_energy(), a.get_forces()
        a.calc = SinglePointCalculator(a, energy=e, forces=f)
        out.append(a)
    return out


@pytest.mark.parametrize("backend", ["builtin", "mace"])
def test_forces_are_minus_finite_difference_gradient(backend):
    model = _model(backend)
    species = torch.tensor([1, 1, 0, 1, 1, 0])
    x = torch.tensor(_cluster()[None], requires_grad=True)
    (g,) = torch.autograd.grad(_energy(model, x, species).sum(), x)
    h = 1e-5
    coords = [(i, c) for i in range(6) for c in range(3)]
    if backend == "mace":  # slower; a sample of coordinates
        coords = coords[::4]
    xs = []
    for i, c in coords:
        for sign in (1, -1):
            xd = x.detach().clone()
            xd[0, i, c] += sign * h
            xs.append(xd[0])
    with torch.no_grad():
        e = _energy(model, torch.stack(xs), species).reshape(-1, 2)
    fd = (e[:, 0] - e[:, 1]) / (2 * h)
    ad = torch.stack([g[0, i, c] for i, c in coords])
    assert ad.abs().max() > 1e-3  # a non-trivial surface
    torch.testing.assert_close(ad, fd, atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("backend", ["builtin", "mace"])
def test_energy_invariant_under_rotation_translation_permutation(backend):
    model = _model(backend, seed=1)
    species = torch.tensor([1, 1, 0, 1, 1, 0])
    x = torch.tensor(_cluster(seed=2))
    q, _ = np.linalg.qr(np.random.default_rng(3).normal(size=(3, 3)))
    rot = torch.tensor(q)
    perm = torch.tensor([4, 0, 5, 1, 3, 2])  # Ag -> Ag, Cu -> Cu
    assert torch.equal(species[perm], torch.tensor([1, 1, 0, 1, 1, 0]))
    batch = torch.stack([x, x @ rot.T + torch.tensor([3.0, -1.0, 7.5]), x[perm]])
    e = _energy(model, batch, species)
    assert abs(float(e[0] - e[1])) < 1e-8 and abs(float(e[0] - e[2])) < 1e-8
    swapped = x.clone()
    swapped[[0, 2]] = x[[2, 0]]  # exchanging Ag and Cu positions changes the energy
    assert abs(float(_energy(model, swapped[None], species)[0] - e[0])) > 1e-6


def test_dense_and_graph_layouts_agree():
    model = _model()
    x = torch.tensor(np.stack([_cluster(seed=s) for s in range(3)]))
    species = torch.tensor([1, 1, 0, 1, 1, 0])
    dense = DenseBatch(x, species)
    e1 = model.total_energy(dense)
    e2 = model.total_energy(dense_to_graph(dense))
    # a neighbour-list graph (cutoff 4.5 Å) gives the same energy: pairs beyond rc add zero
    g = make_graph(list(x.numpy()), [species.numpy()] * 3, [None] * 3, [None] * 3, 4.5)
    e3 = model.total_energy(g)
    torch.testing.assert_close(e1, e2, atol=1e-10, rtol=0)
    torch.testing.assert_close(e1, e3, atol=1e-10, rtol=0)


def test_periodic_cell_forces_and_lattice_translation():
    model = _model(seed=4)
    atoms = bulk("Ag", "fcc", a=4.09, cubic=True)  # 4 atoms, a < cutoff: many images
    atoms.positions += np.random.default_rng(5).normal(0, 0.1, atoms.positions.shape)
    sp = np.ones(4, dtype=int)

    def graph(pos):
        return make_graph([pos], [sp], [atoms.cell.array], [atoms.pbc], 4.5)

    g = graph(atoms.positions)
    g.positions.requires_grad_(True)
    (grad,) = torch.autograd.grad(model.total_energy(g).sum(), g.positions)
    h = 1e-5
    for i, c in [(0, 0), (2, 1), (3, 2)]:
        p, m = atoms.positions.copy(), atoms.positions.copy()
        p[i, c] += h
        m[i, c] -= h
        fd = (model.total_energy(graph(p)) - model.total_energy(graph(m))) / (2 * h)
        assert abs(float(fd) - float(grad[i, c])) < 1e-8 * max(1.0, abs(float(grad[i, c])))
    # moving one atom by a lattice vector leaves the crystal, hence the energy, unchanged
    moved = atoms.positions.copy()
    moved[1] += atoms.cell.array[0] - atoms.cell.array[2]
    assert abs(float(model.total_energy(graph(moved)) - model.total_energy(g))) < 1e-9
    # a larger cell (supercell) has proportionally larger energy
    sc = atoms.repeat((2, 1, 1))
    e_sc = model.total_energy(make_graph([sc.positions], [np.ones(8, int)], [sc.cell.array],
                                         [sc.pbc], 4.5))
    assert abs(float(e_sc) - 2 * float(model.total_energy(g))) < 1e-8


def test_bad_config_fields_give_clear_errors():
    with pytest.raises(ConfigError, match="comittee_size: unknown field"):
        validate_model(MLIPConfig, {"comittee_size": 3}, "train.yaml")
    with pytest.raises(ConfigError, match="backend"):
        validate_model(MLIPConfig, {"backend": "nequip"}, "train.yaml")
    with pytest.raises(ConfigError, match="builtin.features"):
        validate_model(MLIPConfig, {"builtin": {"features": 0}}, "train.yaml")


def test_bad_labels_are_dropped_and_unknown_elements_rejected(tmp_path):
    frames = emt_frames(3)
    f = frames[1].calc.results["forces"].copy()
    f[0, 0] = np.nan
    frames[1].calc = SinglePointCalculator(frames[1], energy=1.0, forces=f)
    frames[2].calc = None
    data, dropped = from_atoms(frames)
    assert len(data) == 1 and [d[0] for d in dropped] == [1, 2]
    with pytest.raises(InputError, match="at least 2"):
        train_committee(frames, tmp_path / "m")


# --------------------------------------------------------------- trained committee (shared)

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("mlip") / "model"
    frames = emt_frames(140, seed=1)
    cfg = MLIPConfig(committee_size=2, epochs=45, batch_size=16, lr=1e-2, patience=30,
                     valid_fraction=0.15)
    train_committee(frames[:110], out, cfg)
    return out, frames[110:]


def test_training_reaches_stated_force_error(trained):
    """EMT Ag6 (0.15 Å displacements, force MAE ~0.4 eV/Å): held-out force MAE < 0.08 eV/Å."""
    out, test = trained
    calc = load(out)
    err, ref = [], []
    for a in test:
        ref.append(a.get_forces())
        b = a.copy()
        b.calc = calc
        err.append(b.get_forces() - ref[-1])
    mae = float(np.abs(np.array(err)).mean())
    assert mae < 0.08, mae
    assert mae < 0.2 * float(np.abs(np.array(ref)).mean())


def test_potential_matches_calculator_and_autograd(trained):
    out, test = trained
    calc = load(out)
    a = test[0].copy()
    a.calc = calc
    e, f = a.get_potential_energy(), a.get_forces()
    pot = load_potential(out, a.numbers)
    x = torch.tensor(np.array([t.positions for t in test[:5]]), requires_grad=True)
    o = pot.evaluate(x)
    assert abs(float(o.energy[0]) - e) < 1e-5
    np.testing.assert_allclose(o.forces[0].numpy(), f, atol=1e-5)
    assert abs(float(o.force_dev[0]) - calc.results["force_dev"]) < 1e-6
    assert calc.results["energy_std"] > 0 and len(calc.results["energies"]) == 2
    (g,) = torch.autograd.grad(pot.energy(x).sum(), x)
    torch.testing.assert_close(-g, o.forces, atol=1e-4, rtol=1e-4)


def test_committee_uncertainty_grows_away_from_training_data(trained):
    out, test = trained
    pot = load_potential(out, test[0].numbers)
    near = torch.tensor(np.array([a.positions for a in test]))
    center = near.mean(1, keepdim=True)
    far = center + 0.8 * (near - center)  # compressed clusters, never seen in training
    fd_near = pot.evaluate(near).force_dev
    fd_far = pot.evaluate(far).force_dev
    assert float(fd_far.median()) > 2 * float(fd_near.median())


# --------------------------------------------------------------------- rollback on NaN

def _member_args(tmp_path, frames, **cfg):
    data, _ = from_atoms(frames)
    config = MLIPConfig(dtype="float64", batch_size=8, **cfg)
    from alflow.mlip.data import fit_statistics

    stats = fit_statistics(data, config.cutoff)
    return dict(data=data, train_idx=np.arange(len(data) - 4), val_idx=np.arange(len(data) - 4,
                len(data)), cfg=config, stats=stats, member_dir=tmp_path / "m", seed=3,
                data_key="k")


@pytest.mark.parametrize("where", ["labels", "loss"])
def test_nan_triggers_rollback_with_lower_lr(tmp_path, where):
    frames = emt_frames(20, seed=2)

    def fault(step, tgt):
        if step == 4:
            if where == "labels":
                tgt.forces[0, 0, 0] = float("nan")
                return None
            return float("nan")
        return None

    res = train_member(DistInfo(), **_member_args(tmp_path, frames, epochs=3), fault=fault)
    rb = [e for e in res["events"] if "rollback" in e]
    assert res["rollbacks"] == 1 and len(rb) == 1
    assert "NaN" in rb[0]["reason"] and math.isclose(rb[0]["new_lr"], 1e-2 * 0.5)
    state = torch.load(tmp_path / "m" / "best.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    assert res["epochs"] == 3 and math.isfinite(res["val"]["loss"])


def test_persistent_nan_stops_after_max_rollbacks_without_nan_model(tmp_path):
    frames = emt_frames(20, seed=2)
    args = _member_args(tmp_path, frames, epochs=3, max_rollbacks=2)
    with pytest.raises(TrainingDiverged, match="2 rollbacks"):
        train_member(DistInfo(), **args, fault=lambda step, tgt: float("nan") if step >= 3
                     else None)
    best = tmp_path / "m" / "best.pt"
    if best.exists():  # only finite models are ever written
        state = torch.load(best, weights_only=True)
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_warm_start_from_previous_committee(trained, tmp_path):
    out, test = trained
    cfg = MLIPConfig(committee_size=2, epochs=1, lr=1e-9, valid_fraction=0.2)
    new = train_committee(test, tmp_path / "warm", cfg, init_from=out)
    for k in range(2):
        a = torch.load(out / f"member_{k}" / "best.pt", weights_only=True)
        b = torch.load(new / f"member_{k}" / "best.pt", weights_only=True)
        assert max(float((a[n] - b[n]).abs().max()) for n in a
                   if a[n].is_floating_point()) < 1e-5
    # another architecture cannot be warm-started: trained from scratch instead
    other = MLIPConfig(committee_size=1, epochs=1, builtin={"features": 8}, valid_fraction=0.2)
    path = train_committee(test, tmp_path / "cold", other, init_from=out)
    assert torch.load(path / "member_0" / "best.pt", weights_only=True)[
        "core.embed.weight"].shape[1] == 8


def test_training_and_calculator_on_periodic_cells(tmp_path):
    rng = np.random.default_rng(8)
    frames = []
    for _ in range(16):
        a = bulk("Ag", "fcc", a=4.09, cubic=True)
        a.positions += rng.normal(0, 0.08, a.positions.shape)
        a.calc = EMT()
        a.calc = SinglePointCalculator(a, energy=a.get_potential_energy(),
                                       forces=a.get_forces())
        frames.append(a)
    cfg = MLIPConfig(committee_size=1, epochs=4, batch_size=4, dtype="float64", cutoff=4.5)
    out = train_committee(frames, tmp_path / "pbc", cfg)
    member = __import__("json").loads((out / "member_0" / "member.json").read_text())
    losses = [h["loss"] for h in member["history"]]
    assert losses[-1] < losses[0]  # the graph (neighbour-list) path learns
    atoms = frames[0].copy()
    atoms.calc = load(out)
    f = atoms.get_forces()
    h = 1e-5
    for i, c in [(0, 0), (3, 2)]:
        p, m = atoms.copy(), atoms.copy()
        p.positions[i, c] += h
        m.positions[i, c] -= h
        p.calc = m.calc = load(out)
        fd = -(p.get_potential_energy() - m.get_potential_energy()) / (2 * h)
        assert abs(fd - f[i, c]) < 1e-6


def test_huber_loss_is_squared_below_delta_and_linear_above():
    from alflow.mlip.train import huber

    delta = 0.01
    r = torch.linspace(-0.05, 0.05, 1001, dtype=torch.float64, requires_grad=True)
    h = huber(r, delta)
    small = r.abs() <= delta
    assert torch.allclose(h[small], r[small] ** 2)
    big = ~small
    assert torch.allclose(h[big], delta * (2 * r[big].abs() - delta))
    (g,) = torch.autograd.grad(h.sum(), r)
    # the gradient is 2r inside, ±2 delta outside: bounded, and continuous at |r| = delta
    assert float(g.abs().max()) <= 2 * delta + 1e-12
    assert torch.allclose(g[small], 2 * r[small].detach())
    with pytest.raises(Exception, match="loss"):
        MLIPConfig(loss="l1")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_training_optimizer_steps_as_plain_amsgrad_adam(dtype):
    """make_optimizer's (fused, where torch has the kernel) AMSGrad Adam moves the weights
    as torch's reference implementation does, with weight decay, over several steps."""
    from alflow.mlip.train import make_optimizer

    cfg = MLIPConfig(dtype=dtype, lr=3e-3, weight_decay=1e-3)
    stats = {"atomic_numbers": [47], "e0": [0.0], "scale": 1.0, "shift": 0.0,
             "avg_num_neighbors": 4.0}
    torch.manual_seed(3)
    models = [build_model(cfg, stats) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    opts = [make_optimizer(models[0], cfg),
            torch.optim.Adam(models[1].parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                             amsgrad=True, foreach=False, fused=False)]
    assert opts[0].defaults["amsgrad"]
    x = torch.tensor(np.random.default_rng(0).normal(0, 1.6, (4, 5, 3)),
                     dtype=getattr(torch, dtype))
    for step in range(4):
        for m, opt in zip(models, opts, strict=True):
            opt.zero_grad()
            e = m(DenseBatch(x * (1 + 0.05 * step), torch.zeros(5, dtype=torch.long)))
            (e**2).sum().backward()
            opt.step()
    tol = 1e-5 if dtype == "float32" else 1e-12
    a, b = models[0].state_dict(), models[1].state_dict()
    init = build_model(cfg, stats).state_dict()
    assert max(float((a[k] - init[k]).abs().max()) for k in a) > 1e-3  # steps were taken
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < tol


def test_lbfgs_polish_lowers_the_loss_far_below_adam(tmp_path):
    """Full-batch L-BFGS after a short Adam run: the validation loss falls several-fold
    (minibatch Adam stops at its noise floor), and the polished model is what best.pt holds."""
    data, _ = from_atoms(emt_frames(40, seed=5))
    cfg = MLIPConfig(dtype="float64", batch_size=8, epochs=10, lr=5e-3, polish_steps=150)
    stats = fit_statistics(data, cfg.cutoff)
    out = train_member(DistInfo(), data, np.arange(32), np.arange(32, 40), cfg, stats,
                       tmp_path / "m", seed=3, data_key="k")
    (ev,) = [e["polish"] for e in out["events"] if "polish" in e]
    assert ev["kept"] and ev["iterations"] > 10
    assert ev["val_after"] < 0.3 * ev["val_before"], ev
    assert out["val"]["loss"] == pytest.approx(ev["val_after"], rel=1e-9)


def test_mace_import_leaves_torch_load_safe(tmp_path):
    """mace sets TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD for its whole process on import; building a
    MACE model must put it back, so a later torch.load keeps refusing to unpickle objects."""
    import subprocess
    import sys

    code = (
        "import os, pickle, torch\n"
        "from alflow.mlip import MLIPConfig\n"
        "from alflow.mlip.model import build_model\n"
        f"build_model(MLIPConfig(backend='mace', dtype='float64', cutoff=4.5), {STATS!r})\n"
        "assert 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD' not in os.environ\n"
        f"p = {str(tmp_path / 'obj.pt')!r}\n"
        "torch.save({'f': os.getcwd}, p)\n"
        "try:\n"
        "    torch.load(p)\n"
        "except pickle.UnpicklingError:\n"
        "    print('refused')\n"
    )
    env = {k: v for k, v in __import__("os").environ.items()
           if k != "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "refused"
