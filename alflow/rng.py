"""Torch draws from an explicit generator, never from torch's global one.

torch's global random generator is one per process: steps that run at once in threads of
one process (the ``local-threads`` site) would share it, and what one step draws would then
depend on how the threads interleave. alflow's science therefore takes a ``torch.Generator``
wherever it draws. Module construction (``nn.Linear``, ``nn.Embedding``, MACE's e3nn layers)
draws its initial weights inside torch and third-party code that takes no generator:
:func:`drawing_from` routes those draws to a generator of the caller's, in the calling thread
only (torch keeps the mode stack per thread), so a model's initial weights are a pure function
of that generator's seed whatever other threads draw meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

# torch functions and tensor methods that draw and take ``generator=``
_DRAWS = frozenset({
    "rand", "randn", "randint", "randperm", "rand_like", "randn_like", "randint_like",
    "normal", "bernoulli", "multinomial", "poisson", "_standard_gamma",
    "uniform_", "normal_", "random_", "exponential_", "cauchy_", "log_normal_", "geometric_",
    "bernoulli_",
})
# torch functions that draw from the global generator and take none
_GLOBAL_ONLY = frozenset({
    "dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout",
    "rrelu", "rrelu_", "gumbel_softmax", "binomial", "_sample_dirichlet",
})


class _DrawingFrom(TorchFunctionMode):
    def __init__(self, generator: torch.Generator):
        super().__init__()
        self.generator = generator

    def __torch_function__(self, func: Callable, types: Any, args: tuple = (),
                           kwargs: dict | None = None) -> Any:
        kwargs = dict(kwargs or {})
        name = getattr(func, "__name__", "")
        if name in _GLOBAL_ONLY:
            raise RuntimeError(f"torch.{name} draws from torch's global generator only; "
                               "draw its randomness from an explicit generator instead")
        if name in _DRAWS or ("generator" in kwargs and kwargs["generator"] is None):
            if kwargs.get("generator") is None:
                kwargs["generator"] = self.generator
        return func(*args, **kwargs)


@contextmanager
def drawing_from(generator: torch.Generator) -> Iterator[torch.Generator]:
    """Within the block, this thread's torch draws that would use the global generator
    (``torch.randn``, ``tensor.uniform_``, ``nn.init.*``, module construction) draw from
    ``generator``; those that cannot (dropout, ``rrelu``) raise. Other threads are untouched."""
    with _DrawingFrom(generator):
        yield generator


__all__ = ["drawing_from"]
