"""BAOAB Langevin dynamics of R replicas at once in torch, on any batched Potential.

Units follow ASE: positions Å, masses amu, energies eV, temperature K, time step and friction
given in fs and 1/fs (converted with ``ase.units.fs``; velocities are in ASE's Å/(ASE time)).
The BAOAB splitting (Leimkuhler and Matthews 2013) is: half kick, half drift, exact
Ornstein-Uhlenbeck step ``v <- c1 v + sqrt(1 - c1^2) sqrt(kT/m) xi`` with
``c1 = exp(-gamma dt)``, half drift, new forces, half kick. With friction 0 it is velocity
Verlet.

Uncertainty-aware: if the potential returns ``force_dev`` (the committee's maximum atomic
force deviation, eV/Å) and ``trust_upper`` is set, a replica whose deviation exceeds it is
stopped at that step (frozen, no longer evaluated) and reported in ``Trajectory.stopped_at``;
its frames before that step stay valid (``Trajectory.valid``), the others go on.

Biases (metadynamics, walls, user restraints) implement :class:`Bias`; recorded potential
energies are those of the unbiased potential, and ``bias`` holds the total bias energy.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import torch
from ase import Atoms, units
from pydantic import Field

from alflow.config import StrictModel
from alflow.errors import InputError
from alflow.potential import Potential, evaluate
from alflow.sampling.cvs import CV, evaluate_cvs, import_hook

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- biases
@dataclass
class BiasOutput:
    """Bias energies (B,) eV and bias forces (B, N, 3) eV/Å."""

    energy: torch.Tensor
    forces: torch.Tensor


@runtime_checkable
class Bias(Protocol):
    """An added potential on the replicas. Optional extras the driver uses if present:
    ``cvs`` (CVs recorded with the trajectory), ``update()`` called once per MD step right
    after ``evaluate`` on the active replicas (history-dependent biases such as metadynamics
    deposit there, from the CV values of that evaluation), and ``offset() -> float``, the
    reweighting offset c(t) in eV."""

    def evaluate(self, positions: torch.Tensor) -> BiasOutput: ...


class EnergyBias:
    """A bias from a differentiable torch energy function (B, N, 3) Å -> (B,) eV."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], name: str = "restraint"):
        self.fn, self.name = fn, name

    def evaluate(self, positions: torch.Tensor) -> BiasOutput:
        with torch.enable_grad():
            x = positions.detach().requires_grad_(True)
            e = self.fn(x)
            (g,) = torch.autograd.grad(e.sum(), x, allow_unused=True)
        g = torch.zeros_like(x) if g is None else g
        return BiasOutput(energy=e.detach(), forces=-g.detach())


def spherical_wall(radius: float, k: float) -> EnergyBias:
    """Flat-bottomed harmonic wall keeping every atom within ``radius`` Å of the centroid:
    ``sum_i k/2 max(0, |x_i - x_c| - radius)^2`` (k in eV/Å²); stops clusters evaporating."""

    def fn(x: torch.Tensor) -> torch.Tensor:
        d = (x - x.mean(-2, keepdim=True)).norm(dim=-1)
        return (0.5 * k * (d - radius).clamp_min(0.0) ** 2).sum(-1)

    return EnergyBias(fn, "spherical_wall")


def cv_wall(cv: CV, lower: float | None, upper: float | None, k: float) -> EnergyBias:
    """Harmonic walls on a CV (PLUMED's LOWER_WALLS/UPPER_WALLS): ``k/2 (s - upper)^2`` above
    ``upper`` and ``k/2 (lower - s)^2`` below ``lower``; k in eV per CV unit squared."""

    def fn(x: torch.Tensor) -> torch.Tensor:
        s = cv(x)
        e = torch.zeros_like(s)
        if upper is not None:
            e = e + 0.5 * k * (s - upper).clamp_min(0.0) ** 2
        if lower is not None:
            e = e + 0.5 * k * (lower - s).clamp_min(0.0) ** 2
        return e

    return EnergyBias(fn, f"wall_{cv.name}")


# ---------------------------------------------------------------- trajectory
@dataclass
class Trajectory:
    """Frames of R replicas recorded every ``record_every`` steps (F frames incl. step 0).

    Arrays: ``positions`` (F, R, N, 3) Å; ``energy`` (F, R) eV of the unbiased potential;
    ``kinetic`` (F, R) eV; ``force_dev`` (F, R) eV/Å or None; ``cvs`` (F, R, C) with names
    ``cv_names``; ``bias`` (F, R) eV (total bias, 0 without one); ``offset`` (F,) eV, the
    metadynamics c(t) at each frame (0 without one); ``steps`` (F,); ``stopped_at`` (R,),
    the step at which a replica left the trust region (-1 if never); ``final_positions`` and
    ``final_velocities`` (R, N, 3) for continuing a run."""

    numbers: np.ndarray
    masses: np.ndarray
    temperature_k: float
    dt_fs: float
    steps: np.ndarray
    positions: np.ndarray
    energy: np.ndarray
    kinetic: np.ndarray
    force_dev: np.ndarray | None
    cvs: np.ndarray
    cv_names: list[str]
    bias: np.ndarray
    offset: np.ndarray
    stopped_at: np.ndarray
    final_positions: np.ndarray
    final_velocities: np.ndarray
    stop_force_dev: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def n_frames(self) -> int:
        return len(self.steps)

    @property
    def n_replicas(self) -> int:
        return self.positions.shape[1]

    @property
    def time_ps(self) -> np.ndarray:
        """Time of each frame, ps (F,)."""
        return self.steps * self.dt_fs * 1e-3

    @property
    def valid(self) -> np.ndarray:
        """(F, R) mask: frames recorded before the replica was stopped."""
        stop = np.where(self.stopped_at < 0, np.iinfo(np.int64).max, self.stopped_at)
        return self.steps[:, None] < stop[None, :]

    def cv(self, name: str) -> np.ndarray:
        """Values (F, R) of the CV called ``name``."""
        if name not in self.cv_names:
            raise InputError(f"no CV named {name!r} in this trajectory (have {self.cv_names})")
        return self.cvs[..., self.cv_names.index(name)]

    def log_weights(self) -> np.ndarray:
        """(F, R) log reweighting factors ``beta (V_bias - c(t))`` to the unbiased ensemble."""
        beta = 1.0 / (units.kB * self.temperature_k)
        return beta * (self.bias - self.offset[:, None])

    def to_atoms(self, replicas: Sequence[int] | None = None, valid_only: bool = True,
                 every: int = 1) -> list[Atoms]:
        """Frames as ASE Atoms (replica-major), with ``info``: ``replica``, ``step``,
        ``time_ps``, ``potential_energy``, ``kinetic_energy``, ``bias``, ``bias_offset``,
        ``force_dev`` (if any), ``cv_<name>`` per CV."""
        reps = range(self.n_replicas) if replicas is None else replicas
        valid = self.valid
        out = []
        for r in reps:
            for f in range(0, self.n_frames, every):
                if valid_only and not valid[f, r]:
                    continue
                a = Atoms(numbers=self.numbers, positions=self.positions[f, r])
                a.info.update(replica=int(r), step=int(self.steps[f]),
                              time_ps=float(self.time_ps[f]),
                              potential_energy=float(self.energy[f, r]),
                              kinetic_energy=float(self.kinetic[f, r]),
                              bias=float(self.bias[f, r]), bias_offset=float(self.offset[f]))
                if self.force_dev is not None:
                    a.info["force_dev"] = float(self.force_dev[f, r])
                for c, name in enumerate(self.cv_names):
                    a.info[f"cv_{name}"] = float(self.cvs[f, r, c])
                out.append(a)
        return out

    def write_extxyz(self, path: str | Path, **kw) -> int:
        """Write frames (see :meth:`to_atoms`) to extxyz; returns the number written."""
        from ase.io import write

        frames = self.to_atoms(**kw)
        write(str(path), frames, format="extxyz")
        return len(frames)

    _ARRAYS = ("numbers", "masses", "steps", "positions", "energy", "kinetic", "cvs", "bias",
               "offset", "stopped_at", "final_positions", "final_velocities", "stop_force_dev")

    def write_hdf5(self, path: str | Path, group: str = "md") -> None:
        """Write all arrays to an HDF5 group (created or replaced)."""
        import h5py

        with h5py.File(path, "a") as h:
            if group in h:
                del h[group]
            g = h.create_group(group)
            for k in self._ARRAYS:
                g.create_dataset(k, data=getattr(self, k))
            if self.force_dev is not None:
                g.create_dataset("force_dev", data=self.force_dev)
            g.attrs.update(temperature_k=self.temperature_k, dt_fs=self.dt_fs,
                           cv_names=np.array(self.cv_names, dtype="S"))

    @classmethod
    def read_hdf5(cls, path: str | Path, group: str = "md") -> Trajectory:
        import h5py

        with h5py.File(path, "r") as h:
            g = h[group]
            kw = {k: g[k][()] for k in cls._ARRAYS}
            kw["force_dev"] = g["force_dev"][()] if "force_dev" in g else None
            return cls(temperature_k=float(g.attrs["temperature_k"]),
                       dt_fs=float(g.attrs["dt_fs"]),
                       cv_names=[s.decode() for s in g.attrs["cv_names"]], **kw)


# ---------------------------------------------------------------- driver
def maxwell_boltzmann(masses: torch.Tensor, shape: tuple[int, ...], temperature_k: float,
                      generator: torch.Generator) -> torch.Tensor:
    """Velocities (R, N, 3) in ASE units drawn at ``temperature_k``."""
    sigma = torch.sqrt(units.kB * temperature_k / masses)[:, None]
    noise = torch.randn(shape, generator=generator, dtype=masses.dtype, device=masses.device)
    return noise * sigma


def _as_biases(bias) -> list:
    if bias is None:
        return []
    if isinstance(bias, list | tuple):
        return list(bias)
    return [bias]


def _initial_state(potential: Potential, positions, masses, velocities, temperature_k: float,
                   seed: int, dev: torch.device, dtype: torch.dtype
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Generator]:
    """Validated positions x (R, N, 3) Å, masses (N,) amu, velocities (R, N, 3) (given, or
    Maxwell–Boltzmann at T from ``seed``) and the noise generator."""
    x = torch.as_tensor(np.asarray(positions), dtype=dtype, device=dev).clone()
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3 or x.shape[-1] != 3:
        raise InputError(f"positions: expected shape (R, N, 3), got {tuple(x.shape)}")
    n_atoms = x.shape[1]
    if len(np.asarray(potential.numbers)) != n_atoms:
        raise InputError(f"positions have {n_atoms} atoms but the potential has "
                         f"{len(np.asarray(potential.numbers))}")
    m = torch.as_tensor(np.asarray(masses, dtype=float), dtype=dtype, device=dev)
    if m.shape != (n_atoms,) or bool((m <= 0).any()):
        raise InputError(f"masses: expected {n_atoms} positive values (amu)")
    gen = torch.Generator(device=dev)
    gen.manual_seed(int(seed))
    if velocities is None:
        v = maxwell_boltzmann(m, tuple(x.shape), temperature_k, gen)
    else:
        v = torch.as_tensor(np.asarray(velocities), dtype=dtype, device=dev).clone()
        if v.shape != x.shape:
            raise InputError(f"velocities: expected shape {tuple(x.shape)}")
    return x, m, v, gen


def _recorded_cvs(cvs: Sequence[CV], biases: list) -> list[CV]:
    """The CVs asked for, then the biases' own (each once); names must be unique."""
    out: list[CV] = list(cvs)
    for b in biases:
        for cv in getattr(b, "cvs", ()):
            if all(cv is not c for c in out):
                out.append(cv)
    names = [cv.name for cv in out]
    if len(set(names)) != len(names):
        raise InputError(f"CV names must be unique, got {names}")
    return out


class _Forces:
    """Forces, energies and committee deviation of the active replicas; stops a replica once
    its force deviation exceeds ``trust_upper`` eV/Å (it is then no longer evaluated)."""

    def __init__(self, potential: Potential, biases: list, n_rep: int,
                 trust_upper: float | None, like: torch.Tensor):
        self.potential, self.biases, self.trust_upper = potential, biases, trust_upper
        dtype, dev = like.dtype, like.device
        self.active = torch.ones(n_rep, dtype=torch.bool, device=dev)
        self.stopped_at = np.full(n_rep, -1, dtype=np.int64)
        self.stop_force_dev = np.full(n_rep, np.nan)
        self.e_pot = torch.zeros(n_rep, dtype=dtype, device=dev)
        self.e_bias = torch.zeros(n_rep, dtype=dtype, device=dev)
        self.force_dev = torch.full((n_rep,), float("nan"), dtype=dtype, device=dev)
        self.forces = torch.zeros_like(like)
        self.has_dev = False

    def compute(self, x: torch.Tensor, step: int) -> None:
        """Evaluate the active replicas of x (R, N, 3) Å at ``step`` (biases update after 0)."""
        dtype, dev = x.dtype, x.device
        idx = None if bool(self.active.all()) else self.active.nonzero().squeeze(-1)
        xa = x if idx is None else x[idx]
        out = evaluate(self.potential, xa)
        f = out.forces.to(dtype)
        eb = torch.zeros(xa.shape[0], dtype=dtype, device=dev)
        for b in self.biases:
            bo = b.evaluate(xa)
            f = f + bo.forces.to(dtype)
            eb = eb + bo.energy.to(dtype)
            if step > 0 and hasattr(b, "update"):
                b.update()
        sel = slice(None) if idx is None else idx
        self.forces[sel] = f
        self.e_pot[sel] = out.energy.to(dtype)
        self.e_bias[sel] = eb
        if out.force_dev is None:
            return
        self.has_dev = True
        self.force_dev[sel] = out.force_dev.to(dtype)
        if self.trust_upper is None:
            return
        over = out.force_dev.to(dtype) > self.trust_upper
        if bool(over.any()):
            ids = torch.arange(x.shape[0], device=dev) if idx is None else idx
            for r in ids[over].tolist():
                self.stopped_at[r] = step
                self.stop_force_dev[r] = float(self.force_dev[r])
                self.active[r] = False
            log.info("step %d: replicas %s left the trust region (force_dev > %g eV/Å)",
                     step, ids[over].tolist(), self.trust_upper)


class _Recorder:
    """Frames every ``record_every`` steps: positions, energies, kinetic energies, force
    deviation, CVs, bias energy and offset."""

    def __init__(self, masses: torch.Tensor, cvs: list[CV], biases: list,
                 callback: Callable[[int, int], None] | None):
        self.masses, self.cvs, self.biases, self.callback = masses, cvs, biases, callback
        self.rec: dict[str, list] = {k: [] for k in ("steps", "pos", "e", "ke", "fd", "cv",
                                                       "b", "off")}

    def __call__(self, step: int, x: torch.Tensor, v: torch.Tensor, fs: _Forces) -> None:
        ke = 0.5 * (self.masses[:, None] * v * v).sum((-1, -2))
        rec = self.rec
        rec["steps"].append(step)
        rec["pos"].append(x.cpu().numpy().copy())
        rec["e"].append(fs.e_pot.cpu().numpy().copy())
        rec["ke"].append(ke.cpu().numpy())
        rec["fd"].append(fs.force_dev.cpu().numpy().copy())
        rec["cv"].append(evaluate_cvs(self.cvs, x).cpu().numpy())
        rec["b"].append(fs.e_bias.cpu().numpy().copy())
        rec["off"].append(sum(float(b.offset()) for b in self.biases if hasattr(b, "offset")))
        if self.callback is not None:
            self.callback(step, int(fs.active.sum()))


def run_langevin(potential: Potential, positions, masses, temperature_k: float, dt_fs: float,
                 steps: int, friction_per_fs: float = 0.01, bias=None, record_every: int = 10,
                 trust_upper: float | None = None, seed: int = 0, *,
                 cvs: Sequence[CV] = (), velocities=None, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float64,
                 callback: Callable[[int, int], None] | None = None) -> Trajectory:
    """Run BAOAB Langevin dynamics of R replicas; see the module docstring.

    positions (R, N, 3) or (N, 3) Å; masses (N,) amu; temperature K; dt fs; friction 1/fs
    (0 gives velocity Verlet, NVE); ``bias``: a :class:`Bias`, a list of them, or None;
    ``trust_upper`` eV/Å; ``cvs``: CVs to record besides the biases' own; ``velocities``
    (R, N, 3) in ASE units to continue a run (default: Maxwell-Boltzmann at T from ``seed``);
    ``callback(step, n_active)`` is called every ``record_every`` steps."""
    if temperature_k < 0 or dt_fs <= 0 or steps < 0 or record_every < 1 or friction_per_fs < 0:
        raise InputError("run_langevin: need temperature_k >= 0, dt_fs > 0, steps >= 0, "
                         "record_every >= 1, friction_per_fs >= 0")
    dev = torch.device(device)
    x, m, v, gen = _initial_state(potential, positions, masses, velocities, temperature_k,
                                  seed, dev, dtype)
    biases = _as_biases(bias)
    rec_cvs = _recorded_cvs(cvs, biases)
    dt = dt_fs * units.fs
    c1 = math.exp(-friction_per_fs / units.fs * dt)  # exact Ornstein–Uhlenbeck step
    c2 = math.sqrt(max(0.0, 1.0 - c1 * c1))
    sig = torch.sqrt(units.kB * temperature_k / m)[:, None]
    inv_m = (1.0 / m)[:, None]
    fs = _Forces(potential, biases, x.shape[0], trust_upper, x)
    record = _Recorder(m, rec_cvs, biases, callback)
    fs.compute(x, 0)
    v = v * fs.active[:, None, None]
    record(0, x, v, fs)
    for step in range(1, steps + 1):
        if not bool(fs.active.any()):
            log.info("all replicas stopped at step %d", step - 1)
            break
        am = fs.active[:, None, None].to(dtype)
        v = v + am * (0.5 * dt) * fs.forces * inv_m  # B
        x = x + am * (0.5 * dt) * v  # A
        if c1 != 1.0:  # O
            noise = torch.randn(x.shape, generator=gen, dtype=dtype, device=dev)
            v = torch.where(am.bool(), c1 * v + c2 * sig * noise, v)
        x = x + am * (0.5 * dt) * v  # A
        fs.compute(x, step)
        v = v + am * (0.5 * dt) * fs.forces * inv_m  # B
        # a replica stopped at this step keeps its (out-of-trust) configuration, velocity zeroed
        v = v * fs.active[:, None, None]
        if step % record_every == 0:
            record(step, x, v, fs)
    rec = record.rec
    return Trajectory(
        numbers=np.asarray(potential.numbers), masses=m.cpu().numpy(),
        temperature_k=float(temperature_k), dt_fs=float(dt_fs),
        steps=np.asarray(rec["steps"], dtype=np.int64), positions=np.stack(rec["pos"]),
        energy=np.stack(rec["e"]), kinetic=np.stack(rec["ke"]),
        force_dev=np.stack(rec["fd"]) if fs.has_dev else None, cvs=np.stack(rec["cv"]),
        cv_names=[cv.name for cv in rec_cvs], bias=np.stack(rec["b"]),
        offset=np.asarray(rec["off"], dtype=float), stopped_at=fs.stopped_at,
        final_positions=x.cpu().numpy(), final_velocities=v.cpu().numpy(),
        stop_force_dev=fs.stop_force_dev)


# ---------------------------------------------------------------- config
class WallConfig(StrictModel):
    """Flat-bottomed spherical wall around the centroid (keeps clusters together)."""

    radius: float = Field(gt=0, description="Å from the centroid")
    k: float = Field(1.0, gt=0, description="eV/Å²")


class MDConfig(StrictModel):
    """Langevin MD settings (units: K, fs, 1/fs, eV/Å)."""

    temperature_k: float = Field(300.0, ge=0)
    dt_fs: float = Field(2.0, gt=0, le=50)
    steps: int = Field(1000, ge=0)
    friction_per_fs: float = Field(0.01, ge=0, description="Langevin friction; 0 = NVE")
    record_every: int = Field(10, ge=1)
    replicas: int = Field(1, ge=1)
    trust_upper: float | None = Field(None, gt=0, description="stop a replica above this "
                                      "committee force deviation, eV/Å")
    seed: int = 0
    device: str = "cpu"
    dtype: Literal["float64", "float32"] = "float64"
    wall: WallConfig | None = None
    restraint: str | None = Field(None, description="user bias 'module:function', a torch "
                                  "energy (B,N,3) Å -> (B,) eV (user code, imported and run)")

    def torch_dtype(self) -> torch.dtype:
        return torch.float64 if self.dtype == "float64" else torch.float32

    def static_biases(self) -> list[EnergyBias]:
        """The wall and the user restraint of this config, as biases."""
        out = []
        if self.wall is not None:
            out.append(spherical_wall(self.wall.radius, self.wall.k))
        if self.restraint is not None:
            out.append(EnergyBias(import_hook(self.restraint, "restraint"), "restraint"))
        return out
