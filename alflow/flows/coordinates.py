"""Coordinates of a cluster without its 6 rigid-body degrees of freedom, with exact Jacobians.

Every transform maps Cartesian positions x (B, N, 3) Å to a vector z (B, 3N-6) and back, and
reports log J(z), the log volume element of the rigid-body decomposition

    dx = J(z) dz  d³t  dΩ,        ∫ dΩ = 8π² (Haar measure of SO(3), Euler angles sinβ dα dβ dγ)

so that for any rigid-body-invariant integrand ∫ f(x) dx = V_trans · 8π² · ∫ f(x(z)) J(z) dz.
Two kinds:

- :class:`ZMatrixCoordinates` (``"zmatrix"``): bond, angle, torsion of a Z-matrix built from a
  reference structure (nearest placed atoms). J = b₁² ∏_{k≥2} b_k² sin θ_k. Torsions are
  circular, stored relative to the reference torsion and wrapped to [-π, π).
- :class:`FrameCoordinates` (``"frame"``): Cartesian positions in the frame of three atoms
  (a at the origin, b on +z, c in the xz half-plane x>0). z = (z_b, x_c, z_c, y_3..y_{N-1}) and
  J = z_b² x_c. (A principal-axes frame has sign ambiguities and a Jacobian involving the
  inertia tensor; the three-atom frame gives the same 3N-6 Cartesian degrees of freedom with a
  two-factor exact Jacobian.)

Configurations outside a transform's domain (b ≤ 0, θ ∉ (0, π), x_c ≤ 0) are reported by
``valid(z)``; densities are zero there. Permutations of like atoms are handled by
:func:`canonical_permutation` (assignment to the reference after alignment).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from alflow.errors import InputError

LOG_8PI2 = math.log(8 * math.pi**2)
_PERM_CACHE = 100_000  # configurations whose canonical permutation is remembered


def wrap(a: torch.Tensor) -> torch.Tensor:
    """Angles (any shape, rad) wrapped to [-π, π)."""
    return torch.remainder(a + math.pi, 2 * math.pi) - math.pi


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True)


def _angle(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Angle a-b-c (rad) at b, for (B, 3) tensors."""
    u, v = a - b, c - b
    return torch.atan2(torch.cross(u, v, dim=-1).norm(dim=-1), (u * v).sum(-1))


def _dihedral(p0: torch.Tensor, p1: torch.Tensor, p2: torch.Tensor,
              p3: torch.Tensor) -> torch.Tensor:
    """Dihedral p0-p1-p2-p3 (rad, (-π, π]), for (B, 3) tensors."""
    b0, b1, b2 = p0 - p1, p2 - p1, p3 - p2
    b1n = _unit(b1)
    v = b0 - (b0 * b1n).sum(-1, keepdim=True) * b1n
    w = b2 - (b2 * b1n).sum(-1, keepdim=True) * b1n
    x = (v * w).sum(-1)
    y = (torch.cross(b1n, v, dim=-1) * w).sum(-1)
    return torch.atan2(y, x)


def _place(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, bond: torch.Tensor,
           angle: torch.Tensor, torsion: torch.Tensor) -> torch.Tensor:
    """NeRF: the atom d with |d-a| = bond, angle d-a-b, dihedral c-b-a-d = torsion."""
    bc = _unit(a - b)
    n = _unit(torch.cross(b - c, bc, dim=-1))
    m = torch.cross(n, bc, dim=-1)
    d = torch.stack([-bond * torch.cos(angle), bond * torch.sin(angle) * torch.cos(torsion),
                     bond * torch.sin(angle) * torch.sin(torsion)], -1)
    return a + d[..., :1] * bc + d[..., 1:2] * m + d[..., 2:3] * n


class ClusterCoordinates:
    """Base: reference (N, 3) Å, numbers (N,), ``dim`` = 3N-6, ``circular`` (dim,) bool."""

    kind = "base"

    def __init__(self, reference: np.ndarray, numbers: np.ndarray):
        ref = np.asarray(reference, dtype=float)
        if ref.ndim != 2 or ref.shape[1] != 3 or ref.shape[0] < 3:
            raise InputError(f"reference must have shape (N>=3, 3), got {ref.shape}")
        self.reference = ref - ref.mean(0)
        self.numbers = np.asarray(numbers)
        self.n_atoms = len(ref)
        self.dim = 3 * self.n_atoms - 6
        self._perms: dict[bytes, np.ndarray] = {}

    circular: torch.Tensor

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, N, 3) Å -> z (B, dim), log J(z) (B,)."""
        raise NotImplementedError

    def inverse(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z (B, dim) -> x (B, N, 3) Å in the body frame, log J(z) (B,)."""
        raise NotImplementedError

    def valid(self, z: torch.Tensor) -> torch.Tensor:
        """(B,) bool: z lies in the domain of the transform."""
        raise NotImplementedError

    def canonicalize(self, x: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Permute like atoms of each configuration (B, N, 3) to match the reference.

        The permutation of each configuration is remembered (keyed by its coordinates' bytes,
        up to ``_PERM_CACHE`` configurations): training on seeds, then on seeds + walkers,
        relabels the seeds once (the assignment costs ~5 ms per configuration)."""
        xt = torch.as_tensor(x)
        xn = np.ascontiguousarray(xt.detach().cpu().numpy(), dtype=float)
        cache = self._perms
        keys = [row.tobytes() for row in xn]
        todo = [i for i, k in enumerate(keys) if k not in cache]
        if todo:
            if len(cache) + len(todo) > _PERM_CACHE:
                cache.clear()
            new = canonical_permutation(xn[todo], self.reference, self.numbers)
            cache.update(zip((keys[i] for i in todo), new, strict=True))
        perms = np.stack([cache[k] for k in keys]) if keys else np.zeros((0, self.n_atoms), int)
        idx = torch.as_tensor(perms, device=xt.device)
        return torch.gather(xt, 1, idx[..., None].expand(-1, -1, 3))

    def to_config(self) -> dict[str, Any]:
        return {"kind": self.kind, "reference": self.reference.tolist(),
                "numbers": self.numbers.tolist()}


class ZMatrixCoordinates(ClusterCoordinates):
    """Bonds, angles and torsions of a Z-matrix built from the reference (see module doc).

    ``order`` is the placement order of atoms; ``partners[k] = (a, b, c)`` the bond, angle and
    torsion partners (atom indices, -1 where unused) of ``order[k]``. z holds
    [b₁, b₂, θ₂, (b_k, θ_k, τ_k − τ_k^ref) for k ≥ 3]; lengths Å, angles rad.
    """

    kind = "zmatrix"

    def __init__(self, reference: np.ndarray, numbers: np.ndarray,
                 order: list[int] | None = None, partners: list[list[int]] | None = None):
        super().__init__(reference, numbers)
        if order is None or partners is None:
            order, partners = build_zmatrix(self.reference)
        self.order = [int(i) for i in order]
        self.partners = [[int(p) for p in row] for row in partners]
        circ = [False, False, False] + [False, False, True] * (self.n_atoms - 3)
        self.circular = torch.tensor(circ, dtype=torch.bool)
        self._tref = torch.zeros(self.dim, dtype=torch.float64)
        z0, _ = self._raw_forward(torch.as_tensor(self.reference)[None])
        self._tref = torch.where(self.circular, z0[0], torch.zeros_like(z0[0]))

    def _raw_forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cols = []
        o, p = self.order, self.partners
        cols.append((x[:, o[1]] - x[:, p[1][0]]).norm(dim=-1))
        for k in range(2, self.n_atoms):
            d, (a, b, c) = o[k], p[k]
            cols.append((x[:, d] - x[:, a]).norm(dim=-1))
            cols.append(_angle(x[:, d], x[:, a], x[:, b]))
            if k >= 3:
                cols.append(_dihedral(x[:, c], x[:, b], x[:, a], x[:, d]))
        z = torch.stack(cols, -1)
        return z, self.log_jacobian(z)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z, lj = self._raw_forward(x)
        tref = self._tref.to(z)
        return torch.where(self.circular.to(z.device), wrap(z - tref), z), lj

    def log_jacobian(self, z: torch.Tensor) -> torch.Tensor:
        bonds = z[:, [0, 1] + list(range(3, self.dim, 3))]
        angles = z[:, [2] + list(range(4, self.dim, 3))]
        return 2 * torch.log(bonds.abs()).sum(-1) + torch.log(torch.sin(angles).abs()).sum(-1)

    def valid(self, z: torch.Tensor) -> torch.Tensor:
        bonds = z[:, [0, 1] + list(range(3, self.dim, 3))]
        angles = z[:, [2] + list(range(4, self.dim, 3))]
        return (bonds > 0).all(-1) & (angles > 0).all(-1) & (angles < math.pi).all(-1)

    def inverse(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        bsz = z.shape[0]
        circ = self.circular.to(z.device)
        zt = torch.where(circ, z + self._tref.to(z), z)
        pos: dict[int, torch.Tensor] = {}
        o, p = self.order, self.partners
        zero = torch.zeros(bsz, dtype=z.dtype, device=z.device)
        pos[o[0]] = torch.zeros(bsz, 3, dtype=z.dtype, device=z.device)
        pos[o[1]] = torch.stack([zero, zero, zt[:, 0]], -1)
        # third atom: in the xz plane (x > 0), a virtual torsion partner fixes the plane
        a, b = p[2][0], p[2][1]
        virt = pos[b] + torch.tensor([1.0, 0.0, 0.0], dtype=z.dtype, device=z.device)
        pos[o[2]] = _place(pos[a], pos[b], virt, zt[:, 1], zt[:, 2], zero)
        for k in range(3, self.n_atoms):
            j = 3 + 3 * (k - 3)
            a, b, c = p[k]
            pos[o[k]] = _place(pos[a], pos[b], pos[c], zt[:, j], zt[:, j + 1], zt[:, j + 2])
        x = torch.stack([pos[i] for i in range(self.n_atoms)], 1)
        return x, self.log_jacobian(z)

    def to_config(self) -> dict[str, Any]:
        return {**super().to_config(), "order": self.order, "partners": self.partners}


def build_zmatrix(reference: np.ndarray, min_sin: float = 0.2) -> tuple[list[int], list[list[int]]]:
    """Placement order (nearest-neighbour growth from the atom nearest the centroid) and the
    (bond, angle, torsion) partners of each atom: the nearest placed atoms that keep the angles
    away from 0 and π (sin > ``min_sin``)."""
    x = np.asarray(reference, dtype=float)
    n = len(x)
    d = np.linalg.norm(x[:, None] - x[None], axis=-1)
    first = int(np.argmin(np.linalg.norm(x - x.mean(0), axis=1)))
    order = [first]
    while len(order) < n:
        rest = [i for i in range(n) if i not in order]
        sub = d[np.ix_(rest, order)]
        order.append(rest[int(np.argmin(sub.min(1)))])

    def sin_angle(i: int, j: int, k: int) -> float:
        u, v = x[i] - x[j], x[k] - x[j]
        return float(np.linalg.norm(np.cross(u, v)) / (np.linalg.norm(u) * np.linalg.norm(v)))

    partners = [[-1, -1, -1]]
    for k in range(1, n):
        i, placed = order[k], order[:k]
        a = min(placed, key=lambda j: d[i, j])
        if k == 1:
            partners.append([a, -1, -1])
            continue
        cands = sorted((j for j in placed if j != a), key=lambda j: d[a, j])
        good = [j for j in cands if sin_angle(i, a, j) > min_sin]
        b = (good or cands)[0]
        if k == 2:
            partners.append([a, b, -1])
            continue
        cands = sorted((j for j in placed if j not in (a, b)), key=lambda j: d[b, j])
        good = [j for j in cands if sin_angle(a, b, j) > min_sin]
        partners.append([a, b, (good or cands)[0]])
    return order, partners


class FrameCoordinates(ClusterCoordinates):
    """Cartesian coordinates in the frame of three atoms (see module doc)."""

    kind = "frame"

    def __init__(self, reference: np.ndarray, numbers: np.ndarray,
                 frame: list[int] | None = None):
        super().__init__(reference, numbers)
        self.frame = [int(i) for i in (frame or choose_frame(self.reference))]
        self.rest = [i for i in range(self.n_atoms) if i not in self.frame]
        self.circular = torch.zeros(self.dim, dtype=torch.bool)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, b, c = self.frame
        ez = _unit(x[:, b] - x[:, a])
        u = x[:, c] - x[:, a]
        ex = _unit(u - (u * ez).sum(-1, keepdim=True) * ez)
        ey = torch.cross(ez, ex, dim=-1)
        rot = torch.stack([ex, ey, ez], -1)  # (B, 3, 3) columns: body axes
        y = torch.einsum("bni,bij->bnj", x - x[:, a:a + 1], rot)
        z = torch.cat([y[:, b, 2:3], y[:, c, 0:1], y[:, c, 2:3],
                       y[:, self.rest].reshape(x.shape[0], -1)], -1)
        return z, self.log_jacobian(z)

    def log_jacobian(self, z: torch.Tensor) -> torch.Tensor:
        return 2 * torch.log(z[:, 0].abs()) + torch.log(z[:, 1].abs())

    def valid(self, z: torch.Tensor) -> torch.Tensor:
        return (z[:, 0] > 0) & (z[:, 1] > 0)

    def inverse(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, b, c = self.frame
        x = torch.zeros(z.shape[0], self.n_atoms, 3, dtype=z.dtype, device=z.device)
        x[:, b, 2] = z[:, 0]
        x[:, c, 0] = z[:, 1]
        x[:, c, 2] = z[:, 2]
        x[:, self.rest] = z[:, 3:].reshape(z.shape[0], -1, 3)
        return x, self.log_jacobian(z)

    def to_config(self) -> dict[str, Any]:
        return {**super().to_config(), "frame": self.frame}


def choose_frame(reference: np.ndarray) -> list[int]:
    """Atoms (a, b, c): a nearest the centroid, b its nearest neighbour, c the nearest atom to
    a whose angle c-a-b has sin > 0.5 (else the most non-collinear)."""
    x = np.asarray(reference, dtype=float)
    d = np.linalg.norm(x[:, None] - x[None], axis=-1)
    a = int(np.argmin(np.linalg.norm(x - x.mean(0), axis=1)))
    b = int(min((i for i in range(len(x)) if i != a), key=lambda i: d[a, i]))
    others = sorted((i for i in range(len(x)) if i not in (a, b)), key=lambda i: d[a, i])

    def s(i: int) -> float:
        u, v = x[i] - x[a], x[b] - x[a]
        return float(np.linalg.norm(np.cross(u, v)) / (np.linalg.norm(u) * np.linalg.norm(v)))

    good = [i for i in others if s(i) > 0.5]
    return [a, b, good[0] if good else max(others, key=s)]


def make_coordinates(kind: str, reference: np.ndarray, numbers: np.ndarray,
                     **kw: Any) -> ClusterCoordinates:
    """``kind``: ``"zmatrix"`` or ``"frame"``; extra keywords from :meth:`to_config`."""
    if kind == "zmatrix":
        return ZMatrixCoordinates(reference, numbers, kw.get("order"), kw.get("partners"))
    if kind == "frame":
        return FrameCoordinates(reference, numbers, kw.get("frame"))
    raise InputError(f"coordinates kind must be 'zmatrix' or 'frame', got {kind!r}")


def coordinates_from_config(cfg: dict[str, Any]) -> ClusterCoordinates:
    rest = {k: v for k, v in cfg.items() if k not in ("kind", "reference", "numbers")}
    return make_coordinates(cfg["kind"], np.asarray(cfg["reference"]),
                            np.asarray(cfg["numbers"]), **rest)


# ------------------------------------------------------------------ permutations, symmetry
def kabsch(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Proper rotation R (3, 3) minimising |p @ R - q| for centred (N, 3) arrays."""
    u, _, vt = np.linalg.svd(p.T @ q)
    s = np.sign(np.linalg.det(u @ vt)) or 1.0
    return u @ np.diag([1.0, 1.0, s]) @ vt


def _assign(y: np.ndarray, ref: np.ndarray, numbers: np.ndarray) -> np.ndarray:
    """perm with y[perm] closest to ref, atoms of one element assigned among themselves."""
    perm = np.arange(len(ref))
    for z in np.unique(numbers):
        idx = np.flatnonzero(numbers == z)
        cost = ((ref[idx, None] - y[None, idx]) ** 2).sum(-1)
        rows, cols = linear_sum_assignment(cost)
        perm[idx[rows]] = idx[cols]
    return perm


def _frame_of(p: np.ndarray, i: int, j: int) -> np.ndarray:
    """Orthonormal frame (3, 3) (rows) from centred positions of atoms i and j."""
    e1 = p[i] / np.linalg.norm(p[i])
    v = p[j] - (p[j] @ e1) * e1
    e2 = v / np.linalg.norm(v)
    return np.stack([e1, e2, np.cross(e1, e2)])


def _refine(y: np.ndarray, ref: np.ndarray, numbers: np.ndarray, perm: np.ndarray,
            iterations: int) -> tuple[np.ndarray, float, float]:
    """Alternate alignment and assignment from ``perm``; (perm, RMSD Å, max deviation Å)."""
    for _ in range(iterations):
        new = _assign(y @ kabsch(y[perm], ref), ref, numbers)
        if np.array_equal(new, perm):
            break
        perm = new
    r = kabsch(y[perm], ref)
    dev = np.sqrt(((y[perm] @ r - ref) ** 2).sum(-1))
    return perm, float(np.sqrt((dev**2).mean())), float(dev.max())


def canonical_permutation(x: np.ndarray, reference: np.ndarray, numbers: np.ndarray,
                          iterations: int = 6, good_rmsd: float = 0.3,
                          unique_fraction: float = 0.25) -> np.ndarray:
    """(B, N) permutations p such that x[b, p[b]] matches the reference atom by atom.

    Alternates a proper-rotation alignment (Kabsch) with the optimal assignment of like atoms
    (Hungarian, scipy.optimize.linear_sum_assignment). Starts from the identity labelling; if
    the RMSD stays above ``good_rmsd`` Å, also from every alignment that puts a pair of atoms
    of x on the reference's most non-collinear pair; keeps the lowest RMSD. That search is
    skipped when every atom already lies within ``unique_fraction`` (0: never skip) of the
    reference's shortest like-atom distance of its site: a wrong labelling leaves some atom
    farther than that (a relabelled, rotated lj7 minimum with 0.05 Å noise converges from the
    identity to a wrong labelling with every atom within 0.5 of a bond of a site, but not
    within 0.25; tested against the full search). Of thermal lj7 frames at 18 K, 25-30 % are
    above 0.3 Å RMSD and ~1 % of them fail the test: ~40× faster. For a symmetric reference
    the result is one of the σ labellings related by its rotations.
    """
    x = np.asarray(x, dtype=float)
    ref = np.asarray(reference, dtype=float) - np.mean(reference, 0)
    numbers = np.asarray(numbers)
    n = len(ref)
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
    a, b = max(pairs, key=lambda p: np.linalg.norm(np.cross(ref[p[0]], ref[p[1]])))
    ref_frame = _frame_of(ref, a, b)
    dist = np.linalg.norm(ref[:, None] - ref[None], axis=-1)
    like = (numbers[:, None] == numbers[None]) & ~np.eye(n, dtype=bool)
    unique_dev = unique_fraction * float(dist[like].min()) if like.any() else np.inf
    out = np.empty(x.shape[:2], dtype=np.int64)
    for bi, xb in enumerate(x):
        y = xb - xb.mean(0)
        best, best_rmsd, max_dev = _refine(y, ref, numbers, np.arange(n), iterations)
        if best_rmsd > good_rmsd and max_dev >= unique_dev:
            for i, j in pairs:
                if numbers[i] != numbers[a] or numbers[j] != numbers[b]:
                    continue
                r = _frame_of(y, i, j).T @ ref_frame
                perm, rmsd, _ = _refine(y, ref, numbers, _assign(y @ r, ref, numbers),
                                        iterations)
                if rmsd < best_rmsd - 1e-12:
                    best, best_rmsd = perm, rmsd
        out[bi] = best
    return out


def symmetry_operations(reference: np.ndarray, numbers: np.ndarray,
                        tol: float = 0.05) -> list[tuple[np.ndarray, np.ndarray]]:
    """Point-group operations of a structure about its centroid: pairs (O (3, 3) orthogonal,
    perm (N,)) with (x - c) @ O.T == (x - c)[perm] within ``tol`` Å (like atoms only)."""
    x = np.asarray(reference, dtype=float)
    x = x - x.mean(0)
    numbers = np.asarray(numbers)
    n = len(x)
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
    a, b = max(pairs, key=lambda p: np.linalg.norm(np.cross(x[p[0]], x[p[1]])))
    if np.linalg.norm(np.cross(x[a], x[b])) < 1e-6:
        raise InputError("symmetry_operations: linear structures are not supported")
    inv = np.linalg.inv(np.stack([x[a], x[b], np.cross(x[a], x[b])], 1))
    found: list[tuple[np.ndarray, np.ndarray]] = []
    for i in range(n):
        for j in range(n):
            if i == j or numbers[i] != numbers[a] or numbers[j] != numbers[b]:
                continue
            for s in (1.0, -1.0):
                o = np.stack([x[i], x[j], s * np.cross(x[i], x[j])], 1) @ inv
                if np.abs(o @ o.T - np.eye(3)).max() > 1e-2:
                    continue
                dist = np.linalg.norm((x @ o.T)[:, None] - x[None], axis=-1)
                dist[numbers[:, None] != numbers[None]] = np.inf
                perm = dist.argmin(1)
                if dist.min(1).max() < tol and len(set(perm.tolist())) == n and not any(
                        np.abs(o - f).max() < 1e-3 for f, _ in found):
                    found.append((o, perm))
    return found


def point_group_order(reference: np.ndarray, numbers: np.ndarray, tol: float = 0.05) -> int:
    """Order h of the point group (proper and improper operations); 2·N!/h is the number of
    permutation-inversion versions of the structure."""
    return len(symmetry_operations(reference, numbers, tol))


def rotation_permutations(reference: np.ndarray, numbers: np.ndarray,
                          tol: float = 0.05) -> np.ndarray:
    """(σ, N) permutations realised by proper rotations (σ = rotational symmetry number)."""
    ops = symmetry_operations(reference, numbers, tol)
    return np.array([p for o, p in ops if np.linalg.det(o) > 0], dtype=np.int64)


__all__ = ["LOG_8PI2", "ClusterCoordinates", "FrameCoordinates", "ZMatrixCoordinates",
           "build_zmatrix", "canonical_permutation", "choose_frame", "coordinates_from_config",
           "kabsch", "make_coordinates", "point_group_order", "rotation_permutations",
           "symmetry_operations", "wrap"]
