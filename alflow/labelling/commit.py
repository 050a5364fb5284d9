"""Finished labels become durable at once, whatever the writer does next.

:class:`Committer` appends finished records to the store from a background thread: a record
handed to ``put`` is committed as soon as the commit before it ends (labels finishing
together share one atomic commit), never after the next calculation, so a writer killed
(SIGKILL, SIGTERM) while computing loses only the labels in flight. The bound is
``MAX_DELAY_S``: a record waits at most ``delay_s`` (≤ 1 s) plus one commit.
:func:`sigterm_raises` turns SIGTERM into ``SystemExit`` in the main thread so that the
pending records are committed before the process ends.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator

from alflow.dataset import LabelRecord, LabelStore

log = logging.getLogger(__name__)

MAX_DELAY_S = 1.0


class Committer:
    """Commit records to ``store`` in a background thread (see the module docstring).

    ``delay_s``: how long the first record of a commit waits for others to join it (0: none;
    at most ``MAX_DELAY_S``). ``on_commit(records)`` runs after each successful commit (e.g.
    to release the claims). A failed commit stops the committer; its error is raised by the
    next ``put`` or by ``close``.
    """

    def __init__(self, store: LabelStore, replace_failed: bool = False, delay_s: float = 0.0,
                 on_commit: Callable[[list[LabelRecord]], None] | None = None):
        if not 0 <= delay_s <= MAX_DELAY_S:
            raise ValueError(f"commit delay must be within [0, {MAX_DELAY_S}] s, got {delay_s}")
        self.store = store
        self.replace_failed = replace_failed
        self.delay_s = delay_s
        self.on_commit = on_commit
        self.commits = 0
        self._pending: list[LabelRecord] = []
        self._cond = threading.Condition()
        self._closing = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="label-commit", daemon=True)
        self._thread.start()

    def put(self, record: LabelRecord) -> None:
        """Queue ``record`` for the next commit."""
        self._raise()
        with self._cond:
            self._pending.append(record)
            self._cond.notify()

    def close(self) -> None:
        """Commit everything queued, stop the thread; raises a commit error."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join()
        self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            raise err

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    self._cond.wait()
                if not self._pending:
                    return
            if self.delay_s and not self._closing:
                time.sleep(self.delay_s)
            with self._cond:
                batch, self._pending = self._pending, []
            try:
                self.store.append_many(batch, replace_failed=self.replace_failed)
                self.commits += 1
                if self.on_commit is not None:
                    self.on_commit(batch)
            except BaseException as err:  # handed to the labelling thread; stop committing
                log.error("commit of %d label(s) to %s failed: %s", len(batch), self.store.path,
                          err)
                self._error = err
                return


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """In the main thread: SIGTERM raises ``SystemExit(143)`` (so ``finally`` blocks commit
    what is pending); other threads: nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, _frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends at once
        log.warning("SIGTERM: committing the finished labels, then stopping")
        raise SystemExit(128 + signum)

    old = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)
