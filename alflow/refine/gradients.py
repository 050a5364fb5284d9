"""Gradients of a trajectory loss with respect to the potential's parameters.

A loss of the frames of NVE segments, ``L(X, V)`` with positions and velocities
(F, R, N, 3), is differentiated in two stages: autograd gives the cotangents ∂L/∂X, ∂L/∂V
of the recorded frames, then these are pulled back through the dynamics to the parameters.
The pull-back goes through the last ``gradient_steps`` K of each segment only (gradient
truncation: the state K steps before the end is held fixed), in one of two ways:

- ``direct``: back-propagation through the K steps' autograd graph (memory grows with K);
- ``adjoint``: the adjoint of velocity Verlet. Starting from the last state and cotangent,
  each step is undone exactly (velocity Verlet with −dt), the step is redone with a graph
  and its vector-Jacobian product carries the cotangent one step back and adds the step's
  parameter gradient. Memory does not grow with K (one step's graph at a time); time is
  about three force evaluations per step against one.

With K equal to the segment length both give the full gradient of the loss (for fixed starts);
they agree to rounding.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from ase import units

from alflow.periodic import VerletList
from alflow.refine.dynamics import Box, State, forces, nve, vv_step
from alflow.refine.potential import TrainableLJ

FrameLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class SegmentGradient:
    """The loss, its gradient (one tensor per trainable log-parameter of the model), and the
    detached frames (F, R, N, 3) it was computed from (positions Å, velocities ASE units)."""

    loss: float
    grads: list[torch.Tensor]
    positions: torch.Tensor
    velocities: torch.Tensor


def segment_gradient(model: TrainableLJ, box: Box, start: State, dt_fs: float, steps: int,
                     record_every: int, frame_loss: FrameLoss, gradient_steps: int,
                     method: Literal["adjoint", "direct"] = "adjoint",
                     skin: float = 1.0) -> SegmentGradient:
    """Run NVE segments of ``steps`` from ``start`` (one per replica), record every
    ``record_every`` steps, and differentiate ``frame_loss`` through the last
    ``gradient_steps`` steps (see the module docstring)."""
    if not 1 <= gradient_steps <= steps:
        raise ValueError(f"gradient_steps must be in [1, {steps}], got {gradient_steps}")
    if method not in ("adjoint", "direct"):
        raise ValueError(f"method must be 'adjoint' or 'direct', got {method!r}")
    cut = steps - gradient_steps
    xs, vs, end, at_cut = nve(model, box, start, dt_fs, steps, record_every, skin, keep=cut)
    rec = list(range(0, steps + 1, record_every))
    cell = box.cell(xs.shape[1], xs.dtype)
    pairs = VerletList(model.cutoff, skin)
    inv_m = (1.0 / box.masses(xs.dtype))[:, None]
    dt = dt_fs * units.fs
    frames_x = xs.clone().requires_grad_(True)
    frames_v = vs.clone().requires_grad_(True)
    with torch.enable_grad():
        loss = frame_loss(frames_x, frames_v)
        gx, gv = torch.autograd.grad(loss, (frames_x, frames_v), allow_unused=True)
    gx = torch.zeros_like(frames_x) if gx is None else gx
    gv = torch.zeros_like(frames_v) if gv is None else gv
    cot = {s: (gx[i], gv[i]) for i, s in enumerate(rec) if s > cut}
    leaves = model.leaves()
    if method == "direct":
        grads = _direct(model, (at_cut.positions, at_cut.velocities), cut, steps, cot, leaves,
                        inv_m, dt, cell, pairs)
    else:
        f = forces(model, end.positions, cell, pairs, False).detach()
        grads = _adjoint(model, (end.positions, end.velocities, f), cut, steps, cot, leaves,
                         inv_m, dt, cell, pairs)
    return SegmentGradient(float(loss.detach()), grads, frames_x.detach(), frames_v.detach())


def _zeros_if_none(grads, like: list[torch.Tensor]) -> list[torch.Tensor]:
    return [torch.zeros_like(t) if g is None else g for g, t in zip(grads, like, strict=True)]


def _direct(model, at_cut, cut, steps, cot, leaves, inv_m, dt, cell, pairs
            ) -> list[torch.Tensor]:
    """Back-propagation through the graph of steps cut+1..steps."""
    outs, cots = [], []
    with torch.enable_grad():
        x, v = at_cut
        f = forces(model, x, cell, pairs, True)
        for step in range(cut + 1, steps + 1):
            x, v, f = vv_step(model, x, v, f, inv_m, dt, cell, pairs, create_graph=True)
            if step in cot:
                outs += [x, v]
                cots += list(cot[step])
        if not outs:
            return [torch.zeros_like(t) for t in leaves]
        grads = torch.autograd.grad(outs, leaves, cots, allow_unused=True)
    return _zeros_if_none(grads, leaves)


def _adjoint(model, end, cut, steps, cot, leaves, inv_m, dt, cell, pairs
             ) -> list[torch.Tensor]:
    """The adjoint sweep from the last state back to step ``cut`` (constant memory)."""
    x, v, f = end
    zero = torch.zeros_like(x)
    a_x, a_v = cot.get(steps, (zero, zero))
    total = [torch.zeros_like(t) for t in leaves]
    for step in range(steps, cut, -1):
        xp, vp, fp = (t.detach() for t in vv_step(model, x, v, f, inv_m, -dt, cell, pairs))
        with torch.enable_grad():
            xg, vg = xp.clone().requires_grad_(True), vp.clone().requires_grad_(True)
            fg = forces(model, xg, cell, pairs, True)
            x1, v1, _ = vv_step(model, xg, vg, fg, inv_m, dt, cell, pairs, create_graph=True)
            out = torch.autograd.grad((x1, v1), (xg, vg, *leaves), (a_x, a_v),
                                      allow_unused=True)
        a_x, a_v = out[0].detach(), out[1].detach()
        for i, g in enumerate(out[2:]):
            if g is not None:
                total[i] = total[i] + g.detach()
        if step - 1 in cot:
            a_x, a_v = a_x + cot[step - 1][0], a_v + cot[step - 1][1]
        x, v, f = xp, vp, fp
    return total
