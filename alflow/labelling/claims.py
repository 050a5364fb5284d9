"""Claims: which live writer is computing which label, so no two compute the same one.

A writer claims a key before computing its label and releases it once the label is committed
(or abandoned). The claims of one store live beside it, in ``<store>.claims`` (JSON: key ->
holder), read and rewritten (temporary file + ``os.replace``) under an ``fcntl`` lock on
``<store>.claims.lock``; ``<store>`` is the store's real path, so every name of one store
shares its claims. A holder is ``{pid, host, start, token, time}``: ``start`` is the process'
start time (a recycled pid is not the holder), ``token`` tells writers of one process apart
and ``time`` (epoch s) is renewed every ``ttl_s / 4`` by a heartbeat thread while claims are
held. A claim lapses when its holder is dead (same host: no such process, or another process
under that pid) or its lease is stale (``time`` older than ``ttl_s``: how a dead writer on
another host, or a hung one, is noticed), and a successor takes it over.

Only the store's path is used: the store file itself is never read or written here.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_TTL_S = 60.0


def process_start(pid: int) -> str | None:
    """Start time of process ``pid`` (clock ticks since boot, from /proc), or None if there is
    no such process; "" where /proc is unavailable (then any live process counts)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            # the command name (field 2) may hold spaces: fields after its closing parenthesis
            return fh.read().rpartition(")")[2].split()[19]
    except FileNotFoundError:
        pass
    except OSError:
        return ""
    if not Path("/proc/self/stat").exists():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return ""
        return ""
    return None


def holder_alive(holder: dict[str, Any], ttl_s: float, now: float | None = None) -> bool:
    """Whether the writer ``holder`` may still be computing (see the module docstring)."""
    now = time.time() if now is None else now
    if now - float(holder.get("time", 0)) > ttl_s:
        return False
    if holder.get("host") != socket.gethostname():
        return True
    start = process_start(int(holder.get("pid", -1)))
    return start is not None and (start == "" or start == holder.get("start"))


class Claims:
    """The claims of one writer on the keys of the store at ``store_path``.

    ``claim(keys)`` takes the keys no live writer holds and returns them (``others`` then
    maps the rest to their holders); ``release(keys)`` gives them up; ``close()`` releases
    everything still held and stops the heartbeat.
    """

    def __init__(self, store_path: str | Path, ttl_s: float = DEFAULT_TTL_S):
        real = Path(os.path.realpath(store_path))
        self.path = real.with_name(real.name + ".claims")
        self._lock_path = real.with_name(real.name + ".claims.lock")
        self.ttl_s = ttl_s
        pid = os.getpid()
        self.me = {"pid": pid, "host": socket.gethostname(), "start": process_start(pid),
                   "token": uuid.uuid4().hex}
        self.held: set[str] = set()
        self.others: dict[str, dict[str, Any]] = {}  # last claim(): keys held elsewhere
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    # -- the file ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def _table(self) -> Iterator[dict[str, dict[str, Any]]]:
        """The claims table under the lock; changes are written back atomically."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self._lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                try:
                    table = json.loads(self.path.read_text())
                    if not isinstance(table, dict):
                        raise ValueError("not a JSON object")
                except FileNotFoundError:
                    table = {}
                except ValueError as err:  # only our own atomic writes make it: never torn
                    log.warning("%s unreadable (%s): starting an empty claims table",
                                self.path, err)
                    table = {}
                before = json.dumps(table, sort_keys=True)
                yield table
                after = json.dumps(table, sort_keys=True)
                if after != before and not table:  # no claims: no file beside the store
                    self.path.unlink(missing_ok=True)
                elif after != before:
                    tmp = self.path.with_name(f"{self.path.name}.tmp-{os.getpid()}")
                    tmp.write_text(after)
                    os.replace(tmp, self.path)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _mine(self, holder: dict[str, Any]) -> bool:
        return holder.get("token") == self.me["token"]

    # -- API --------------------------------------------------------------------------------
    def claim(self, keys: Iterable[str]) -> set[str]:
        """Claim every key of ``keys`` that no other live writer holds; returns those now held
        by this writer (including ones it held already)."""
        keys = list(dict.fromkeys(keys))
        if not keys:
            return set()
        got: set[str] = set()
        now = time.time()
        with self._mutex, self._table() as table:
            self.others = {}
            alive: dict[tuple, bool] = {}  # one /proc look-up per holder
            for key in keys:
                holder = table.get(key)
                if holder is not None and not self._mine(holder):
                    h = (holder.get("token"), holder.get("time"))
                    if h not in alive:
                        alive[h] = holder_alive(holder, self.ttl_s, now)
                if holder is not None and not self._mine(holder) and alive[h]:
                    self.others[key] = holder
                else:
                    if holder is not None and not self._mine(holder):
                        log.info("taking over the claim on %s of pid %s on %s", key[:12],
                                 holder.get("pid"), holder.get("host"))
                    table[key] = {**self.me, "time": now}
                    got.add(key)
            self.held |= got
        if got:
            self._start_heartbeat()
        return got

    def release(self, keys: Iterable[str]) -> None:
        """Give up the claims on ``keys`` (those this writer holds)."""
        keys = [k for k in keys if k in self.held]
        if not keys:
            return
        with self._mutex, self._table() as table:
            for key in keys:
                if key in table and self._mine(table[key]):
                    del table[key]
            self.held -= set(keys)

    def holders(self) -> dict[str, dict[str, Any]]:
        """The current table (key -> holder), for inspection."""
        with self._table() as table:
            return dict(table)

    def close(self) -> None:
        """Release every claim still held and stop the heartbeat."""
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
            self._heartbeat = None
        self.release(list(self.held))

    def __enter__(self) -> Claims:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- lease renewal ----------------------------------------------------------------------
    def _start_heartbeat(self) -> None:
        if self._heartbeat is None or not self._heartbeat.is_alive():
            self._stop.clear()
            self._heartbeat = threading.Thread(target=self._renew, name="claims-heartbeat",
                                               daemon=True)
            self._heartbeat.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl_s / 4):
            if not self.held:
                continue
            try:
                now = time.time()
                with self._mutex, self._table() as table:
                    for key in self.held:
                        if key in table and self._mine(table[key]):
                            table[key]["time"] = now
            except OSError as err:  # a transient file-system error: try again next beat
                log.warning("cannot renew the claims in %s: %s", self.path, err)
