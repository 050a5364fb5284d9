"""Parsl apps of the campaign's own steps (explore, train, flows, label with journal).

The step functions live in :mod:`alflow.campaign.steps` and :mod:`alflow.campaign.labels`
(plain functions, testable without Parsl); :func:`app` wraps one as a ``python_app`` bound to
the executor label the campaign config assigns to that step (``cpu``, ``dft`` or ``gpu``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from parsl import python_app

_APPS: dict[tuple[Any, str], Any] = {}
_LOCK = threading.Lock()


def app(fn: Callable, executor: str) -> Any:
    """A Parsl python_app running ``fn`` on ``executor`` (one per function and label)."""
    with _LOCK:
        key = (fn, executor)
        if key not in _APPS:
            _APPS[key] = python_app(fn, executors=[executor])
        return _APPS[key]
