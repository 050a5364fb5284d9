"""Labelling: configurations -> DFT (or oracle) energies and forces, many at once.

- :func:`make_labeller` builds a labeller from a shorthand (``pyscf:pbe/def2-svp``, ``xtb:gfn1``,
  ``ase:emt``,
  ``ase:lj(sigma=3.405, epsilon=0.0103, rc=34.05)``), a :class:`LabellerConfig` or a dict.
- :func:`label_many` labels a batch, skipping stored keys and storing each label as it
  finishes; ``python -m alflow.labelling.batch`` is the MPI driver.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from alflow.config import validate_model
from alflow.labelling.base import (
    BaseLabeller,
    Labeller,
    LabellerConfig,
    LabelResult,
    parse_method,
)

DEFAULT_METHOD = "pyscf:pbe/def2-svp"


def make_labeller(method: str | LabellerConfig | Mapping[str, Any] = DEFAULT_METHOD,
                  **overrides: Any) -> BaseLabeller:
    """A labeller for ``method``: a shorthand string, a LabellerConfig or a mapping of its
    fields; ``overrides`` set further fields (e.g. ``threads=2``)."""
    if isinstance(method, str):
        config = parse_method(method, **overrides)
    elif isinstance(method, LabellerConfig):
        config = method.model_copy(update=overrides) if overrides else method
    else:
        config = validate_model(LabellerConfig, {**dict(method), **overrides}, "labeller config")
    if config.backend == "ase":
        from alflow.labelling.ase_calc import AseLabeller

        return AseLabeller(config)
    if config.backend == "xtb":
        from alflow.labelling.xtb import XtbLabeller

        return XtbLabeller(config)
    from alflow.labelling.pyscf import PyscfLabeller

    return PyscfLabeller(config)


def __getattr__(name: str):
    # batch is imported lazily so that ``python -m alflow.labelling.batch`` runs it only once
    if name in ("label_many", "label_one"):
        from alflow.labelling import batch

        return getattr(batch, name)
    raise AttributeError(f"module 'alflow.labelling' has no attribute {name!r}")


__all__ = ["DEFAULT_METHOD", "BaseLabeller", "LabelResult", "Labeller", "LabellerConfig",
           "label_many", "label_one", "make_labeller", "parse_method"]
