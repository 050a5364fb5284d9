"""Submitting campaign steps to their executors, with checkpointing, retries and events.

``Tasks.submit`` returns a handle at once (the step runs on its executor, concurrently with
everything else submitted); ``Tasks.result`` waits for it, retries a failed task up to
``retries`` times (each failure is recorded in the event log), and stores the result under
the hash of the task's inputs. A task whose result is already stored is not run again.

Step functions return ``(json_dict, arrays_dict)``; ``_t0``/``_t1`` in the dict (epoch
seconds, taken inside the worker) mark the time spent inside the step, from which
:meth:`Tasks.busy_seconds` gives the orchestration overhead (wall time not inside any task).

Where and how a step runs (Parsl apps, worker processes, inline calls) is the injected
executor map (:mod:`alflow.campaign.submit`); this module knows only Futures.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from concurrent.futures import as_completed as _as_completed
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from alflow.campaign.checkpoint import Checkpoint, task_key
from alflow.campaign.rundir import EventLog
from alflow.campaign.submit import Submit, submitter
from alflow.errors import AlflowError

log = logging.getLogger(__name__)

Result = tuple[dict[str, Any], dict[str, np.ndarray]]


class TaskFailed(AlflowError):
    """A step failed on every attempt."""


@dataclass
class Handle:
    name: str
    key: str
    fn: Callable[..., Result]
    args: tuple
    kwargs: dict
    executor: str
    future: Future | None = None
    cached: Result | None = None
    attempts: int = 1
    t_submit: float = field(default_factory=time.monotonic)


def in_background(fn: Callable[..., Any], *args: Any, after: Future | None = None) -> Future:
    """Run ``fn(*args)`` in a daemon thread of the driver once ``after`` (if given) is done,
    whatever its outcome; returns the Future of its result. Daemon: a driver stopped by
    SIGTERM does not wait for it (its labels are journalled and recovered on resume)."""
    fut: Future = Future()

    def work() -> None:
        if after is not None:
            after.exception()  # waits; its own Future reports its error
        try:
            fut.set_result(fn(*args))
        except BaseException as err:  # noqa: BLE001 - re-raised by fut.result()
            fut.set_exception(err)

    threading.Thread(target=work, name="alflow-background", daemon=True).start()
    return fut


class Tasks:
    """Runs steps through the executor map ``submitters`` (label -> ``submit(fn, *args) ->
    Future``, :mod:`alflow.campaign.submit`), checkpointed by input hash."""

    def __init__(self, checkpoint: Checkpoint, events: EventLog, retries: int,
                 submitters: Mapping[str, Submit]):
        self.checkpoint = checkpoint
        self.events = events
        self.retries = retries
        self.submitters = dict(submitters)
        self.running: dict[str, Handle] = {}
        self.intervals: list[tuple[float, float]] = []  # (start, end) epoch s inside tasks

    def add_interval(self, t0: float | None, t1: float | None) -> None:
        """Record that a task ran from ``t0`` to ``t1`` (epoch seconds, from the worker)."""
        if t0 is not None and t1 is not None and t1 >= t0:
            self.intervals.append((float(t0), float(t1)))

    def busy_seconds(self, start: float, end: float) -> float:
        """Seconds of [start, end] (epoch) during which at least one task was running: the
        union of the recorded intervals (parallel tasks count once), clipped to the window."""
        spans = sorted((max(a, start), min(b, end)) for a, b in self.intervals
                       if b > start and a < end)
        total, cur_a, cur_b = 0.0, None, None
        for a, b in spans:
            if cur_b is None or a > cur_b:
                if cur_b is not None:
                    total += cur_b - cur_a
                cur_a, cur_b = a, b
            else:
                cur_b = max(cur_b, b)
        if cur_b is not None:
            total += cur_b - cur_a
        return total

    def _launch(self, h: Handle) -> None:
        h.t_submit = time.monotonic()
        h.future = self.submit_fn(h.executor)(h.fn, *h.args, **h.kwargs)

    def submit_fn(self, executor: str) -> Submit:
        """The ``submit`` of ``executor`` (labels go through it too)."""
        return submitter(self.submitters, executor)

    def submit(self, name: str, inputs: dict[str, Any], fn: Callable[..., Result], *args: Any,
               executor: str = "cpu", **kwargs: Any) -> Handle:
        key = task_key(name, inputs)
        h = Handle(name, key, fn, args, kwargs, executor)
        stored = self.checkpoint.load(name, key)
        if stored is not None:
            h.cached = stored
            self.events.emit("task_cached", task=name, key=key[:16])
            return h
        self.events.emit("task_start", task=name, key=key[:16], executor=executor)
        self.running[f"{name}#{key[:8]}"] = h
        self._launch(h)
        return h

    def as_completed(self, handles: Mapping[str, Handle]) -> Iterator[str]:
        """The names of ``handles`` as their tasks finish: stored results first, then in
        order of completion (a failed task is yielded too: :meth:`result` retries it)."""
        waiting: dict[Future, str] = {}
        for name, h in handles.items():
            if h.cached is not None or h.future is None:
                yield name
            else:
                waiting[h.future] = name
        for fut in _as_completed(waiting):
            yield waiting[fut]

    def result(self, h: Handle) -> Result:
        if h.cached is not None:
            return h.cached
        while True:
            try:
                out = h.future.result()  # type: ignore[union-attr]
                break
            except Exception as err:
                self.events.emit("task_failed", task=h.name, key=h.key[:16], attempt=h.attempts,
                                 error=f"{type(err).__name__}: {err}"[:500])
                log.warning("task %s failed (attempt %d): %s", h.name, h.attempts, err)
                if h.attempts > self.retries:
                    self.running.pop(f"{h.name}#{h.key[:8]}", None)
                    raise TaskFailed(f"step {h.name} failed after {h.attempts} attempt(s): "
                                     f"{type(err).__name__}: {err}") from err
                h.attempts += 1
                self._launch(h)
        js, arrays = out
        duration = time.monotonic() - h.t_submit
        self.add_interval(js.get("_t0"), js.get("_t1"))
        self.checkpoint.save(h.name, h.key, js, arrays)
        self.running.pop(f"{h.name}#{h.key[:8]}", None)
        self.events.emit("task_done", task=h.name, key=h.key[:16], attempts=h.attempts,
                         seconds=round(duration, 3))
        h.cached = (js, arrays)
        return h.cached
