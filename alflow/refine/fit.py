"""The refinement loop: Adam (or Levenberg–Marquardt) against the weighted loss of all
targets, on the log-parameters of Lennard-Jones or the weights of a committee MLIP.

Each iteration at parameters θ:

1. samples: NVT Langevin frames of R replicas (:func:`alflow.refine.dynamics.nvt`). They are
   reused while the reweighting's effective sample size stays above ``min_ess_fraction`` of
   the samples; a dynamical target needs fresh starts at θ, so it resimulates every iteration
   (a short re-equilibration from the previous end states).
2. static targets (g(r), mean potential energy per atom U): reweighted averages and their
   gradients (DiffTRe, :mod:`alflow.refine.reweight`); losses ``w · mean_r (g − g_target)²``
   and ``w · ((U − U_target) / U_target)²``.
3. dynamical targets: one NVE segment per replica from the NVT end states, gradient through
   the last K steps (:mod:`alflow.refine.gradients`); self-diffusion from the MSD slope,
   loss ``w · ((D − D_target) / D_target)²``; VDOS, loss ``w · ∫(vdos − target)² dν``.
4. for an MLIP, the anchor: ``label_weight`` × its members' training loss on the labels.
5. an Adam step (log ε, log σ or the MLIP's weights) or a Levenberg–Marquardt step.

The observables before (at the initial θ) and after (a new simulation at the fitted θ, no
reweighting) are reported with their standard errors over replicas.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from ase import units

from alflow.refine import observables as obs
from alflow.refine import sensitivity
from alflow.refine.config import RefineConfig
from alflow.refine.dynamics import Box, State, lattice_start, nve, nvt
from alflow.refine.gradients import segment_gradient
from alflow.refine.mlip import TrainableMLIP
from alflow.refine.potential import TrainableLJ
from alflow.refine.reweight import (
    Ensemble,
    energy_per_atom,
    ess_fraction,
    log_weights,
    make_ensemble,
    weighted_average,
)
from alflow.refine.targets import rdf_grid, read_table

log = logging.getLogger(__name__)

ENERGY = "potential_energy_ev_per_atom"


@dataclass
class Targets:
    """Target data on the grids the box computes: g(r) at ``rdf_r`` Å; D in Å²/ps; VDOS
    (1/THz, unit area) at ``vdos_freq`` THz."""

    rdf_r: torch.Tensor | None = None
    rdf_g: torch.Tensor | None = None
    rdf_width: float = 0.05
    rdf_weight: float = 1.0
    diffusion: float | None = None
    diffusion_weight: float = 1.0
    vdos_freq: torch.Tensor | None = None
    vdos: torch.Tensor | None = None
    vdos_weight: float = 1.0
    energy: float | None = None
    energy_weight: float = 1.0

    @property
    def dynamical(self) -> bool:
        return self.diffusion is not None or self.vdos is not None


def load_targets(cfg: RefineConfig) -> Targets:
    """Read the target files of ``cfg`` onto the grids its box can compute (InputError
    naming the file otherwise)."""
    t = Targets(diffusion=cfg.targets.diffusion_coefficient_A2_per_ps,
                diffusion_weight=cfg.targets.diffusion_weight,
                energy=cfg.targets.potential_energy_ev_per_atom,
                energy_weight=cfg.targets.potential_energy_weight)
    if cfg.targets.rdf is not None:
        r, g = read_table(cfg.targets.rdf.file, ("r_angstrom", "g"))
        r, g = rdf_grid(r, g, cfg.system.box_a / 2, cfg.targets.rdf.width_a,
                        cfg.targets.rdf.file)
        t.rdf_r, t.rdf_g = torch.as_tensor(r), torch.as_tensor(g)
        t.rdf_width, t.rdf_weight = cfg.targets.rdf.width_a, cfg.targets.rdf.weight
    if cfg.targets.vdos is not None:
        f, d = read_table(cfg.targets.vdos.file, ("frequency_thz", "vdos"))
        t.vdos_freq = torch.as_tensor(f)
        t.vdos = torch.as_tensor(d / np.trapezoid(d, f))
        t.vdos_weight = cfg.targets.vdos.weight
    return t


def box_of(cfg: RefineConfig) -> Box:
    s = cfg.system
    return Box(s.element, s.mass_amu, s.n_atoms, s.box_a, s.temperature_k)


def model_of(cfg: RefineConfig) -> TrainableLJ | TrainableMLIP:
    p = cfg.potential
    if p.kind == "mlip":
        return TrainableMLIP(p.model_dir, box_of(cfg).numbers, p.labels)
    return TrainableLJ(p.epsilon_ev, p.sigma_a, p.cutoff_a, tuple(p.trainable))


@dataclass
class Estimate:
    """An observable's value and standard error (numpy, shapes as the observable)."""

    value: np.ndarray
    error: np.ndarray

    def doc(self) -> dict:
        return {"value": np.asarray(self.value).tolist(), "error": np.asarray(self.error).tolist()}


@dataclass
class Evaluation:
    """Loss terms, their gradient (per trainable log-parameter) and the estimates at θ."""

    terms: dict[str, float] = field(default_factory=dict)
    grads: list[torch.Tensor] = field(default_factory=list)
    estimates: dict[str, Estimate] = field(default_factory=dict)
    ess: float | None = None

    @property
    def loss(self) -> float:
        return float(sum(self.terms.values()))

    def add_grads(self, grads: list[torch.Tensor]) -> None:
        self.grads = grads if not self.grads else [a + b for a, b in
                                                   zip(self.grads, grads, strict=True)]


class Refinement:
    """State of one refinement: the model, its samples and the targets (see the module)."""

    def __init__(self, cfg: RefineConfig, targets: Targets | None = None):
        self.cfg, self.md = cfg, cfg.md
        self.box = box_of(cfg)
        self.model = model_of(cfg)
        self.targets = load_targets(cfg) if targets is None else targets
        self.cell = self.box.cell(1)[0]
        self.state = State(lattice_start(self.box, self.md.replicas, self.md.seed), None)
        self.ensemble: Ensemble | None = None
        self.simulations = 0
        self.equilibrated = False
        self.damping = 1.0  # Levenberg–Marquardt

    # ------------------------------------------------------------ simulation
    def simulate(self) -> None:
        """NVT at the current parameters: equilibrate (long the first time), then sample."""
        md = self.md
        eq = md.reequilibration_steps if self.equilibrated else md.equilibration_steps
        eq = (eq // md.sample_every) * md.sample_every
        run = nvt(self.model, self.box, self.state.positions, self.state.velocities, md.dt_fs,
                  eq + md.sample_steps, md.friction_per_fs, md.sample_every,
                  md.seed + 1000 * self.simulations + 1, md.skin_a)
        self.simulations += 1
        self.equilibrated = True
        self.state = run.end
        frames = run.frames[eq // md.sample_every + 1:]
        values = {}
        if self.targets.rdf_r is not None:
            x = frames.reshape(-1, *frames.shape[2:])
            chunk = 16  # the kernel is (pairs, radii) per chunk of frames
            values["rdf"] = torch.cat([
                obs.rdf(x[i:i + chunk], self.cell.expand(len(x[i:i + chunk]), 3, 3),
                        self.targets.rdf_r, self.targets.rdf_width)
                for i in range(0, len(x), chunk)])
        self.ensemble = make_ensemble(self.model, frames, self.cell, self.box.kt, values)
        log.info("simulation %d: %d NVT frames at %s", self.simulations, frames.shape[0]
                 * frames.shape[1], self.model.values())

    # ------------------------------------------------------------ loss terms
    def static_terms(self, ev: Evaluation, logw: torch.Tensor, u: torch.Tensor) -> None:
        """g(r) and the potential energy by reweighting: loss terms, gradient, estimates
        (the energy is always estimated, fitted only when it is a target); ``u``: the
        samples' energies (S,) eV at the current parameters."""
        t = self.targets
        with torch.enable_grad():
            loss = logw.new_zeros(())
            u, u_err = weighted_average(self.ensemble,
                                        energy_per_atom(self.model, self.ensemble, u), logw)
            ev.estimates[ENERGY] = Estimate(np.asarray(float(u.detach())),
                                            np.asarray(float(u_err)))
            if t.energy is not None:
                term = t.energy_weight * ((u - t.energy) / t.energy) ** 2
                ev.terms[ENERGY] = float(term.detach())
                loss = loss + term
            if t.rdf_r is not None:
                g, err = weighted_average(self.ensemble, "rdf", logw)
                term = t.rdf_weight * ((g - t.rdf_g) ** 2).mean()
                ev.terms["rdf"] = float(term.detach())
                ev.estimates["rdf"] = Estimate(g.detach().numpy(), err.numpy())
                loss = loss + term
            if t.energy is None and t.rdf_r is None:
                return
            leaves = self.model.leaves()
            grads = torch.autograd.grad(loss, leaves, allow_unused=True, retain_graph=True)
        ev.add_grads([torch.zeros_like(x) if gr is None else gr
                      for gr, x in zip(grads, leaves, strict=True)])

    def label_term(self, ev: Evaluation, with_gradient: bool) -> None:
        """The MLIP's anchor: ``label_weight`` × its members' training loss on the labels."""
        with torch.enable_grad():
            loss = self.cfg.potential.label_weight * self.model.label_loss()
            if with_gradient:
                leaves = self.model.leaves()
                grads = torch.autograd.grad(loss, leaves, allow_unused=True)
                ev.add_grads([torch.zeros_like(x) if g is None else g
                              for g, x in zip(grads, leaves, strict=True)])
        ev.terms["labels"] = float(loss.detach())

    def dynamical_loss(self, ev: Evaluation) -> Callable:
        """The frame loss of the dynamical targets; it fills ``ev``'s terms and estimates."""
        t, md = self.targets, self.md
        dt_ps = md.dt_fs * md.record_every * 1e-3

        def frame_loss(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            total = x.new_zeros(())
            time_ps = torch.arange(x.shape[0], dtype=x.dtype) * dt_ps
            d_rep = obs.diffusion_from_msd(x, time_ps)
            d, d_err = obs.mean_and_error(d_rep)
            ev.estimates["diffusion_coefficient_A2_per_ps"] = Estimate(
                np.asarray(float(d.detach())), np.asarray(float(d_err)))
            with torch.no_grad():  # Green–Kubo cross-check, reported only
                gk, gk_err = obs.mean_and_error(obs.diffusion_from_vacf(
                    obs.vacf(v, max(2, x.shape[0] // 2)), dt_ps))
            ev.estimates["diffusion_green_kubo"] = Estimate(np.asarray(float(gk)),
                                                            np.asarray(float(gk_err)))
            if t.diffusion is not None:
                term = t.diffusion_weight * ((d - t.diffusion) / t.diffusion) ** 2
                ev.terms["diffusion_coefficient_A2_per_ps"] = float(term.detach())
                total = total + term
            if t.vdos is not None:
                c = obs.vacf(v, max(2, x.shape[0] // 2))
                spec, spec_err = obs.mean_and_error(obs.vdos(c, dt_ps, t.vdos_freq).T)
                term = t.vdos_weight * torch.trapezoid((spec - t.vdos) ** 2, t.vdos_freq)
                ev.terms["vdos"] = float(term.detach())
                ev.estimates["vdos"] = Estimate(spec.detach().numpy(), spec_err.numpy())
                total = total + term
            return total

        return frame_loss

    def dynamical_terms(self, ev: Evaluation, with_gradient: bool = True) -> None:
        """NVE segments from the current NVT end states: terms, gradient and estimates."""
        md = self.md
        loss = self.dynamical_loss(ev)
        if with_gradient:
            seg = segment_gradient(self.model, self.box, self.state, md.dt_fs,
                                   md.segment_steps, md.record_every, loss,
                                   md.gradient_steps, md.gradient, md.skin_a)
            ev.add_grads(seg.grads)
        else:
            x, v, _, _ = nve(self.model, self.box, self.state, md.dt_fs, md.segment_steps,
                          md.record_every, md.skin_a)
            loss(x, v)

    def jacobians(self, ev: Evaluation, diffusion: bool = True
                  ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """∂(observable)/∂(log θ) (M, P) and standard errors (M,) at the current parameters,
        for g(r) and the potential energy (by reweighting the current samples) and the
        self-diffusion coefficient
        (through the last ``gradient_steps`` of new NVE segments: truncated, so biased)."""
        out = {}
        leaves = self.model.leaves()
        with torch.enable_grad():
            logw = log_weights(self.model, self.ensemble)
            u, u_err = weighted_average(self.ensemble, energy_per_atom(self.model,
                                                                       self.ensemble), logw)
            out[ENERGY] = (torch.stack(torch.autograd.grad(u, leaves, retain_graph=True)
                                       ).numpy()[None, :], np.atleast_1d(u_err.numpy()))
            if self.targets.rdf_r is not None:
                g, err = weighted_average(self.ensemble, "rdf", logw)
                rows = [torch.stack(torch.autograd.grad(g[b], leaves, retain_graph=True))
                        for b in range(g.shape[0])]
                out["rdf"] = (torch.stack(rows).numpy(), err.numpy())
        if not diffusion:
            return out
        md = self.md
        time_ps = None

        def d_loss(x, v):
            nonlocal time_ps
            time_ps = torch.arange(x.shape[0], dtype=x.dtype) * md.dt_fs * md.record_every * 1e-3
            return obs.diffusion_from_msd(x, time_ps).mean()

        seg = segment_gradient(self.model, self.box, self.state, md.dt_fs, md.segment_steps,
                               md.record_every, d_loss, md.gradient_steps, md.gradient,
                               md.skin_a)
        d_err = ev.estimates["diffusion_coefficient_A2_per_ps"].error
        out["diffusion_coefficient_A2_per_ps"] = (
            torch.stack(seg.grads).numpy()[None, :], np.atleast_1d(d_err))
        return out

    def residuals(self, ev: Evaluation) -> tuple[np.ndarray, np.ndarray, int]:
        """Scaled residuals r (their squares sum to the rdf, energy and diffusion loss terms),
        their Jacobian in log θ, and how many leading rows are static (reweighted)."""
        t = self.targets
        jac = self.jacobians(ev, diffusion=t.diffusion is not None)
        res, rows, n_static = [], [], 0
        if t.rdf_r is not None:
            scale = np.sqrt(t.rdf_weight / len(t.rdf_r))
            res.append(scale * (ev.estimates["rdf"].value - t.rdf_g.numpy()))
            rows.append(scale * jac["rdf"][0])
            n_static = len(t.rdf_r)
        if t.energy is not None:
            scale = np.sqrt(t.energy_weight) / abs(t.energy)
            res.append(np.atleast_1d(scale * (float(ev.estimates[ENERGY].value) - t.energy)))
            rows.append(scale * jac[ENERGY][0])
            n_static += 1
        if t.diffusion is not None:
            scale = np.sqrt(t.diffusion_weight) / t.diffusion
            d = float(ev.estimates["diffusion_coefficient_A2_per_ps"].value)
            res.append(np.atleast_1d(scale * (d - t.diffusion)))
            rows.append(scale * jac["diffusion_coefficient_A2_per_ps"][0])
        return np.concatenate(res), np.concatenate(rows), n_static

    def static_residuals(self, logw: torch.Tensor) -> np.ndarray:
        """The scaled g(r) and energy residuals (the leading rows of :meth:`residuals`) by
        reweighting with ``logw``."""
        t, out = self.targets, []
        if t.rdf_r is not None:
            g, _ = weighted_average(self.ensemble, "rdf", logw)
            out.append(np.sqrt(t.rdf_weight / len(t.rdf_r)) * (g.numpy() - t.rdf_g.numpy()))
        if t.energy is not None:
            u, _ = weighted_average(self.ensemble, energy_per_atom(self.model, self.ensemble),
                                    logw)
            out.append(np.atleast_1d(np.sqrt(t.energy_weight) / abs(t.energy)
                                     * (float(u) - t.energy)))
        return np.concatenate(out)

    def trial_loss(self, step: np.ndarray, r: np.ndarray, j: np.ndarray, n_static: int
                   ) -> float | None:
        """The loss after ``step``: g(r) and the energy reweighted to the new parameters, the
        dynamical
        residuals linearised; None when the reweighting's effective sample size is too low
        to tell."""
        leaves = self.model.leaves()
        with torch.no_grad():
            for leaf, d in zip(leaves, step, strict=True):
                leaf += float(d)
            try:
                r_new = r + j @ step
                if n_static:
                    logw = log_weights(self.model, self.ensemble)
                    if ess_fraction(logw) < self.cfg.optimiser.min_ess_fraction:
                        return None
                    r_new[:n_static] = self.static_residuals(logw)
                return float(r_new @ r_new)
            finally:
                for leaf, d in zip(leaves, step, strict=True):
                    leaf -= float(d)

    def levenberg_marquardt_step(self, ev: Evaluation, max_step: float, tries: int = 6
                                 ) -> np.ndarray:
        """A Levenberg–Marquardt step in log θ on the rdf, energy and diffusion residuals, each
        component capped at ``max_step``; the damping grows until the trial loss falls
        (:meth:`trial_loss`) and shrinks after a success, or when the step goes too far for
        the reweighting to judge it (the linearised model is then trusted, within
        ``max_step``)."""
        r, j, n_static = self.residuals(ev)
        jtj, grad, loss = j.T @ j, j.T @ r, float(r @ r)
        for _ in range(tries):
            a = jtj + self.damping * np.diag(np.diag(jtj)) + 1e-300 * np.eye(len(grad))
            step = np.clip(-np.linalg.solve(a, grad), -max_step, max_step)
            trial = self.trial_loss(step, r, j, n_static)
            if trial is None or trial < loss:  # None: too far to reweight; trust the model
                self.damping = max(self.damping / 3, 1e-6)
                return step
            self.damping *= 4
        return step

    def sensitivity(self, ev: Evaluation) -> dict | None:
        """What each target (and all of them together) determines; see
        :mod:`alflow.refine.sensitivity` (None for the MLIP: its weights are too many for a
        Fisher matrix by this route)."""
        if isinstance(self.model, TrainableMLIP):
            return None
        jac = self.jacobians(ev)
        names = self.model.trainable
        fishers = {k: sensitivity.fisher(j, e) for k, (j, e) in jac.items()}
        out = {k: sensitivity.report(f, names) for k, f in fishers.items()}
        t = self.targets
        fitted = {"rdf": t.rdf_r is not None, ENERGY: t.energy is not None,
                  "diffusion_coefficient_A2_per_ps": t.diffusion is not None}
        used = [k for k in fishers if fitted[k]]
        if len(used) > 1:
            out["all_targets"] = sensitivity.report(sum(fishers[k] for k in used), names)
        return out

    def evaluate(self, resimulate: bool = False, with_gradient: bool = True) -> Evaluation:
        """All loss terms at the current parameters; simulates when needed (see module)."""
        if resimulate or self.ensemble is None or self.targets.dynamical:
            self.simulate()
        with torch.enable_grad():
            u = self.model.sample_energies(self.ensemble)
            logw = log_weights(self.model, self.ensemble, u)
        ess = ess_fraction(logw)
        if ess < self.cfg.optimiser.min_ess_fraction:
            log.info("effective sample fraction %.3f < %.3f: new simulation", ess,
                     self.cfg.optimiser.min_ess_fraction)
            self.simulate()
            with torch.enable_grad():
                u = self.model.sample_energies(self.ensemble)
                logw = log_weights(self.model, self.ensemble, u)
            ess = ess_fraction(logw)
        ev = Evaluation(ess=ess)
        self.static_terms(ev, logw, u)
        if isinstance(self.model, TrainableMLIP) and self.cfg.potential.label_weight > 0:
            self.label_term(ev, with_gradient)
        if self.targets.dynamical or not with_gradient:
            self.dynamical_terms(ev, with_gradient and self.targets.dynamical)
        if not ev.grads:
            ev.grads = [torch.zeros_like(x) for x in self.model.leaves()]
        return ev


def refine(cfg: RefineConfig,
           progress: Callable[[int, dict[str, float], Evaluation], None] | None = None,
           model_out: str | Path | None = None) -> dict:
    """Run the refinement of ``cfg``; returns the result document (see docs/refine.md).
    ``progress(iteration, parameters, evaluation)`` is called after each evaluation; a
    refined MLIP committee is written to ``model_out`` if given."""
    ref = Refinement(cfg)
    model = ref.model
    initial = model.values()
    oc = cfg.optimiser
    opt = torch.optim.Adam(model.leaves(), lr=oc.learning_rate, betas=(oc.beta1, 0.9))
    decay = (oc.final_learning_rate / oc.learning_rate) ** (1 / max(1, oc.iterations - 1))
    schedule = torch.optim.lr_scheduler.ExponentialLR(opt, decay)
    history, before = [], None
    for it in range(cfg.optimiser.iterations):
        values = model.values()
        ev = ref.evaluate()
        if before is None:
            if not ref.targets.dynamical:
                ref.dynamical_terms(ev, with_gradient=False)  # D before, for the report
            before = ev.estimates
        history.append({"iteration": it, "loss": ev.loss, "terms": ev.terms,
                        "parameters": values, "ess_fraction": ev.ess,
                        "simulations": ref.simulations})
        if progress is not None:
            progress(it, values, ev)
        if oc.method == "gauss-newton":
            step = ref.levenberg_marquardt_step(ev, oc.max_step)
            with torch.no_grad():
                for leaf, d in zip(model.leaves(), step, strict=True):
                    leaf += float(d)
            continue
        opt.zero_grad()
        for leaf, g in zip(model.leaves(), ev.grads, strict=True):
            leaf.grad = g.detach().clone()
        opt.step()
        schedule.step()
    spread = None
    if oc.average_last:
        iterates = [h["parameters"] for h in history[1:]] + [model.values()]
        logs = np.log([[p[n] for n in model.trainable] for p in iterates[-oc.average_last:]])
        model.set_values(dict(zip(model.trainable, np.exp(logs.mean(0)), strict=True)))
        spread = dict(zip(model.trainable, logs.std(0, ddof=1) if len(logs) > 1
                          else np.zeros(len(model.trainable)), strict=True))
    after = ref.evaluate(resimulate=True, with_gradient=False)
    doc = result_document(cfg, ref, initial, history, before, after)
    if spread is not None:
        doc["parameter_relative_spread"] = {k: float(v) for k, v in spread.items()}
    doc["sensitivity"] = ref.sensitivity(after)
    if isinstance(model, TrainableMLIP):
        doc["not_computed"]["sensitivity"] = ("the MLIP's weights are too many for the "
                                              "Fisher analysis")
        if model_out is not None:
            doc["model_dir"] = str(model.save(model_out))
    return doc


def result_document(cfg: RefineConfig, ref: Refinement, initial: dict, history: list,
                    before: dict[str, Estimate], after: Evaluation) -> dict:
    """The content of result.json."""
    t = ref.targets
    observables: dict = {}
    if t.rdf_r is not None:
        observables["rdf"] = {"r_angstrom": t.rdf_r.tolist(), "target": t.rdf_g.tolist(),
                              "smoothing_width_a": t.rdf_width}
    name = "diffusion_coefficient_A2_per_ps"
    observables[name] = {"target": t.diffusion, "estimator": "slope of the MSD / 6 over NVE "
                         "segments, error over replicas"}
    if t.vdos is not None:
        observables["vdos"] = {"frequency_thz": t.vdos_freq.tolist(), "target": t.vdos.tolist()}
    observables[ENERGY] = {"target": t.energy, "estimator": "NVT mean potential energy per "
                           "atom (reweighted), error over replicas"}
    for key, entry in observables.items():
        if key in before:
            entry["before"] = before[key].doc()
        if key in after.estimates:
            entry["after"] = after.estimates[key].doc()
    gk = "diffusion_green_kubo"
    observables[name]["green_kubo"] = {
        "estimator": "⅓∫VACF dt over half of each NVE segment (a cross-check, not fitted)",
        **{k: e[gk].doc() for k, e in (("before", before), ("after", after.estimates))
           if gk in e}}
    return {
        "parameters": ref.model.values(),
        "initial_parameters": initial,
        "trainable": (ref.model.trainable if isinstance(ref.model, TrainableLJ) else
                      f"all {len(ref.model.trainable)} weight tensors of the "
                      f"{len(ref.model.members)} committee members"),
        "loss": [h["loss"] for h in history],
        "final_loss": after.loss,
        "final_loss_terms": after.terms,
        "iterations": history,
        "observables": observables,
        "simulations": ref.simulations,
        "units": {"epsilon_ev": "eV", "sigma_a": "Å", "r_angstrom": "Å",
                  name: "Å²/ps", "frequency_thz": "THz", "vdos": "1/THz", ENERGY: "eV",
                  "temperature": f"{cfg.system.temperature_k} K", "kT_ev": units.kB
                  * cfg.system.temperature_k},
        "not_computed": {"ir": "no dipole model for this potential"},
        "config": cfg.model_dump(mode="json"),
    }


def measure(cfg: RefineConfig, rdf_r: np.ndarray | None = None, rdf_width: float = 0.05
            ) -> dict[str, Estimate]:
    """Observables at the parameters of ``cfg`` (its targets are not used): g(r) at
    ``rdf_r`` Å if given, and the NVE self-diffusion coefficient, with standard errors.
    The simulation is the one a refinement runs: equilibration, NVT sampling, NVE segments."""
    targets = Targets(diffusion=None)
    if rdf_r is not None:
        targets.rdf_r = torch.as_tensor(np.asarray(rdf_r, dtype=float))
        targets.rdf_g, targets.rdf_width = torch.zeros_like(targets.rdf_r), rdf_width
    ref = Refinement(cfg, targets)
    return ref.evaluate(with_gradient=False).estimates
