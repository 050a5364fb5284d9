"""A Boltzmann generator for one state: coordinates (rigid-body-free) + a coupling flow.

Densities of configurations are with respect to the rigid-body-reduced measure J(z) dz (see
:mod:`alflow.flows.coordinates`): ``log_prob(x) = log q(z(x)) − log J(z(x))``, so that for a
potential U the importance weight of a flow sample is ``exp(−U/kT) / q_x``.

Permutations (see docs/flows.md): training configurations are relabelled to the reference by
assignment (:func:`canonical_permutation`) and then symmetrised over the σ labellings that the
reference's proper rotations realise, so the flow learns the whole (smooth) thermal cloud of
one labelled copy of the basin; free energies then carry the rotational symmetry number σ.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from alflow.errors import InputError
from alflow.flows.coordinates import (
    ClusterCoordinates,
    coordinates_from_config,
    make_coordinates,
    rotation_permutations,
)
from alflow.flows.model import CouplingFlow, FlowConfig

log = logging.getLogger(__name__)


class BoltzmannGenerator(torch.nn.Module):
    """Flow density over the configurations of one state; positions in Å, shape (B, N, 3)."""

    def __init__(self, coords: ClusterCoordinates, cfg: FlowConfig | None = None,
                 symmetry_perms: np.ndarray | None = None, init: torch.Generator | None = None):
        super().__init__()
        self.coords = coords
        self.cfg = cfg or FlowConfig()
        self.flow = CouplingFlow(coords.dim, coords.circular, self.cfg, init).double()
        perms = (rotation_permutations(coords.reference, coords.numbers)
                 if symmetry_perms is None else np.asarray(symmetry_perms))
        self.symmetry_perms = perms if len(perms) else np.arange(coords.n_atoms)[None]

    @property
    def symmetry_number(self) -> int:
        """σ: the number of labellings of the reference that proper rotations realise."""
        return len(self.symmetry_perms)

    @classmethod
    def build(cls, reference: np.ndarray, numbers: np.ndarray, cfg: FlowConfig | None = None,
              samples: np.ndarray | None = None, init: torch.Generator | None = None
              ) -> BoltzmannGenerator:
        """From a reference minimum (N, 3) Å; normalisation from ``samples`` (B, N, 3) if
        given (else a unit normalisation around the reference); initial weights drawn from
        ``init`` (:class:`~alflow.flows.model.CouplingFlow`)."""
        cfg = cfg or FlowConfig()
        bg = cls(make_coordinates(cfg.coordinates, reference, numbers), cfg, init=init)
        if samples is not None:
            bg.fit_normalisation(samples)
        else:
            z, _ = bg.coords.forward(torch.as_tensor(bg.coords.reference)[None])
            bg.flow.fit_normalisation(z.expand(2, -1) + torch.tensor([[0.0], [1e-2]]))
        return bg

    # -------------------------------------------------------------------- data preparation
    def prepare(self, x: np.ndarray | torch.Tensor, symmetrise: bool = True) -> torch.Tensor:
        """Internal coordinates (B·σ, dim) of configurations (B, N, 3): relabelled to the
        reference and (``symmetrise``) replicated over the σ symmetric labellings."""
        xt = torch.as_tensor(np.asarray(x, dtype=float))
        if xt.ndim != 3 or xt.shape[1:] != (self.coords.n_atoms, 3):
            raise InputError(f"samples must have shape (B, {self.coords.n_atoms}, 3), "
                             f"got {tuple(xt.shape)}")
        xc = self.coords.canonicalize(xt)
        if symmetrise:
            xc = torch.cat([xc[:, torch.as_tensor(p)] for p in self.symmetry_perms])
        z, _ = self.coords.forward(xc)
        return z

    def fit_normalisation(self, x: np.ndarray | torch.Tensor) -> None:
        self.flow.fit_normalisation(self.prepare(x))

    # -------------------------------------------------------------------- densities
    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log q_x (B,) of configurations (B, N, 3) Å in their own labelling (not relabelled:
        a walker keeps its labels); -inf outside the coordinates' domain."""
        z, logj = self.coords.forward(x.to(torch.float64))
        lp = self.flow.log_prob(z) - logj
        return torch.where(self.coords.valid(z), lp, torch.full_like(lp, -float("inf")))

    def sample(self, n: int, generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """n configurations x (n, N, 3) Å (body frame), log q_x (n,), and valid (n,) bool
        (samples outside the coordinates' domain have no configuration: weight zero)."""
        with torch.no_grad():
            z, logq = self.flow.sample(n, generator)
            x, logj = self.coords.inverse(z)
        return x, logq - logj, self.coords.valid(z)

    # -------------------------------------------------------------------- persistence
    def config(self) -> dict[str, Any]:
        return {"coordinates": self.coords.to_config(), "flow": self.cfg.model_dump(),
                "symmetry_perms": np.asarray(self.symmetry_perms).tolist()}

    def save(self, out_dir: str | Path) -> Path:
        """Write ``flow.json`` (config) and ``flow.pt`` (state_dict) into ``out_dir``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        torch.save(self.flow.state_dict(), out / "flow.pt")
        (out / "flow.json").write_text(json.dumps(self.config(), indent=1))
        return out

    def warm_start(self, out_dir: str | Path) -> bool:
        """Start training from the weights of the flow saved in ``out_dir`` (e.g. the same
        state's flow on another potential): its parameters, not its buffers (the
        normalisation stays this generator's own). False, and nothing changed, unless every
        parameter has the same name and shape."""
        path = Path(out_dir) / "flow.pt"
        if not path.is_file():
            return False
        state = torch.load(path, map_location="cpu", weights_only=True)
        own = dict(self.flow.named_parameters())
        if set(own) - set(state) or any(state[k].shape != p.shape for k, p in own.items()):
            return False
        with torch.no_grad():
            for k, p in own.items():
                p.copy_(state[k].to(p.dtype))
        return True

    @classmethod
    def load(cls, out_dir: str | Path, device: str = "cpu") -> BoltzmannGenerator:
        out = Path(out_dir)
        try:
            cfg = json.loads((out / "flow.json").read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise InputError(f"cannot read flow config {out / 'flow.json'}: {err}") from None
        bg = cls(coordinates_from_config(cfg["coordinates"]), FlowConfig(**cfg["flow"]),
                 np.asarray(cfg["symmetry_perms"]))
        state = torch.load(out / "flow.pt", map_location=device, weights_only=True)
        bg.flow.load_state_dict(state)
        return bg.to(device)


__all__ = ["BoltzmannGenerator"]
