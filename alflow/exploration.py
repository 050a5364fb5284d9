"""Exploration MD from a potential named by a spec, for ``alflow md`` and :mod:`apps.sampling`.

A spec is a model directory (``alflow.mlip.load_potential``, the committee, with
``force_dev``), ``ase:<calculator>`` (e.g. ``ase:emt``, ``ase:lj(sigma=3.405,
epsilon=0.0103, rc=34.05)``: any ASE calculator through the labelling shorthands, one call per
replica), ``torch:lj`` (the batched argon Lennard-Jones of :mod:`alflow.potential`) or
``torch:emt`` (ASE's EMT, batched and differentiable: :mod:`alflow.emt`). This module joins
the MLIP, labelling and sampling packages, so that none of them imports another.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from ase import Atoms

from alflow.errors import InputError
from alflow.potential import AseCalculatorPotential, LennardJones, Potential
from alflow.sampling.explore import ExploreConfig, explore, write_trajectory
from alflow.sampling.langevin import Trajectory


def load_potential_spec(spec: str | Path, numbers, device: str = "cpu") -> Potential:
    """The Potential named by ``spec`` (see the module docstring) for atomic ``numbers``."""
    text = str(spec)
    numbers = np.asarray(numbers)
    if text.startswith("ase:"):
        from alflow.labelling import make_labeller
        from alflow.labelling.ase_calc import calculator_class

        labeller = make_labeller(text)  # validates the calculator and its arguments
        template = Atoms(numbers=numbers, positions=np.zeros((len(numbers), 3)))
        labeller.check(template)
        cfg = labeller.config
        cls = calculator_class(cfg.calculator)
        return AseCalculatorPotential(lambda: cls(**cfg.ase_kwargs), template)
    if text == "torch:lj":
        return LennardJones(numbers)
    if text == "torch:emt":
        from alflow.emt import EMT

        return EMT(numbers)
    path = Path(text)
    if not path.is_dir():
        raise InputError(f"potential {text!r}: not a model directory, 'ase:<calculator>', "
                         "'torch:lj' or 'torch:emt'")
    from alflow.mlip import load_potential

    return load_potential(path, numbers, device=device)


def run_exploration(potential: str | Path | Potential, structures: Sequence[Atoms],
                    config: ExploreConfig, out: str | Path | None = None,
                    bias_in: str | Path | None = None,
                    bias_out: str | Path | None = None) -> Trajectory:
    """Load the potential (spec or object), run :func:`explore`, write the trajectory to
    ``out`` and the bias to ``bias_out`` (if given); returns the trajectory."""
    pot = (potential if hasattr(potential, "energy")
           else load_potential_spec(potential, structures[0].numbers, config.device))
    traj, metad = explore(pot, structures, config, bias_in)
    if out is not None:
        write_trajectory(traj, out)
    if metad is not None and bias_out is not None:
        metad.save(bias_out)
    return traj


__all__ = ["load_potential_spec", "run_exploration"]
