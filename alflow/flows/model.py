"""Coupling flows on mixed real/circular coordinates (bonds, angles | torsions).

A :class:`CouplingFlow` maps a base sample u to data z = f(u) through a fixed normalisation and
``layers`` coupling layers. Each layer keeps half of the dimensions (a fixed random split per
layer) and transforms the other half element-wise with parameters from an MLP of the kept half
(circular dimensions enter the MLP as cos, sin):

- real dimensions: a monotonic rational-quadratic spline on [-bound, bound] with identity tails
  (zuko's ``MonotonicRQSTransform``, written out in :func:`_rqs`: one pass for all
  transformed dimensions, the inverse with its log-det), or an affine map
  (``transform: affine``);
- circular dimensions: a circular spline (the same RQS on [-π, π], whose end-knot slopes are
  1, so it is a C¹ diffeomorphism of the circle) followed by a learned circular shift, as in
  Rezende et al. 2020 and zuko's NCSF.

Base: standard normal on real dimensions, von Mises(0, κ_d) on circular ones (κ from the
training data), so log q is exactly normalised on ℝ^r × (S¹)^c. zuko's flows (NSF, NCSF) are
all-real or all-circular; mixing both in one flow is why the coupling layer is our own (≈80
lines); the splines follow zuko's. Log-determinants are exact (tested against
autograd Jacobians).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from alflow.config import StrictModel
from alflow.rng import drawing_from


def _wrap(a: torch.Tensor) -> torch.Tensor:
    return torch.remainder(a + math.pi, 2 * math.pi) - math.pi


class FlowConfig(StrictModel):
    """Architecture of one state's flow."""

    coordinates: Literal["zmatrix", "frame"] = Field(
        "zmatrix", description="internal coordinates or the three-atom Cartesian frame")
    transform: Literal["spline", "affine"] = "spline"
    layers: int = Field(8, ge=1)
    hidden: int = Field(64, ge=4, description="width of the 2-layer conditioner MLPs")
    bins: int = Field(8, ge=2, description="spline bins")
    bound: float = Field(5.0, gt=0, description="spline interval, in normalised units")
    seed: int = Field(0, description="seed of the dimension splits and initial weights")
    base_dof: float | None = Field(None, gt=2, description="Student-t base with this many "
                                   "degrees of freedom on real dimensions (heavier tails than "
                                   "the target keep importance weights bounded); None: normal")


class _Coupling(nn.Module):
    def __init__(self, keep: torch.Tensor, circ: torch.Tensor, cfg: FlowConfig):
        super().__init__()
        self.register_buffer("keep", keep)
        self.register_buffer("trans", ~keep)
        self.register_buffer("circ", circ)
        self.cfg = cfg
        n_keep_in = int((keep & ~circ).sum()) + 2 * int((keep & circ).sum())
        self.n_trans = int((~keep).sum())
        k = cfg.bins
        self.n_par = 3 * k
        self.net = nn.Sequential(nn.Linear(n_keep_in, cfg.hidden), nn.SiLU(),
                                 nn.Linear(cfg.hidden, cfg.hidden), nn.SiLU(),
                                 nn.Linear(cfg.hidden, self.n_trans * self.n_par))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def _params(self, u: torch.Tensor) -> torch.Tensor:
        kept = u[:, self.keep]
        c = self.circ[self.keep]
        feats = torch.cat([kept[:, ~c], torch.cos(kept[:, c]), torch.sin(kept[:, c])], -1)
        return self.net(feats).view(u.shape[0], self.n_trans, self.n_par)

    def transform(self, u: torch.Tensor, inverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
        p = self._params(u)
        x = u[:, self.trans]
        c = self.circ[self.trans]
        k = self.cfg.bins
        shift = p[..., 3 * k - 1]  # circular dimensions' shift (unused by real ones)
        if self.cfg.transform == "affine":
            y, ladj = x.clone(), torch.zeros(u.shape[0], dtype=u.dtype, device=u.device)
            if (~c).any():
                pr = p[:, ~c]
                log_s = 2.0 * torch.tanh(pr[..., 0] / 2.0)
                shift_r = pr[..., 1]
                if inverse:
                    y[:, ~c], la = (x[:, ~c] - shift_r) * torch.exp(-log_s), -log_s
                else:
                    y[:, ~c], la = x[:, ~c] * torch.exp(log_s) + shift_r, log_s
                ladj = ladj + la.sum(-1)
            if c.any():
                yc, la = _circular(p[:, c], x[:, c], shift[:, c], math.pi, k, inverse)
                y[:, c] = yc
                ladj = ladj + la.sum(-1)
        else:  # one spline for every transformed dimension: on [-bound, bound] for real
            # ones, [-π, π] for circular ones (then the shift)
            bound = torch.full(c.shape, self.cfg.bound, dtype=x.dtype, device=x.device)
            bound[c] = math.pi
            if c.any():
                y, la = _circular(p, x, torch.where(c, shift, 0.0), bound, k, inverse,
                                  circular=c)
            else:
                y, la = _rqs(p, x, bound, k, inverse)
            ladj = la.sum(-1)
        out = u.clone()
        out[:, self.trans] = y
        return out, ladj


def _circular(p: torch.Tensor, x: torch.Tensor, shift: torch.Tensor,
              bound: float | torch.Tensor, k: int, inverse: bool,
              circular: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The spline on [-bound, bound] then a circular shift (wrapped to [-π, π)) of the
    ``circular`` dimensions (all when None), or its inverse; (y, log |dy/dx|)."""
    def wrap(v: torch.Tensor) -> torch.Tensor:
        return _wrap(v) if circular is None else torch.where(circular, _wrap(v), v)
    if inverse:
        return _rqs(p, wrap(x - shift), bound, k, True)
    y, la = _rqs(p, x, bound, k, False)
    return wrap(y + shift), la


def _rqs(p: torch.Tensor, x: torch.Tensor, bound: float | torch.Tensor, k: int,
         inverse: bool, slope: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """Monotonic rational-quadratic spline with identity tails (Durkan et al. 2019;
    ``zuko.transforms.MonotonicRQSTransform``'s parametrisation and formulas) of x (B, D) on
    [-bound, bound] (a float or (D,): the knots scale with it, the slopes do not), from
    unconstrained parameters p (B, D, ≥ 3k − 1): widths, heights, inner-knot derivatives.
    Forward or inverse in one pass; returns y (B, D) and log |dy/dx| (B, D) of the direction
    taken (the inverse's from the same bin, not from a second forward call)."""
    ls = math.log(slope)
    w, h, d = p[..., :k], p[..., k:2 * k], p[..., 2 * k:3 * k - 1]
    # softmax written out (torch's is slow on short rows): the squashed logits lie within
    # ±|log slope| / 2, so exp cannot overflow
    w = (w / (1 + (2 * w / ls).abs())).exp()
    w = w / w.sum(-1, keepdim=True)
    h = (h / (1 + (2 * h / ls).abs())).exp()
    h = h / h.sum(-1, keepdim=True)
    d = torch.nn.functional.pad(d / (1 + (d / ls).abs()), (1, 1)).exp()
    b = bound[:, None] if isinstance(bound, torch.Tensor) else bound
    hor = b * (2 * torch.cumsum(torch.nn.functional.pad(w, (1, 0)), -1) - 1)  # (B, D, k + 1)
    ver = b * (2 * torch.cumsum(torch.nn.functional.pad(h, (1, 0)), -1) - 1)
    j = ((ver if inverse else hor) < x[..., None]).sum(-1) - 1
    mask = (j >= 0) & (j < k)
    j = j % k
    jj = torch.stack((j, j + 1), -1)
    x0, x1 = hor.gather(-1, jj).unbind(-1)
    y0, y1 = ver.gather(-1, jj).unbind(-1)
    d0, d1 = d.gather(-1, jj).unbind(-1)
    dy = y1 - y0
    s = dy / (x1 - x0)
    curve = d0 + d1 - 2 * s
    if inverse:
        y_ = mask * (x - y0)
        a = dy * (s - d0) + y_ * curve
        bb = dy * d0 - y_ * curve
        cc = -s * y_
        z = 2 * cc / (-bb - (bb**2 - 4 * a * cc).sqrt())
        out = x0 + z * (x1 - x0)
    else:
        z = mask * (x - x0) / (x1 - x0)
        out = y0 + dy * (s * z**2 + d0 * z * (1 - z)) / (s + curve * z * (1 - z))
    zz = z * (1 - z)
    jac = s**2 * (2 * s * zz + d0 * (1 - z) ** 2 + d1 * z**2) / (s + curve * zz) ** 2
    ladj = mask * jac.log()
    return torch.where(mask, out, x), -ladj if inverse else ladj


def _von_mises(kappa: torch.Tensor, n: int, generator: torch.Generator | None
               ) -> torch.Tensor:
    """n draws (n, D) of von Mises(0, κ_d) angles in [-π, π), from ``generator``: Best &
    Fisher's (1979) rejection sampler as ``torch.distributions.VonMises`` runs it (in float64),
    without its round trip through the global random state (a reseed per call)."""
    k = kappa.double()
    tau = 1 + (1 + 4 * k**2).sqrt()
    rho = (tau - (2 * tau).sqrt()) / (2 * k)
    r = torch.where(k < 1e-5, 1 / k + k, (1 + rho**2) / (2 * rho))
    x = torch.zeros((n, len(k)), dtype=torch.float64, device=k.device)
    done = torch.zeros_like(x, dtype=torch.bool)
    while not bool(done.all()):
        u1, u2, u3 = torch.rand((3, *x.shape), dtype=torch.float64, device=k.device,
                                generator=generator).unbind()
        z = torch.cos(math.pi * u1)
        f = (1 + r * z) / (r + z)
        c = k * (r - f)
        accept = ~done & (((c * (2 - c) - u2) > 0) | ((c / u2).log() + 1 - c >= 0))
        x = torch.where(accept, (u3 - 0.5).sign() * f.acos(), x)
        done = done | accept
    return (x + math.pi) % (2 * math.pi) - math.pi


def _gamma(shape: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Gamma(shape, 1) samples drawn from ``generator``."""
    return torch._standard_gamma(shape, generator=generator)


class CouplingFlow(nn.Module):
    """Density q(z) on ℝ^r × (S¹)^c; ``circular`` (dim,) bool marks the circular dimensions.

    ``log_prob(z) -> (B,)``, ``sample(n) -> (z (n, dim), log q (n,))``, ``rsample`` keeps the
    graph for reverse-KL training. Set the normalisation from data with :meth:`fit_normalisation`
    before training. The coupling masks are drawn from ``cfg.seed``, the initial weights from
    ``init`` (default: a generator seeded with ``cfg.seed``), never from torch's global one.
    """

    def __init__(self, dim: int, circular: torch.Tensor, cfg: FlowConfig | None = None,
                 init: torch.Generator | None = None):
        super().__init__()
        self.cfg = cfg or FlowConfig()
        circ = torch.as_tensor(circular, dtype=torch.bool)
        self.dim = dim
        self.register_buffer("circ", circ)
        self.register_buffer("loc", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))
        self.register_buffer("kappa", torch.ones(dim))
        g = torch.Generator().manual_seed(self.cfg.seed)
        weights = init if init is not None else torch.Generator().manual_seed(self.cfg.seed)
        layers = []
        for i in range(self.cfg.layers):
            perm = torch.randperm(dim, generator=g)
            keep = torch.zeros(dim, dtype=torch.bool)
            keep[perm[: dim // 2]] = True
            if i % 2:
                keep = ~keep
            with drawing_from(weights):
                layers.append(_Coupling(keep, circ, self.cfg))
        self.layers = nn.ModuleList(layers)

    @torch.no_grad()
    def fit_normalisation(self, z: torch.Tensor) -> None:
        """Mean/std of real dimensions, circular mean and von Mises κ of circular ones."""
        z = z.to(self.loc)
        c = self.circ
        mean = z.mean(0)
        std = z.std(0).clamp_min(1e-6)
        cm = torch.complex(torch.cos(z), torch.sin(z)).mean(0)
        r = cm.abs().clamp(1e-6, 1 - 1e-6)
        kappa = r * (2 - r**2) / (1 - r**2)  # Banerjee et al. approximation of A⁻¹(R)
        self.loc.copy_(torch.where(c, torch.angle(cm), mean))
        self.scale.copy_(torch.where(c, torch.ones_like(std), std))
        self.kappa.copy_(torch.where(c, kappa, torch.ones_like(kappa)))

    def _base_log_prob(self, u: torch.Tensor) -> torch.Tensor:
        c = self.circ
        nu = self.cfg.base_dof
        if nu is None:
            lp_r = -0.5 * u**2 - 0.5 * math.log(2 * math.pi)
        else:  # unit-variance Student-t: u = sqrt((ν−2)/ν) t
            s2 = (nu - 2.0)
            lp_r = (math.lgamma((nu + 1) / 2) - math.lgamma(nu / 2) - 0.5 * math.log(math.pi * s2)
                    - (nu + 1) / 2 * torch.log1p(u**2 / s2))
        k = self.kappa.to(u)
        lp_c = k * torch.cos(u) - math.log(2 * math.pi) - torch.log(torch.special.i0e(k)) - k
        return torch.where(c, lp_c, lp_r).sum(-1)

    def _base_sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        dt, dev = self.loc.dtype, self.loc.device
        u = torch.randn(n, self.dim, dtype=dt, device=dev, generator=generator)
        if self.cfg.base_dof is not None:  # normal / sqrt(χ²_ν / (ν−2)): unit-variance t
            nu = self.cfg.base_dof
            chi2 = 2.0 * _gamma(torch.full((n, self.dim), nu / 2, dtype=dt, device=dev),
                                generator)
            u = u / torch.sqrt(chi2 / (nu - 2.0))
        if self.circ.any():
            u[:, self.circ] = _von_mises(self.kappa[self.circ], n, generator).to(dt)
        return u

    def _normalise(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        u = torch.where(self.circ, _wrap(z - self.loc), (z - self.loc) / self.scale)
        return u, -torch.log(self.scale).sum().expand(z.shape[0])

    def _denormalise(self, u: torch.Tensor) -> torch.Tensor:
        return torch.where(self.circ, _wrap(u + self.loc), u * self.scale + self.loc)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log q(z) (B,) for z (B, dim) (circular entries in [-π, π))."""
        u, ladj = self._normalise(z)
        for layer in reversed(self.layers):
            u, la = layer.transform(u, inverse=True)
            ladj = ladj + la
        return self._base_log_prob(u) + ladj

    def rsample(self, n: int, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """n samples z (n, dim) and log q(z) (n,), differentiable in the flow's parameters."""
        u = self._base_sample(n, generator)
        logq = self._base_log_prob(u)
        for layer in self.layers:
            u, la = layer.transform(u, inverse=False)
            logq = logq - la
        logq = logq - torch.log(self.scale).sum()
        return self._denormalise(u), logq

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.rsample(n, generator)

    def config(self) -> dict[str, Any]:
        return {"dim": self.dim, "circular": self.circ.tolist(), "flow": self.cfg.model_dump()}


__all__ = ["CouplingFlow", "FlowConfig"]
