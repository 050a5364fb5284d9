"""Differentiable collective variables (CVs) of a batch of configurations, and CV regions.

A CV maps positions (B, N, 3) in Å to values (B,) and is differentiable by torch autograd
(metadynamics needs dCV/dx). Each CV object has a ``name`` (used in trajectory files and region
bounds) and ``units``. Build them from validated configs with :func:`make_cv`:

- ``coordination``: coordination number with the rational switching function
  ``s(r) = (1 - (r/r0)^n) / (1 - (r/r0)^m)`` (r0 in Å, default 2.8 for Ag; n=6, m=12).
  ``mode="mean"``: the mean over the atoms of the group of each atom's coordination
  ``sum_j s(r_ij)`` (= 2 * pairs / N; 3.0 for the planar Ag6 triangle, 3.33 for the pentagonal
  pyramid, 4.0 for the octahedron with ideal bonds well below r0); ``mode="pairs"``: the sum over
  distinct pairs, PLUMED's ``COORDINATION``.
- ``gyration``: radius of gyration, Å (unweighted, or mass-weighted).
- ``planarity``: RMS distance of the atoms from their best-fit plane, Å (square root of the
  smallest eigenvalue of the gyration tensor); near 0 for planar isomers.
- ``distance``: distance between two atoms or between the centroids of two groups, Å.
- ``position``: one Cartesian component of one atom, Å (for model potentials and tests).
- ``python``: a user function ``module:function`` taking (B, N, 3) and returning (B,). This
  imports and runs code the user wrote (as PLUMED's PYTHONCV does); it must be torch-
  differentiable for metadynamics.

:class:`CVRegion` defines a state as a box in CV space (``{"coordination": [2.8, 3.15]}``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Literal, Protocol, runtime_checkable

import numpy as np
import torch
from pydantic import Field, field_validator, model_validator

from alflow.config import StrictModel
from alflow.errors import ConfigError
from alflow.usercode import import_named


@runtime_checkable
class CV(Protocol):
    """A collective variable: positions (B, N, 3) Å -> values (B,), differentiable."""

    name: str
    units: str

    def __call__(self, positions: torch.Tensor) -> torch.Tensor: ...


def _select(positions: torch.Tensor, group: Sequence[int] | None) -> torch.Tensor:
    if group is None:
        return positions
    idx = torch.as_tensor(list(group), dtype=torch.long, device=positions.device)
    return positions.index_select(-2, idx)


def rational_switch(r: torch.Tensor, r0: float, n: int = 6, m: int = 12) -> torch.Tensor:
    """PLUMED's rational switching function ``(1 - x^n) / (1 - x^m)``, ``x = r / r0``.

    Smooth through x = 1 (value n/m): near it a first-order expansion replaces the 0/0 ratio,
    so values and gradients stay finite."""
    x = r / r0
    near = (x - 1.0).abs() < 1e-4
    xs = torch.where(near, torch.full_like(x, 2.0), x)
    ratio = (1.0 - xs**n) / (1.0 - xs**m)
    taylor = n / m + n * (n - m) / (2.0 * m) * (x - 1.0)
    return torch.where(near, taylor, ratio)


class CoordinationNumber:
    """Coordination number with a rational switching function (see module docstring)."""

    units = ""

    def __init__(self, r0: float = 2.8, n: int = 6, m: int = 12, mode: str = "mean",
                 group: Sequence[int] | None = None, name: str = "coordination"):
        if mode not in ("mean", "pairs"):
            raise ConfigError(f"coordination.mode: expected 'mean' or 'pairs', got {mode!r}")
        self.r0, self.n, self.m, self.mode = float(r0), int(n), int(m), mode
        self.group = None if group is None else list(group)
        self.name = name

    def __call__(self, positions: torch.Tensor) -> torch.Tensor:
        x = _select(positions, self.group)
        k = x.shape[-2]
        i, j = torch.triu_indices(k, k, offset=1, device=x.device)
        r = (x[..., i, :] - x[..., j, :]).norm(dim=-1)
        pairs = rational_switch(r, self.r0, self.n, self.m).sum(-1)
        return pairs if self.mode == "pairs" else 2.0 * pairs / k


class RadiusOfGyration:
    """Radius of gyration, Å: ``sqrt(sum_i w_i |x_i - x_c|^2 / sum_i w_i)``."""

    units = "Å"

    def __init__(self, group: Sequence[int] | None = None, masses: Sequence[float] | None = None,
                 name: str = "gyration"):
        self.group = None if group is None else list(group)
        self.masses = None if masses is None else np.asarray(masses, dtype=float)
        self.name = name

    def __call__(self, positions: torch.Tensor) -> torch.Tensor:
        x = _select(positions, self.group)
        if self.masses is None:
            w = torch.ones(x.shape[-2], dtype=x.dtype, device=x.device)
        else:
            w = torch.as_tensor(self.masses, dtype=x.dtype, device=x.device)
        w = w / w.sum()
        c = (w[:, None] * x).sum(-2, keepdim=True)
        return ((w * ((x - c) ** 2).sum(-1)).sum(-1)).sqrt()


class Planarity:
    """RMS distance of the atoms from their best-fit plane, Å: ``sqrt(lambda_min + 1e-8)`` of
    the gyration tensor (the tiny offset keeps the gradient finite for exactly planar input)."""

    units = "Å"

    def __init__(self, group: Sequence[int] | None = None, name: str = "planarity"):
        self.group = None if group is None else list(group)
        self.name = name

    def __call__(self, positions: torch.Tensor) -> torch.Tensor:
        x = _select(positions, self.group)
        d = x - x.mean(-2, keepdim=True)
        g = d.transpose(-1, -2) @ d / x.shape[-2]
        lam = torch.linalg.eigvalsh(g)[..., 0]
        return (lam.clamp_min(0.0) + 1e-8).sqrt()


class Distance:
    """Distance between atom (or group centroid) ``a`` and atom (or group centroid) ``b``, Å."""

    units = "Å"

    def __init__(self, a: int | Sequence[int], b: int | Sequence[int], name: str = "distance"):
        self.a = [a] if isinstance(a, int) else list(a)
        self.b = [b] if isinstance(b, int) else list(b)
        self.name = name

    def __call__(self, positions: torch.Tensor) -> torch.Tensor:
        ca = _select(positions, self.a).mean(-2)
        cb = _select(positions, self.b).mean(-2)
        return (ca - cb).norm(dim=-1)


class Position:
    """Cartesian component ``axis`` (0, 1, 2) of atom ``atom``, Å."""

    units = "Å"

    def __init__(self, atom: int = 0, axis: int = 0, name: str = "position"):
        self.atom, self.axis, self.name = int(atom), int(axis), name

    def __call__(self, positions: torch.Tensor) -> torch.Tensor:
        return positions[..., self.atom, self.axis]


def import_hook(spec: str, field: str = "function") -> Callable:
    """Import the user function named ``module:function`` (runs the module's code)."""
    module, colon, func = spec.partition(":")
    if not colon or not module or not func:
        raise ConfigError(f"{field}: expected 'module:function', got {spec!r}")
    obj = import_named(module, func, field)
    if not callable(obj):
        raise ConfigError(f"{field}: {spec!r} is not callable")
    return obj


class PythonCV:
    """A user-defined CV: ``module:function`` mapping (B, N, 3) Å to (B,) (user code)."""

    def __init__(self, function: str, name: str = "python", units: str = ""):
        self.fn = import_hook(function)
        self.function, self.name, self.units = function, name, units

    def __call__(self, positions: torch.Tensor) -> torch.Tensor:
        out = self.fn(positions)
        if not isinstance(out, torch.Tensor) or out.shape != positions.shape[:-2]:
            raise ConfigError(f"CV {self.function}: expected a torch tensor of shape "
                              f"{tuple(positions.shape[:-2])}, got "
                              f"{getattr(out, 'shape', type(out).__name__)}")
        return out


# ---------------------------------------------------------------- validated configs
class _CVBase(StrictModel):
    name: str | None = Field(None, description="name in outputs and regions; default: kind")


class CoordinationConfig(_CVBase):
    kind: Literal["coordination"] = "coordination"
    r0: float = Field(2.8, gt=0, description="switching distance, Å")
    n: int = Field(6, ge=1)
    m: int = Field(12, ge=2)
    mode: Literal["mean", "pairs"] = "mean"
    group: list[int] | None = None

    @model_validator(mode="after")
    def _nm(self):
        if self.m <= self.n:
            raise ValueError(f"m must exceed n (got n={self.n}, m={self.m})")
        return self


class GyrationConfig(_CVBase):
    kind: Literal["gyration"] = "gyration"
    group: list[int] | None = None


class PlanarityConfig(_CVBase):
    kind: Literal["planarity"] = "planarity"
    group: list[int] | None = None


class DistanceConfig(_CVBase):
    kind: Literal["distance"] = "distance"
    a: int | list[int]
    b: int | list[int]


class PositionConfig(_CVBase):
    kind: Literal["position"] = "position"
    atom: int = Field(0, ge=0)
    axis: Literal[0, 1, 2] = 0


class PythonCVConfig(_CVBase):
    kind: Literal["python"] = "python"
    function: str = Field(description="'module:function' (user code, imported and run)")
    units: str = ""

    @field_validator("function")
    @classmethod
    def _spec(cls, v: str) -> str:
        if v.count(":") != 1:
            raise ValueError("expected 'module:function'")
        return v


CVConfig = Annotated[
    CoordinationConfig | GyrationConfig | PlanarityConfig | DistanceConfig | PositionConfig
    | PythonCVConfig,
    Field(discriminator="kind"),
]


def make_cv(config: CVConfig, natoms: int | None = None) -> CV:
    """The CV object of a config; ``natoms`` (if given) checks atom indices."""
    name = config.name or config.kind
    if natoms is not None:
        for field in ("group", "a", "b", "atom"):
            idx = getattr(config, field, None)
            idx = [] if idx is None else [idx] if isinstance(idx, int) else idx
            bad = [i for i in idx if not 0 <= i < natoms]
            if bad:
                raise ConfigError(f"cv {name}.{field}: atom indices {bad} out of range for "
                                  f"{natoms} atoms")
    match config:
        case CoordinationConfig():
            return CoordinationNumber(config.r0, config.n, config.m, config.mode, config.group,
                                      name)
        case GyrationConfig():
            return RadiusOfGyration(config.group, name=name)
        case PlanarityConfig():
            return Planarity(config.group, name)
        case DistanceConfig():
            return Distance(config.a, config.b, name)
        case PositionConfig():
            return Position(config.atom, config.axis, name)
        case PythonCVConfig():
            return PythonCV(config.function, name, config.units)
    raise ConfigError(f"unknown CV config {config!r}")  # pragma: no cover


def evaluate_cvs(cvs: Sequence[CV], positions: torch.Tensor) -> torch.Tensor:
    """Values (B, C) of ``cvs`` without gradients."""
    with torch.no_grad():
        if not cvs:
            return positions.new_zeros(positions.shape[0], 0)
        return torch.stack([cv(positions) for cv in cvs], dim=-1)


# ---------------------------------------------------------------- regions (states)
class CVRegion(StrictModel):
    """A state as a box in CV space: ``bounds[cv_name] = [low, high]`` (null = unbounded)."""

    name: str
    bounds: dict[str, tuple[float | None, float | None]]

    @field_validator("bounds")
    @classmethod
    def _order(cls, v):
        if not v:
            raise ValueError("at least one CV bound is needed")
        for k, (lo, hi) in v.items():
            if lo is not None and hi is not None and lo >= hi:
                raise ValueError(f"{k}: low {lo} must be below high {hi}")
        return v

    def contains(self, values: Mapping[str, np.ndarray]) -> np.ndarray:
        """Boolean mask: which configurations (values[cv_name] arrays) lie inside."""
        inside = None
        for k, (lo, hi) in self.bounds.items():
            if k not in values:
                raise ConfigError(f"region {self.name}: no CV named {k!r} (have "
                                  f"{sorted(values)})")
            v = np.asarray(values[k], dtype=float)
            ok = np.ones(v.shape, dtype=bool)
            if lo is not None:
                ok &= v >= lo
            if hi is not None:
                ok &= v <= hi
            inside = ok if inside is None else inside & ok
        return inside


def assign_regions(values: Mapping[str, np.ndarray], regions: Sequence[CVRegion]) -> np.ndarray:
    """Index of the first region containing each configuration, -1 if none."""
    out = None
    for k, region in enumerate(regions):
        inside = region.contains(values)
        if out is None:
            out = np.full(inside.shape, -1, dtype=int)
        out[(out < 0) & inside] = k
    if out is None:
        raise ConfigError("assign_regions: no regions given")
    return out
