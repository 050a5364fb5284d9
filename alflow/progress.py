"""Progress of long loops: rich bars in a terminal, plain log lines elsewhere.

Science code reports without knowing where it runs (no Parsl, no campaign)::

    with track("MCMC pbp", total=cfg.iterations, unit="it") as bar:
        for it in range(cfg.iterations):
            ...
            bar.advance()

Where the reports go is this process's *sink* (:func:`set_sink`):

- the default, :class:`ConsoleSink`: a rich progress display (description, bar, done/total,
  rate, time left) when stderr is a terminal, else an INFO log line per bar at most every
  ``LOG_EVERY_S`` seconds and when it ends;
- :class:`DirSink` in a campaign's worker processes: each bar is a small JSON file in the run
  directory's ``progress/`` folder (written at most twice a second, removed when the bar
  ends), which :class:`Board` in the driver polls and shows on the driver's console sink.
  Files work the same for workers in the driver's process pool, HTEX workers and Slurm
  blocks (the run directory is shared).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from itertools import count
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)

LOG_EVERY_S = 15.0
WRITE_EVERY_S = 0.5
_ids = count()


@dataclass
class Bar:
    """One long loop: ``done`` of ``total`` (None: unknown) ``unit`` since ``t0`` (epoch s)."""

    name: str
    total: float | None = None
    done: float = 0.0
    unit: str = "it"
    t0: float = field(default_factory=time.time)
    key: str = field(default_factory=lambda: f"{os.getpid()}-{next(_ids)}")

    @property
    def rate(self) -> float:
        """Units per second so far."""
        return self.done / max(time.time() - self.t0, 1e-9)

    def text(self) -> str:
        """One line for a log: name, done/total, rate, time left."""
        total = f"/{self.total:g}" if self.total else ""
        out = f"{self.name}: {self.done:g}{total} {self.unit} ({self.rate:.3g} {self.unit}/s"
        if self.total and self.done and self.done < self.total:
            out += f", {(self.total - self.done) / self.rate:.0f} s left"
        return out + ")"


class Sink(Protocol):
    def update(self, bar: Bar) -> None: ...
    def close(self, bar: Bar) -> None: ...


class ConsoleSink:
    """Rich bars on stderr in a terminal (``rich=None``: when stderr is a tty), else log
    lines."""

    def __init__(self, rich: bool | None = None):
        self.rich = sys.stderr.isatty() if rich is None else rich
        self._lock = threading.RLock()
        self._display = None
        self._tasks: dict[str, int] = {}
        self._logged: dict[str, float] = {}

    def _start(self):
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self._display = Progress(TextColumn("{task.description}"), BarColumn(),
                                 TextColumn("{task.fields[count]}"),
                                 TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
                                 TextColumn("{task.fields[left]}"), transient=True)
        self._display.start()

    @staticmethod
    def _fields(bar: Bar) -> dict[str, str]:
        """done/total, rate and time left of a counted bar (blank for an uncounted one)."""
        if not bar.total:
            return {"count": "", "rate": "", "left": ""}
        left = ((bar.total - bar.done) / bar.rate) if bar.done else None
        return {"count": f"{bar.done:g}/{bar.total:g} {bar.unit}",
                "rate": f"{bar.rate:.3g} {bar.unit}/s",
                "left": "" if left is None else f"{left:.0f} s left"}

    def update(self, bar: Bar) -> None:
        with self._lock:
            if not self.rich:
                now = time.time()
                if now - self._logged.setdefault(bar.key, bar.t0) >= LOG_EVERY_S:
                    self._logged[bar.key] = now
                    log.info("%s", bar.text())
                return
            if self._display is None:
                self._start()
            fields = self._fields(bar)
            task = self._tasks.get(bar.key)
            if task is None:
                self._tasks[bar.key] = self._display.add_task(
                    bar.name, total=bar.total, completed=bar.done, **fields)
            else:
                self._display.update(task, total=bar.total, completed=bar.done, **fields)

    def close(self, bar: Bar) -> None:
        with self._lock:
            if not self.rich:
                if self._logged.pop(bar.key, None) is not None or bar.done:
                    log.info("%s", bar.text())
                return
            task = self._tasks.pop(bar.key, None)
            if task is not None and self._display is not None:
                self._display.remove_task(task)
                log.info("%s", bar.text())
            if not self._tasks and self._display is not None:
                self._display.stop()
                self._display = None


class DirSink:
    """Bars as JSON files in ``directory`` (for :class:`Board`), each prefixed by ``prefix``."""

    def __init__(self, directory: str | Path, prefix: str = ""):
        self.dir = Path(directory)
        self.prefix = prefix
        self._written: dict[str, float] = {}

    def _path(self, bar: Bar) -> Path:
        return self.dir / f"{bar.key}.json"

    def update(self, bar: Bar) -> None:
        now = time.time()
        if now - self._written.get(bar.key, 0.0) < WRITE_EVERY_S:
            return
        self._written[bar.key] = now
        with contextlib.suppress(OSError):  # progress never stops the work
            self.dir.mkdir(parents=True, exist_ok=True)
            data = {**asdict(bar), "name": f"{self.prefix}{bar.name}", "time": now}
            tmp = self._path(bar).with_suffix(".tmp")
            tmp.write_text(json.dumps(data))
            os.replace(tmp, self._path(bar))

    def close(self, bar: Bar) -> None:
        self._written.pop(bar.key, None)
        with contextlib.suppress(OSError):
            self._path(bar).unlink(missing_ok=True)


_sink: Sink | None = None


def set_sink(sink: Sink | None) -> None:
    """Send this process's bars to ``sink`` (None: the default console sink)."""
    global _sink
    _sink = sink


def sink() -> Sink:
    global _sink
    if _sink is None:
        _sink = ConsoleSink()
    return _sink


class Tracker:
    """The handle :func:`track` yields (and :func:`start` returns): ``advance(n)``,
    ``set(done)``, ``close()``."""

    def __init__(self, bar: Bar, to: Sink):
        self.bar, self._to = bar, to
        self._closed = False

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._to.close(self.bar)

    def __del__(self) -> None:  # a loop left by an exception: its bar ends too
        with contextlib.suppress(Exception):
            self.close()

    def advance(self, n: float = 1) -> None:
        self.bar.done += n
        self._to.update(self.bar)

    def set(self, done: float) -> None:
        self.bar.done = done
        self._to.update(self.bar)


class _Null:
    def update(self, bar: Bar) -> None:
        pass

    def close(self, bar: Bar) -> None:
        pass


@contextlib.contextmanager
def track(name: str, total: float | None = None, unit: str = "it",
          enabled: bool = True) -> Iterator[Tracker]:
    """A progress bar for a loop of ``total`` ``unit`` (see the module doc); ``enabled``
    False shows nothing (e.g. on every DDP rank but the first)."""
    tracker = start(name, total, unit, enabled)
    try:
        yield tracker
    finally:
        tracker.close()


def start(name: str, total: float | None = None, unit: str = "it",
          enabled: bool = True) -> Tracker:
    """:func:`track` for a loop that cannot be indented under a ``with``: call ``close()``
    after it (an abandoned bar closes when its tracker is collected)."""
    to = sink() if enabled else _Null()
    bar = Bar(name, total, unit=unit)
    to.update(bar)
    return Tracker(bar, to)


class Board:
    """The driver's view of its workers' bars: a thread that polls ``directory`` (of
    :class:`DirSink` files) every ``period`` s and shows every bar on ``to``."""

    def __init__(self, directory: str | Path, to: Sink | None = None, period: float = 0.5):
        self.dir = Path(directory)
        self.to = to or sink()
        self.period = period
        self._bars: dict[str, Bar] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll(self) -> None:
        """Read the bar files once: new and changed bars updated, vanished ones closed."""
        seen = set()
        for f in self.dir.glob("*.json") if self.dir.is_dir() else []:
            try:
                d = json.loads(f.read_text())
                bar = Bar(d["name"], d["total"], d["done"], d["unit"], d["t0"], d["key"])
            except (OSError, ValueError, KeyError, TypeError):
                continue  # vanished or being replaced
            seen.add(bar.key)
            self._bars[bar.key] = bar
            self.to.update(bar)
        for key in [k for k in self._bars if k not in seen]:
            self.to.close(self._bars.pop(key))

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            with contextlib.suppress(Exception):  # the display never stops the campaign
                self.poll()

    def __enter__(self) -> Board:
        self._thread = threading.Thread(target=self._run, name="alflow-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for bar in self._bars.values():
            self.to.close(bar)
        self._bars.clear()


__all__ = ["Bar", "Board", "ConsoleSink", "DirSink", "Sink", "Tracker", "set_sink", "sink",
           "start", "track"]
