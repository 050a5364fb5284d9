"""State checks of MCMC moves, answered now or later.

A *check* takes configurations (:meth:`submit`, with their energies and forces when known)
and says for each ticket whether it lies in the state (``status``: 1 inside, −1 outside, 0
not yet known). :class:`alflow.states.QuenchCheck` answers by quench (the quench's force
calls may ride along the sampler's own, ``check.fire``); :class:`PredicateCheck` answers a
plain predicate (a CV region, a test's lambda) at once. Tickets are int64 tensors; −1 stands
for "nothing asked" (status 1: a walker that did not move is still inside).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch

Predicate = Callable[[torch.Tensor], torch.Tensor]


class Check(Protocol):
    fire: Any

    def submit(self, x: torch.Tensor, energy: torch.Tensor | None = None,
               forces: torch.Tensor | None = None) -> torch.Tensor: ...
    def status(self, ids: torch.Tensor) -> torch.Tensor: ...
    def drain(self) -> None: ...
    def forget(self, ids: torch.Tensor) -> None: ...


class PredicateCheck:
    """A predicate (B, N, 3) -> (B,) bool as a :class:`Check`: what was submitted since the
    last answer is evaluated in one call at the next :meth:`status`."""

    fire = None

    def __init__(self, member: Predicate):
        self.member = member
        self._status: dict[int, int] = {}
        self._queue: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._next = 0

    def submit(self, x: torch.Tensor, energy: torch.Tensor | None = None,
               forces: torch.Tensor | None = None) -> torch.Tensor:
        ids = torch.arange(self._next, self._next + len(x))
        self._next += len(x)
        if len(x):
            self._queue.append((ids, x))
        return ids

    def status(self, ids: torch.Tensor) -> torch.Tensor:
        if self._queue:
            qi, qx = (torch.cat(v) for v in zip(*self._queue, strict=True))
            self._queue = []
            inside = torch.as_tensor(self.member(qx), dtype=torch.bool)
            self._status.update(zip(qi.tolist(), torch.where(inside, 1, -1).tolist(),
                                    strict=True))
        return torch.tensor([self._status.get(i, 0) for i in ids.tolist()], dtype=torch.int8)

    def drain(self) -> None:
        pass

    def forget(self, ids: torch.Tensor) -> None:
        for i in ids.tolist():
            self._status.pop(i, None)


def as_check(member: Predicate | Check | None) -> Check | None:
    """``member`` as a :class:`Check` (None stays None: no state restriction)."""
    if member is None or hasattr(member, "submit"):
        return member  # type: ignore[return-value]
    return PredicateCheck(member)


def statuses(check: Check | None, ids: torch.Tensor) -> torch.Tensor:
    """int8 statuses of tickets of any shape (−1 tickets: 1, nothing was asked)."""
    out = torch.ones(ids.shape, dtype=torch.int8)
    asked = ids >= 0
    if check is not None and asked.any():
        out[asked] = check.status(ids[asked])
    return out


__all__ = ["Check", "PredicateCheck", "as_check", "statuses"]
