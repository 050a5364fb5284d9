"""Which metastable state a configuration belongs to: quench basin, CV region, hard wall.

- :func:`quench`: batched FIRE minimisation (torch) of many configurations at once.
- :class:`BasinStates`: a configuration belongs to the state whose reference minimum its
  quench reaches (RMS difference of sorted pair distances below ``tolerance`` Å, and the
  minimum's energy within ``energy_tolerance`` eV); other minima belong to none (-1).
  A quench stops as soon as a cheap certificate says where it goes (:class:`HarmonicBasins`).
- :class:`CVStates`: a state is a region low <= cv(x) < high of a collective variable.
- :class:`MinimumCVStates`: a state is every minimum whose CV lies in [low, high) (e.g. all
  planar isomers): a configuration belongs to the state of the minimum its quench reaches.
- :func:`wall`: the hard-wall restriction (no atom farther than ``radius`` Å from the centre
  of mass), as a predicate on positions.

Positions (B, N, 3) Å, energies eV, forces eV/Å.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import numpy as np
import torch

from alflow.errors import InputError
from alflow.potential import Potential, evaluate

log = logging.getLogger(__name__)


Capture = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def quench(potential: Potential, x: np.ndarray | torch.Tensor, fmax: float = 5e-4,
           max_steps: int = 3000, dt: float = 0.5, dt_max: float = 5.0, max_step: float = 0.1,
           batch: int = 4096) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FIRE (Bitzek et al. 2006; unit masses) of each configuration until its largest atomic
    force is below ``fmax`` eV/Å. Returns minima (B, N, 3), energies (B,), converged (B,)."""
    minima, energies, ok, _ = _quench(potential, x, fmax, max_steps, dt, dt_max, max_step,
                                      batch)
    return minima, energies, ok


def _quench(potential: Potential, x: np.ndarray | torch.Tensor, fmax: float, max_steps: int,
            dt: float = 0.5, dt_max: float = 5.0, max_step: float = 0.1, batch: int = 4096,
            capture: Capture | None = None
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`quench` that also stops a configuration once ``capture(x (b, N, 3), forces
    (b, N, 3)) -> (b,) int``, asked every other step, names the state (>= 0) its quench is
    certain to reach; the fourth output is that state, -1 where the quench ran to its end."""
    xs = torch.as_tensor(np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x,
                                    dtype=float))
    outs = [_fire(potential, xs[i:i + batch], fmax, max_steps, dt, dt_max, max_step, capture)
            for i in range(0, len(xs), batch)]
    return tuple(np.concatenate(o) for o in zip(*outs, strict=True))  # type: ignore[return-value]


def _fire(potential: Potential, x0: torch.Tensor, fmax: float, max_steps: int, dt0: float,
          dt_max: float, max_step: float, capture: Capture | None
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    fire = Fire(fmax, max_steps, dt0, dt_max, max_step, capture)
    ids = fire.submit(x0)
    fire.drain(potential)
    return fire.results(ids)


class Fire:
    """Resumable batched FIRE (:func:`quench`): configurations join at any time
    (:meth:`submit`), each moves one step per :meth:`advance` given the energies and forces at
    :meth:`positions` (so its force calls can ride along another batch's, e.g. MCMC steps) and
    leaves once converged (largest atomic force below ``fmax`` eV/Å), captured (``capture``,
    asked of all pending configurations every ``capture_every`` calls, names the state its
    quench certainly reaches) or after ``max_steps``. A configuration's path does not depend
    on the others in the batch (only when a certificate is asked does)."""

    def __init__(self, fmax: float = 5e-4, max_steps: int = 3000, dt0: float = 0.5,
                 dt_max: float = 5.0, max_step: float = 0.1, capture: Capture | None = None,
                 capture_every: int = 2):
        self.fmax, self.max_steps, self.dt0 = fmax, max_steps, dt0
        self.dt_max, self.max_step, self.capture = dt_max, max_step, capture
        self.capture_every = capture_every
        self._ids = torch.zeros(0, dtype=torch.int64)
        self._x = self._v = None
        self._dt = self._alpha = self._n_pos = self._step = None
        self._next = 0
        self._calls = 0
        self.force_evals = 0
        # results by id: minimum (N, 3), energy, converged (or captured), captured state
        self._done: dict[int, tuple[np.ndarray, float, bool, int]] = {}

    def __len__(self) -> int:
        return len(self._ids)

    def submit(self, x: torch.Tensor | np.ndarray, energy: torch.Tensor | None = None,
               forces: torch.Tensor | None = None) -> torch.Tensor:
        """Queue configurations (B, N, 3) Å; returns their ids (B,). With their energies (B,)
        eV and forces (B, N, 3) eV/Å (already known, e.g. at an MCMC state) the first step is
        taken at once, without a force call."""
        x = torch.as_tensor(np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x,
                                       dtype=float)).clone()
        b = len(x)
        ids = torch.arange(self._next, self._next + b)
        self._next += b
        if b == 0:
            return ids
        new = {"_x": x, "_v": torch.zeros_like(x),
               "_dt": torch.full((b, 1, 1), self.dt0, dtype=torch.float64),
               "_alpha": torch.full((b, 1, 1), 0.1, dtype=torch.float64),
               "_n_pos": torch.zeros((b, 1, 1), dtype=torch.int64),
               "_step": torch.zeros(b, dtype=torch.int64)}
        start = len(self._ids)
        if self._x is None or start == 0:
            for k, v in new.items():
                setattr(self, k, v)
        else:
            for k, v in new.items():
                setattr(self, k, torch.cat([getattr(self, k), v]))
        self._ids = torch.cat([self._ids, ids])
        if forces is not None and energy is not None:
            self._advance(slice(start, None), energy.detach().double(),
                          forces.detach().double())
        return ids

    def positions(self) -> torch.Tensor:
        """(P, N, 3) Å: the pending configurations whose energies and forces the next
        :meth:`advance` takes."""
        return self._x if self._x is not None else torch.zeros(0)

    def advance(self, energy: torch.Tensor, forces: torch.Tensor) -> None:
        """One step of every pending configuration, given its energy (P,) eV and forces
        (P, N, 3) eV/Å at :meth:`positions`."""
        if len(self._ids):
            self.force_evals += len(self._ids)
            self._advance(slice(0, None), energy.detach().double(), forces.detach().double())

    def drain(self, potential: Potential) -> None:
        """Step every pending configuration on ``potential`` until none is left."""
        while len(self._ids):
            out = evaluate(potential, self.positions())
            self.advance(out.energy, out.forces)

    def resolved(self, ids: torch.Tensor) -> torch.Tensor:
        """(B,) bool: these configurations have left the queue."""
        return torch.tensor([int(i) in self._done for i in ids], dtype=torch.bool)

    def results(self, ids: torch.Tensor, pop: bool = True
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Minima (B, N, 3) Å, energies (B,) eV, converged (B,), captured state (B,) (-1:
        none) of resolved configurations (forgotten unless ``pop`` is False)."""
        get = self._done.pop if pop else self._done.__getitem__
        rows = [get(int(i)) for i in ids]
        if not rows:
            shape = (0, *self._x.shape[1:]) if self._x is not None else (0, 0, 3)
            return (np.zeros(shape), np.zeros(0), np.zeros(0, dtype=bool),
                    np.zeros(0, dtype=np.int64))
        m, e, ok, c = zip(*rows, strict=True)
        return np.stack(m), np.array(e), np.array(ok, dtype=bool), np.array(c, dtype=np.int64)

    def _advance(self, rows: slice, energy: torch.Tensor, f: torch.Tensor) -> None:
        """One FIRE step of the pending configurations ``rows`` (a slice: views, no copies),
        computed for all of them at once; those that finish leave the queue."""
        x = self._x[rows]
        done = f.norm(dim=-1).amax(-1) < self.fmax
        captured = None
        self._calls += 1
        if self.capture is not None and self._calls % self.capture_every == 1 % \
                self.capture_every:  # every other step by default: a certificate costs
            # about as much as a call of a cheap potential (EMT) and fires a step later; all
            # pending configurations at once (its cost is per call)
            ask = ~done
            if ask.all():
                captured = torch.as_tensor(self.capture(x, f), dtype=torch.int64)
            elif ask.any():
                captured = torch.full((len(x),), -1, dtype=torch.int64)
                captured[ask] = torch.as_tensor(self.capture(x[ask], f[ask]),
                                                dtype=torch.int64)
            if captured is not None:
                done = done | (captured >= 0)
        finished = done | (self._step[rows] + 1 >= self.max_steps)
        any_finished = bool(finished.any())
        if any_finished:
            fin = finished.nonzero().squeeze(1)
            xf, ef, okf = x[fin].numpy(), energy[fin].numpy(), done[fin].numpy()
            cf = (captured[fin].numpy() if captured is not None
                  else np.full(len(fin), -1, dtype=np.int64))
            for j, i in enumerate(self._ids[rows][fin].tolist()):
                self._done[i] = (xf[j], float(ef[j]), bool(okf[j]), int(cf[j]))
        # the step, for every row (those that finished leave below)
        v, dt, alpha, n_pos = self._v[rows], self._dt[rows], self._alpha[rows], \
            self._n_pos[rows]
        up = (f * v).sum((1, 2), keepdim=True) > 0
        fn = f.norm(dim=(1, 2), keepdim=True).clamp_min(1e-300)
        v = torch.where(up, (1 - alpha) * v + alpha * f / fn * v.norm(dim=(1, 2), keepdim=True),
                        0.0)
        n_pos = torch.where(up, n_pos + 1, 0)
        grow = up & (n_pos > 5)
        dt = torch.where(grow, (dt * 1.1).clamp_max(self.dt_max),
                         torch.where(up, dt, dt * 0.5))
        alpha = torch.where(grow, alpha * 0.99, torch.where(up, alpha, 0.1))
        v = v + dt * f
        dx = dt * v
        norm = dx.norm(dim=-1, keepdim=True).amax(1, keepdim=True)
        x += dx * (self.max_step / norm).clamp_max(1.0)  # in place: x is a view of _x
        self._v[rows], self._dt[rows], self._alpha[rows], self._n_pos[rows] = \
            v, dt, alpha, n_pos
        self._step[rows] += 1
        if any_finished:
            keep = torch.ones(len(self._ids), dtype=torch.bool)
            keep[rows][finished] = False
            for k in ("_ids", "_x", "_v", "_dt", "_alpha", "_n_pos", "_step"):
                setattr(self, k, getattr(self, k)[keep])


def sorted_distances(x: np.ndarray) -> np.ndarray:
    """(..., N, 3) -> (..., N(N-1)/2) sorted pair distances, Å (a permutation-invariant
    fingerprint of a structure)."""
    x = np.asarray(x, dtype=float)
    i, j = np.triu_indices(x.shape[-2], k=1)
    return np.sort(np.linalg.norm(x[..., i, :] - x[..., j, :], axis=-1), axis=-1)


def kabsch_rotations(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Proper rotations R (..., 3, 3) minimising |x @ R − reference| for centred x (..., N, 3)
    and reference (..., N, 3) (same labelling; batch dimensions broadcast)."""
    u, _, vt = torch.linalg.svd(x.transpose(-1, -2) @ reference)
    d = torch.sign(torch.linalg.det(u @ vt))
    flip = torch.stack([torch.ones_like(d), torch.ones_like(d), torch.where(d == 0, 1.0, d)], -1)
    return u @ torch.diag_embed(flip) @ vt


class HarmonicBasins:
    """Quadratic models of the potential about minima m (S, N, 3) Å: each Hessian H (3N, 3N)
    eV/Å² by central differences of the forces (one batched call for all), inverted on its
    3N − 6 internal modes (rigid-body modes, eigenvalues below 1e-3 of the largest, left out)."""

    def __init__(self, potential: Potential, minima: np.ndarray, step: float = 1e-4):
        m = np.asarray(minima, dtype=float)
        m = m - m.mean(-2, keepdims=True)
        s, n = m.shape[0], m[0].size
        disp = (np.eye(n) * step).reshape(n, *m.shape[1:])
        x = np.concatenate([m[:, None] + disp, m[:, None] - disp], 1).reshape(-1, *m.shape[1:])
        f = evaluate(potential, torch.as_tensor(x)).forces.double().reshape(s, 2, n, n)
        h = -(f[:, 0] - f[:, 1]) / (2 * step)
        w, v = torch.linalg.eigh(0.5 * (h + h.transpose(-1, -2)))
        keep = (w > 1e-3 * w.amax(-1, keepdim=True)).double()
        inv_w = torch.where(keep > 0, 1.0 / w, torch.zeros_like(w))
        self.minima = torch.as_tensor(m)
        # P(x − m) + H⁺F = [δ, F] @ [[P], [H⁺]]: projector on internal modes, pseudo-inverse
        projector = (v * keep[:, None]) @ v.transpose(-1, -2)
        inverse = (v * inv_w[:, None]) @ v.transpose(-1, -2)  # Å²/eV
        self._newton = torch.cat([projector, inverse], -2)  # (S, 6N, 3N)

    def newton_miss(self, x: torch.Tensor, forces: torch.Tensor) -> torch.Tensor:
        """(B, S) RMS distance per atom, Å, between each minimum and the Newton step of its
        harmonic model from x (B, N, 3) Å with forces (B, N, 3) eV/Å, after a Kabsch alignment
        in x's own labelling: P(x − m) + H⁺F, P the projector on internal modes. Zero where
        the forces are exactly the harmonic ones; near a saddle or in another basin the forces
        do not point at m and the miss is about the distance to m itself."""
        y = x.detach().double()
        y = (y - y.mean(-2, keepdim=True))[:, None]  # (B, 1, N, 3)
        r = kabsch_rotations(y, self.minima)  # (B, S, 3, 3)
        delta = (y @ r - self.minima).flatten(2)
        f = (forces.detach().double()[:, None] @ r).flatten(2)
        miss = (torch.cat([delta, f], -1)[..., None, :] @ self._newton).squeeze(-2)
        return miss.reshape(*miss.shape[:2], -1, 3).pow(2).sum(-1).mean(-1).sqrt()


class BasinStates:
    """States by quench basin. ``references``: name -> a structure (N, 3) Å near the state's
    minimum (it is quenched on ``potential`` first). ``assign(x)`` -> (B,) int index into
    ``names`` or -1 (a minimum of no state, or a quench that did not converge)."""

    def __init__(self, potential: Potential, references: Mapping[str, np.ndarray],
                 tolerance: float = 0.05, energy_tolerance: float | None = None,
                 fmax: float = 5e-4, max_steps: int = 3000):
        if not references:
            raise InputError("BasinStates: at least one reference structure is needed")
        self.potential = potential
        self.names = list(references)
        self.tolerance, self.energy_tolerance = tolerance, energy_tolerance
        self.fmax, self.max_steps = fmax, max_steps
        refs = np.stack([np.asarray(references[n], dtype=float) for n in self.names])
        self.minima, self.energies, ok = quench(potential, refs, fmax=fmax / 10,
                                                max_steps=4 * max_steps)
        if not ok.all():
            bad = [n for n, o in zip(self.names, ok, strict=True) if not o]
            log.warning("reference quench did not converge for %s", bad)
        self.fingerprints = sorted_distances(self.minima)
        d = np.sqrt(((self.fingerprints[:, None] - self.fingerprints[None]) ** 2).mean(-1))
        np.fill_diagonal(d, np.inf)
        if (d < tolerance).any():
            raise InputError("BasinStates: two reference structures quench to the same minimum")
        self.harmonic = HarmonicBasins(potential, self.minima)

    def match(self, minima: np.ndarray, energies: np.ndarray) -> np.ndarray:
        """State index (B,) of quenched structures (B, N, 3), -1 for none."""
        fp = sorted_distances(minima)
        d = np.sqrt(((fp[:, None] - self.fingerprints[None]) ** 2).mean(-1))  # (B, S)
        if self.energy_tolerance is not None:
            d = np.where(np.abs(energies[:, None] - self.energies[None]) < self.energy_tolerance,
                         d, np.inf)
        best = d.argmin(1)
        return np.where(d[np.arange(len(d)), best] < self.tolerance, best, -1)

    def assign(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        """State index (B,) of configurations (B, N, 3) Å, -1 for none: the full quench's
        answer, with each quench stopped as soon as one of two certificates says where it
        goes (:meth:`certain_state`)."""
        if len(x) == 0:
            return np.zeros(0, dtype=np.int64)
        minima, energies, ok, captured = _quench(self.potential, x, self.fmax, self.max_steps,
                                                 capture=self._capture())
        return self.classify(minima, energies, ok, captured)

    def _capture(self) -> Capture | None:
        return self.certain_state if self.energy_tolerance is None else None

    def classify(self, minima: np.ndarray, energies: np.ndarray, ok: np.ndarray,
                 captured: np.ndarray) -> np.ndarray:
        """State index (B,) from quench results (:meth:`Fire.results`)."""
        if len(minima) == 0:
            return np.zeros(0, dtype=np.int64)
        return np.where(captured >= 0, captured, np.where(ok, self.match(minima, energies), -1))

    def certain_state(self, x: torch.Tensor, forces: torch.Tensor) -> torch.Tensor:
        """(B,) state whose minimum the quench of x (B, N, 3) Å, forces eV/Å, certainly
        reaches, -1 where not certain. Two certificates, both free at a FIRE step (no force
        call): (1) the Newton step of the state's harmonic model lands within a quarter of
        the tolerance of its minimum (:meth:`HarmonicBasins.newton_miss`: the forces are the
        harmonic ones pointing at that minimum); (2) forces below 20 fmax and pair distances
        within half the tolerance of the minimum's. Checked against the full quench in
        tests/test_states.py (thermal, hot and displaced lj7 and Ag6 frames)."""
        miss, nearest = self.harmonic.newton_miss(x, forces).min(-1)
        out = torch.where(miss < self.tolerance / 4, nearest, -1)
        near = (out < 0) & (forces.norm(dim=-1).amax(-1) < 20 * self.fmax)
        if near.any():
            fp = sorted_distances(x[near].detach().cpu().numpy())
            d = np.sqrt(((fp[:, None] - self.fingerprints[None]) ** 2).mean(-1))
            out[near] = torch.as_tensor(np.where(d.min(1) < self.tolerance / 2, d.argmin(1),
                                                 -1))
        return out

    def member(self, name: str) -> Callable[[np.ndarray | torch.Tensor], np.ndarray]:
        """Predicate x -> (B,) bool: in the basin of state ``name``."""
        k = self.names.index(name)
        return lambda x: self.assign(x) == k

    def checker(self, name: str) -> QuenchCheck:
        """Incremental membership of state ``name`` (:class:`QuenchCheck`)."""
        return QuenchCheck(self, self.names.index(name))


class CVStates:
    """States as CV regions: name -> (cv, low, high); cv maps (B, N, 3) torch -> (B,)."""

    def __init__(self, regions: Mapping[str, tuple[Callable[[torch.Tensor], torch.Tensor],
                                                   float, float]]):
        self.names = list(regions)
        self.regions = dict(regions)

    def assign(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        xt = torch.as_tensor(np.asarray(x, dtype=float)) if not isinstance(x, torch.Tensor) \
            else x.detach()
        out = np.full(len(xt), -1, dtype=np.int64)
        for k, name in reversed(list(enumerate(self.names))):
            cv, lo, hi = self.regions[name]
            v = cv(xt).detach().cpu().numpy()
            out[(v >= lo) & (v < hi)] = k
        return out

    def member(self, name: str) -> Callable[[np.ndarray | torch.Tensor], np.ndarray]:
        k = self.names.index(name)
        return lambda x: self.assign(x) == k


class MinimumCVStates:
    """States as classes of minima: name -> (cv, low, high). A configuration belongs to the
    state whose region holds the CV of the minimum its quench (on ``potential``) reaches, -1
    if none does or the quench did not converge. Exact for properties that are sharp at
    minima (planarity is 0 for planar isomers to within the quench's precision), where a CV
    region of the configuration itself would cut through basins at finite temperature.
    ``references``: name -> a structure (N, 3) Å of the state; ``minima`` are their quenches.
    A quench stops early when the Newton step of a reference minimum's harmonic model lands
    within ``tolerance`` / 4 Å of it (:class:`HarmonicBasins`, the certificate of
    :class:`BasinStates`): that minimum's class is then the answer.
    """

    def __init__(self, potential: Potential,
                 regions: Mapping[str, tuple[Callable[[torch.Tensor], torch.Tensor], float,
                                             float]],
                 references: Mapping[str, np.ndarray], fmax: float = 5e-4,
                 max_steps: int = 3000, tolerance: float = 0.05):
        self.potential = potential
        self.classes = CVStates(regions)
        self.names = self.classes.names
        self.fmax, self.max_steps = fmax, max_steps
        refs = np.stack([np.asarray(references[n], dtype=float) for n in self.names])
        self.minima, self.energies, _ = quench(potential, refs, fmax=fmax / 10,
                                               max_steps=4 * max_steps)
        wrong = [n for k, n in enumerate(self.names)
                 if self.classes.assign(self.minima[k:k + 1])[0] != k]
        if wrong:
            log.warning("the reference of state(s) %s quenches to a minimum outside the state",
                        wrong)
        self._minimum_class = torch.as_tensor(self.classes.assign(self.minima))
        self.harmonic = HarmonicBasins(potential, self.minima)
        self.tolerance = tolerance

    def assign(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        """State index (B,) of configurations (B, N, 3) Å, -1 for none."""
        if len(x) == 0:
            return np.zeros(0, dtype=np.int64)
        minima, energies, ok, captured = _quench(self.potential, x, self.fmax, self.max_steps,
                                                 capture=self._capture())
        return self.classify(minima, energies, ok, captured)

    def _capture(self) -> Capture:
        return self.certain_state

    def classify(self, minima: np.ndarray, energies: np.ndarray, ok: np.ndarray,
                 captured: np.ndarray) -> np.ndarray:
        """State index (B,) from quench results (:meth:`Fire.results`)."""
        if len(minima) == 0:
            return np.zeros(0, dtype=np.int64)
        return np.where(captured >= 0, captured, np.where(ok, self.classes.assign(minima), -1))

    def certain_state(self, x: torch.Tensor, forces: torch.Tensor) -> torch.Tensor:
        """(B,) state of the reference minimum the quench of x (B, N, 3) Å, forces eV/Å,
        certainly reaches (its harmonic Newton step lands within tolerance / 4), else -1."""
        miss, nearest = self.harmonic.newton_miss(x, forces).min(-1)
        return torch.where(miss < self.tolerance / 4, self._minimum_class[nearest], -1)

    def member(self, name: str) -> Callable[[np.ndarray | torch.Tensor], np.ndarray]:
        k = self.names.index(name)
        return lambda x: self.assign(x) == k

    def checker(self, name: str) -> QuenchCheck:
        """Incremental membership of state ``name`` (:class:`QuenchCheck`)."""
        return QuenchCheck(self, self.names.index(name))


class QuenchCheck:
    """Membership of state ``k`` of quench-basin states (:class:`BasinStates`,
    :class:`MinimumCVStates`) answered incrementally: :meth:`submit` queues configurations on
    a :class:`Fire` whose force calls the caller may join to its own (``fire.positions()``,
    ``fire.advance``) or run alone (:meth:`drain`); :meth:`status` says 1 (inside), −1
    (outside) or 0 (pending). Each answer is that of ``states.assign``."""

    def __init__(self, states: BasinStates | MinimumCVStates, k: int):
        self.states, self.k = states, k
        # riding along MALA steps, a FIRE step costs no force call: certificates every 4th
        self.fire = Fire(states.fmax, states.max_steps, capture=states._capture(),
                         capture_every=4)
        self._status: dict[int, int] = {}
        self.submissions = self.submitted = 0  # calls and configurations, for accounting

    def submit(self, x: torch.Tensor, energy: torch.Tensor | None = None,
               forces: torch.Tensor | None = None) -> torch.Tensor:
        """Queue configurations (B, N, 3) Å (with their energies eV and forces eV/Å when
        known: the quench's first step is then free); returns their ids (B,)."""
        self.submissions += 1
        self.submitted += len(x)
        return self.fire.submit(x, energy, forces)

    def status(self, ids: torch.Tensor) -> torch.Tensor:
        """(B,) int8: 1 inside the state, −1 outside, 0 still quenching."""
        new = [i for i in ids.tolist() if i not in self._status]
        if new:
            done = [i for i, r in zip(new, self.fire.resolved(torch.tensor(new)).tolist(),
                                      strict=True) if r]
            if done:
                state = self.states.classify(*self.fire.results(torch.tensor(done)))
                self._status.update(zip(done, np.where(state == self.k, 1, -1).tolist(),
                                        strict=True))
        return torch.tensor([self._status.get(i, 0) for i in ids.tolist()], dtype=torch.int8)

    def drain(self) -> None:
        """Finish every pending quench on the states' potential."""
        self.fire.drain(self.states.potential)

    def forget(self, ids: torch.Tensor) -> None:
        """Drop the answers of ``ids`` (their configurations are no longer needed)."""
        for i in ids.tolist():
            self._status.pop(i, None)


def wall(radius: float, masses: np.ndarray | None = None
         ) -> Callable[[torch.Tensor], torch.Tensor]:
    """Predicate (B, N, 3) -> (B,) bool: every atom within ``radius`` Å of the centre of mass
    (masses amu; equal masses when None)."""

    weights: dict[tuple, torch.Tensor] = {}  # (N, 1) mass fractions by dtype and device

    def inside(x: torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(x)
        key = (x.dtype, x.device, x.shape[-2])
        if key not in weights:
            m = (torch.ones(x.shape[-2], dtype=x.dtype, device=x.device) if masses is None
                 else torch.as_tensor(masses, dtype=x.dtype, device=x.device))
            weights[key] = (m / m.sum())[:, None]
        com = (x * weights[key]).sum(-2, keepdim=True)
        return (x - com).square().sum(-1).amax(-1) <= radius**2

    return inside


__all__ = ["BasinStates", "CVStates", "Fire", "HarmonicBasins", "MinimumCVStates", "QuenchCheck",
           "kabsch_rotations", "quench", "sorted_distances", "wall"]
