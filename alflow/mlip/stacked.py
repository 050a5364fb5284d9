"""Inference form of a built-in committee: every member in one pass over a member axis.

A committee call on a small cluster (7 atoms, 1-64 configurations) is bound by the number of
torch operations, not by arithmetic: M members evaluated one after another cost M times the
operations. :class:`StackedCommittee` holds the M members' weights stacked on a leading member
axis (linear maps as batched matmuls, ``baddbmm``) and evaluates the dense layout of
:class:`alflow.mlip.model.BuiltinCore` for all members at once; the radial filters of all
layers come from one matmul. Its energies are the members' own within float rounding.

:meth:`StackedCommittee.energies_forces` (energies and forces of every member) computes the
pair geometry, radial basis and angular functions once and takes the forces by the chain rule
written out, without autograd; :meth:`StackedCommittee.total_energy` is differentiable (its
positions carry the member axis, (M, B, N, 3), so member m's energy depends on slice m
only). Built from the members' weights (detached) for inference; training keeps the
per-member modules.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from alflow.mlip.model import BuiltinCore, EnergyModel, _dense_index, envelope


def stackable(members: list) -> bool:
    """True if every member is an :class:`EnergyModel` around a :class:`BuiltinCore`."""
    return all(type(m) is EnergyModel and type(m.core) is BuiltinCore for m in members)


def _linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """Per-member linear map: x (M, ..., I) @ w (M, I, O) + b (M, O) -> (M, ..., O)."""
    m, i = x.shape[0], x.shape[-1]
    flat = x.reshape(m, -1, i)
    out = torch.bmm(flat, w) if b is None else torch.baddbmm(b[:, None, :], flat, w)
    return out.reshape(*x.shape[:-1], w.shape[-1])


class StackedCommittee:
    """M built-in members (same configuration) with weights stacked on a member axis.

    ``version`` identifies the members' weights it was built from (see :func:`weights_version`).
    """

    def __init__(self, members: list[EnergyModel]):
        if not stackable(members):
            raise TypeError("StackedCommittee takes EnergyModel members with a BuiltinCore")
        cores = [m.core for m in members]
        c0 = cores[0]

        def st(f) -> torch.Tensor:
            return torch.stack([f(c).detach() for c in cores])

        self.version = weights_version(members)
        self.n_members = len(members)
        self.max_l = c0.max_l
        self.features = c0.embed.weight.shape[1]
        self.cutoff = c0.rbf.cutoff
        self.p = c0.rbf.p
        self.freq = c0.rbf.freq.detach()
        self.norm = c0.rbf.norm
        self.embed = st(lambda c: c.embed.weight)  # (M, S, F)
        self.w_rad = st(lambda c: c.radial[0].weight.T)  # (M, K, H)
        self.b_rad = st(lambda c: c.radial[0].bias)
        # the scalar and angular filters of every layer: one map (M, H, layers * 2F)
        self.w_filt = st(lambda c: torch.cat([torch.cat([lay.filter_s.weight,
                                                         lay.filter_v.weight])
                                              for lay in c.layers]).T)
        self.layers = []
        for k in range(len(c0.layers)):
            def lay(c, k=k):
                return c.layers[k]
            self.layers.append((
                st(lambda c, lay=lay: (lay(c).lin.weight * c.inv_neigh).T),
                st(lambda c, lay=lay: lay(c).update[0].weight.T),
                st(lambda c, lay=lay: lay(c).update[0].bias),
                st(lambda c, lay=lay: lay(c).update[2].weight.T),
                st(lambda c, lay=lay: lay(c).update[2].bias)))
        self.readout = (st(lambda c: c.readout[0].weight.T), st(lambda c: c.readout[0].bias),
                        st(lambda c: c.readout[2].weight.T), st(lambda c: c.readout[2].bias))
        self.scale = torch.stack([m.scale.detach() for m in members])  # (M,)
        self.shift = torch.stack([m.shift.detach() for m in members])
        self.e0 = torch.stack([m.e0.detach() for m in members])  # (M, S) float64
        self._diagonals: dict[tuple, torch.Tensor] = {}
        self._pairs: dict[tuple, tuple] = {}

    def _quadratic(self, u: torch.Tensor) -> torch.Tensor:
        """The l = 2 functions of model._angular (..., 6) as two gathers and a product."""
        key = (u.dtype, u.device)
        if key not in self._pairs:
            s2 = 2.0**0.5
            self._pairs[key] = (torch.tensor([0, 1, 2, 0, 0, 1], device=u.device),
                                torch.tensor([0, 1, 2, 1, 2, 2], device=u.device),
                                torch.tensor([1, 1, 1, s2, s2, s2], dtype=u.dtype,
                                             device=u.device))
        i, j, w = self._pairs[key]
        return u.index_select(-1, i) * (u.index_select(-1, j) * w)

    def _diagonal(self, n: int, x: torch.Tensor) -> torch.Tensor:
        """cutoff² on the diagonal of an (N, N) matrix in x's dtype and device (cached)."""
        key = (n, x.dtype, x.device)
        if key not in self._diagonals:
            self._diagonals[key] = torch.eye(n, dtype=x.dtype, device=x.device) * self.cutoff**2
        return self._diagonals[key]

    def interaction_energy(self, x: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        """Interaction energies (M, B) eV (model dtype, without reference energies) of
        clusters x (M, B, N, 3) Å (member m's positions in x[m]); species (N,) or (B, N)."""
        m, b, n = x.shape[:3]
        sel, _, expand = _dense_index(n, x.device)
        vec = x[:, :, None, :, :] - x[:, :, :, None, :]  # [m, b, i, j] = x_j - x_i
        # the diagonal at the cutoff: its envelope, so its filters, are exactly 0
        r = torch.sqrt((vec * vec).sum(-1) + self._diagonal(n, x))
        rp = r.reshape(m, b, n * n).index_select(2, sel)  # (M, B, P + 1)
        rbf = torch.sin(rp[..., None] * self.freq) * (self.norm / rp)[..., None]
        cut = envelope(rp / self.cutoff, self.p)
        radial = F.silu(_linear(rbf, self.w_rad, self.b_rad)) * cut[..., None]
        filt = _linear(radial, self.w_filt, None).index_select(2, expand)
        filt = filt.reshape(m, b, n, n, -1)  # (M, B, N, N, layers * 2F)
        u = vec / r[..., None]
        ang = u if self.max_l == 1 else torch.cat([u, self._quadratic(u)], dim=-1)
        ang_t = ang.transpose(-1, -2)  # (M, B, N, A, N)
        h = self.embed[:, species]
        h = h[:, None].expand(m, b, n, -1) if species.dim() == 1 else h
        filters = filt.split(self.features, dim=-1)  # (its backward is one cat, no zeros)
        for k, (w_lin, w1, b1, w2, b2) in enumerate(self.layers):
            ws, wv = filters[2 * k], filters[2 * k + 1]
            xs, xv = _linear(h, w_lin, None).chunk(2, dim=-1)
            s = (ws * xs[:, :, None]).sum(3)
            a = torch.matmul(ang_t, wv * xv[:, :, None])  # sum_j ang_ija m_ijf
            if self.max_l >= 2:
                a1, a2 = a.split([3, 6], dim=-2)
                inv = [s, a1.square().sum(-2), a2.square().sum(-2)]
            else:
                inv = [s, a.square().sum(-2)]
            h = h + _linear(F.silu(_linear(torch.cat(inv, dim=-1), w1, b1)), w2, b2)
        w1, b1, w2, b2 = self.readout
        node = _linear(F.silu(_linear(h, w1, b1)), w2, b2).squeeze(-1)  # (M, B, N)
        return (node * self.scale[:, None, None] + self.shift[:, None, None]).sum(-1)

    def reference_energy(self, species: torch.Tensor, b: int) -> torch.Tensor:
        """Sums of per-element reference energies (M, B) eV, float64."""
        e = self.e0[:, species].sum(-1)
        return e[:, None].expand(-1, b) if species.dim() == 1 else e

    def total_energy(self, x: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        """Total energies (M, B) eV, float64, of x (M, B, N, 3) or (B, N, 3) Å (shared by
        all members; gradients flow to x)."""
        if x.dim() == 3:
            x = x.expand(self.n_members, *x.shape)
        return (self.interaction_energy(x, species).double()
                + self.reference_energy(species, x.shape[1]))

    def energies_forces(self, positions: torch.Tensor, species: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """Clusters (B, N, 3) Å -> energies (M, B) eV float64, forces (M, B, N, 3) eV/Å in
        the weights' dtype.

        Forces by the chain rule written out (no autograd): the pair geometry, radial basis,
        envelope and angular functions and their derivatives are computed once for all
        members, everything after them per member on the member axis."""
        x = positions.detach().to(self.w_rad.device, self.w_rad.dtype)
        mm, (b, n), f = self.n_members, x.shape[:2], self.features
        sel, _, expand = _dense_index(n, x.device)
        # shared geometry: pairs [b, i, j] = x_j - x_i, diagonal at the cutoff (filters 0)
        vec = x[:, None, :, :] - x[:, :, None, :]
        r = torch.sqrt((vec * vec).sum(-1) + self._diagonal(n, x))  # (B, N, N)
        u = vec / r[..., None]
        rp = r.reshape(b, n * n).index_select(1, sel)  # (B, P + 1) radial pairs
        npair = rp.shape[1]
        inv_r = (1.0 / rp)[..., None]
        t = rp[..., None] * self.freq
        rbf = torch.sin(t) * (self.norm * inv_r)  # (B, P + 1, K)
        drbf = (torch.cos(t) * (self.freq * self.norm) - rbf) * inv_r  # d rbf / d r
        xc = (rp / self.cutoff).clamp(max=1.0)
        env = envelope(xc, self.p)
        denv = _envelope_slope(xc, self.p) * (rp < self.cutoff) / self.cutoff
        ang = u if self.max_l == 1 else torch.cat([u, self._quadratic(u)], dim=-1)
        ang_t = ang.transpose(-1, -2)  # (B, N, A, N)
        # members: radial filters of every layer, then the layers and the readout
        flat = rbf.reshape(1, b * npair, -1).expand(mm, -1, -1)
        z = torch.baddbmm(self.b_rad[:, None, :], flat, self.w_rad)  # (M, B (P + 1), H)
        sig = torch.sigmoid(z)
        sz = z * sig
        envf = env.reshape(1, -1, 1)
        filt = torch.bmm(sz * envf, self.w_filt).reshape(mm, b, npair, -1)
        filt = filt.index_select(2, expand).reshape(mm, b, n, n, -1)
        filters = filt.split(f, dim=-1)
        h = self.embed[:, species]
        h = h[:, None].expand(mm, b, n, -1) if species.dim() == 1 else h
        saved = []
        for k, (w_lin, w1, b1, w2, b2) in enumerate(self.layers):
            ws, wv = filters[2 * k], filters[2 * k + 1]
            xs, xv = _linear(h, w_lin, None).chunk(2, dim=-1)
            msg = wv * xv[:, :, None]
            s = (ws * xs[:, :, None]).sum(3)
            a = torch.matmul(ang_t, msg)  # (M, B, N, A, F): sum_j ang_ija msg_ijf
            y1 = _linear(torch.cat([s, *self._squares(a)], dim=-1), w1, b1)
            sg1 = torch.sigmoid(y1)
            h = h + _linear(y1 * sg1, w2, b2)
            saved.append((ws, wv, xs, xv, msg, a, y1, sg1))
        w1, b1, w2, b2 = self.readout
        y = _linear(h, w1, b1)
        sg = torch.sigmoid(y)
        node = _linear(y * sg, w2, b2).squeeze(-1)  # (M, B, N)
        energy = (node * self.scale[:, None, None] + self.shift[:, None, None]).sum(-1)
        # backward: dE/dh of the readout, then through the layers in reverse
        gy = (self.scale[:, None] * w2[:, :, 0])[:, None, None, :] * _dsilu(y, sg)
        gh = _linear(gy, w1.transpose(1, 2), None)
        gfilt: list[torch.Tensor] = []
        gang = None
        for (w_lin, w1, _, w2, _), (ws, wv, xs, xv, msg, a, y1, sg1) in zip(
                reversed(self.layers), reversed(saved), strict=True):
            gy1 = _linear(gh, w2.transpose(1, 2), None) * _dsilu(y1, sg1)
            ginv = _linear(gy1, w1.transpose(1, 2), None)
            gs = ginv[..., :f]
            ga = 2 * a * self._per_component(ginv[..., f:])  # (M, B, N, A, F)
            gmsg = torch.matmul(ang, ga)  # (M, B, N, N, F)
            ga_ang = torch.matmul(msg, ga.transpose(-1, -2))  # (M, B, N, N, A)
            gang = ga_ang if gang is None else gang + ga_ang
            gfilt = [gs[:, :, :, None] * xs[:, :, None], gmsg * xv[:, :, None], *gfilt]
            gx_sv = torch.cat([(gs[:, :, :, None] * ws).sum(2), (gmsg * wv).sum(2)], dim=-1)
            gh = gh + _linear(gx_sv, w_lin.transpose(1, 2), None)
        gf = torch.cat(gfilt, dim=-1).reshape(mm, b, n * n, -1)
        gfp = gf.new_zeros(mm, b, npair, gf.shape[-1]).index_add_(2, expand, gf)
        grad_radial = torch.bmm(gfp.reshape(mm, b * npair, -1), self.w_filt.transpose(1, 2))
        gz = grad_radial * envf * _dsilu(z, sig)
        genv = (grad_radial * sz).sum(-1)  # (M, B (P + 1))
        grbf = torch.bmm(gz, self.w_rad.transpose(1, 2)).reshape(mm, b, npair, -1)
        grp = (grbf * drbf).sum(-1) + genv.reshape(mm, b, npair) * denv
        gr = grp.new_zeros(mm, b, n * n).index_copy_(2, sel, grp).reshape(mm, b, n, n)
        gu = gang[..., :3]
        if self.max_l >= 2:
            i, j, w = self._pairs[(u.dtype, u.device)]
            d = gang[..., 3:] * w
            gu = (gu.index_add(-1, i, d * u.index_select(-1, j))
                  .index_add_(-1, j, d * u.index_select(-1, i)))
        gvec = gr[..., None] * u + (gu - u * (u * gu).sum(-1, keepdim=True)) / r[..., None]
        forces = gvec.sum(3) - gvec.sum(2)  # -dE/dx: x_j enters vec[i, j] with +, x_i with -
        return energy.double() + self.reference_energy(species, b), forces

    def _squares(self, a: torch.Tensor) -> list[torch.Tensor]:
        """Rotation invariants of the moments a (..., A, F): |A1|^2 (and |A2|^2)."""
        if self.max_l == 1:
            return [a.square().sum(-2)]
        a1, a2 = a.split([3, 6], dim=-2)
        return [a1.square().sum(-2), a2.square().sum(-2)]

    def _per_component(self, gq: torch.Tensor) -> torch.Tensor:
        """Gradients of the invariants (..., L F) -> per angular component (..., A, F)."""
        f = self.features
        if self.max_l == 1:
            return gq[..., None, :]
        q1, q2 = gq[..., None, :f], gq[..., None, f:]
        return torch.cat([q1.expand(*q1.shape[:-2], 3, f), q2.expand(*q2.shape[:-2], 6, f)],
                         dim=-2)


def _dsilu(z: torch.Tensor, sig: torch.Tensor) -> torch.Tensor:
    """Derivative of SiLU at z, with sig = sigmoid(z)."""
    return sig * (1 + z * (1 - sig))


def _envelope_slope(xc: torch.Tensor, p: int) -> torch.Tensor:
    """d envelope / dx at x = xc (the derivative of :func:`envelope`'s polynomial)."""
    a = (p + 1) * (p + 2) / 2
    b = p * (p + 2)
    c = p * (p + 1) / 2
    return xc ** (p - 1) * (xc * ((p + 1) * b - (p + 2) * c * xc) - p * a)


def weights_version(members: list) -> tuple:
    """Identity of the members' current weights: storage, dtype and in-place version of
    every parameter and buffer (changes when they are trained, loaded or cast)."""
    return tuple((t.data_ptr(), t.dtype, t._version) for m in members
                 for t in (*m.parameters(), *m.buffers()))


__all__ = ["StackedCommittee", "stackable", "weights_version"]
