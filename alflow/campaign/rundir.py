"""The run directory: its layout (alflow.runlayout, documented in docs/campaign.md), the driver
lock, the event log, the status files and the oracle-call journal.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from alflow.campaign.checkpoint import atomic_write_text
from alflow.errors import AlflowError
from alflow.runlayout import RunLayout


class RunDir(RunLayout):
    """Paths of one campaign's run directory (alflow.runlayout.RunLayout)."""


class DriverLock:
    """Exclusive ``fcntl`` lock on ``RUN_DIR/lock``: one driver per run directory.

    The kernel drops the lock when the holder dies (even by SIGKILL), so a resume after a
    crash never finds a stale lock.
    """

    def __init__(self, path: Path):
        self.path = path
        self._fh = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise AlflowError(f"{self.path.parent} is being written by another driver "
                              f"({holder}); wait for it or stop it first") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        fh.flush()
        self._fh = fh

    def release(self) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    def __enter__(self) -> DriverLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def append_line(path: Path, obj: dict[str, Any]) -> None:
    """Append one JSON line with a single ``write`` on an O_APPEND descriptor, then fsync."""
    line = (json.dumps(obj, sort_keys=True, default=str) + "\n").encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_lines(path: Path) -> list[dict[str, Any]]:
    """Every complete JSON line of a JSON-lines file (a torn last line is skipped)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def _clean(obj: Any) -> Any:
    from alflow.campaign.checkpoint import to_jsonable

    return to_jsonable(obj)


class EventLog:
    """``events.jsonl``: one JSON object per event, with UTC time and seconds since start."""

    def __init__(self, path: Path):
        self.path = path
        self.t0 = time.monotonic()
        self._lock = threading.Lock()

    def emit(self, event: str, **fields: Any) -> dict[str, Any]:
        rec = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "elapsed_s": round(time.monotonic() - self.t0, 3), "event": event, **fields}
        with self._lock:
            append_line(self.path, _clean(rec))
        return rec


def oracle_calls(run: RunDir) -> int:
    """Calculations the oracle performed in this run (every attempt, repeats included)."""
    return len(read_lines(run.oracle_journal))


def write_status(run: RunDir, status: dict[str, Any]) -> None:
    """Write status.json and status.txt atomically."""
    from alflow.campaign.checkpoint import to_jsonable

    status = to_jsonable(status)
    atomic_write_text(run.status_json, json.dumps(status, indent=1, sort_keys=True))
    atomic_write_text(run.status_txt, format_status(status))


def _fmt_df(d: dict[str, Any] | None, kt: float | None) -> str:
    if not d or d.get("value_ev") is None:
        return "ΔF: not yet estimated"
    s = (f"ΔF = F({d['to']}) − F({d['from']}) = {d['value_ev']:.5f} ± "
         f"{d['error_ev']:.5f} eV")
    if kt:
        s += f"  ({d['value_ev'] / kt:.3f} ± {d['error_ev'] / kt:.3f} kT)"
    if d.get("dft_corrected_ev") is not None:
        c, err = d["dft_corrected_ev"], d.get("dft_corrected_error_ev")
        s += f"\n  corrected to the oracle: {c:.5f}"
        s += f" ± {err:.5f} eV" if err is not None else " eV"
        if kt:
            s += f"  ({c / kt:.3f}" + (f" ± {err / kt:.3f}" if err is not None else "") + " kT)"
    return s


def _fmt_history_value(v: float | None, e: float | None, kt: float | None) -> str:
    """'+v ± e' in kT when kT is known, else in eV; '—' without a value."""
    if v is None:
        return "—"
    scale, unit, n = (kt, "kT", 3) if kt else (1.0, "eV", 5)
    err = f" ± {e / scale:.{n}f}" if e is not None else ""
    return f"{v / scale:+.{n}f}{err} {unit}"


def format_status(st: dict[str, Any]) -> str:
    """Human-readable status (what ``alflow status`` prints)."""
    kt = st.get("kt_ev")
    lines = [f"campaign {st.get('name', '?')} in {st.get('run_dir', '?')}",
             f"state: {st.get('state', '?')}"
             + (f" ({st['stop_reason']})" if st.get("stop_reason") else ""),
             f"generation: {st.get('generation')}   converged: {st.get('converged')}",
             f"temperature: {st.get('temperature_k')} K (kT = {kt:.6f} eV)" if kt else "",
             f"labels: {st.get('labels', {}).get('ok', 0)} ok, "
             f"{st.get('labels', {}).get('failed', 0)} failed; "
             f"oracle calls: {st.get('oracle_calls', 0)}",
             _fmt_df(st.get("delta_f"), kt)]
    hist = st.get("history") or []
    if hist:
        lines.append("history:")
        for h in hist:
            val = _fmt_history_value(h.get("value_ev"), h.get("error_ev"), kt)
            cor = h.get("corrected_ev")
            cor = ("" if cor is None else "  corrected " + _fmt_history_value(
                cor, h.get("corrected_error_ev"), kt))
            rh = h.get("rhat")
            lines.append(f"  gen {h['generation']:>3}: ΔF {val}{cor}  labels "
                         f"{h.get('labels_total')}" + (f"  R-hat {rh:.3f}" if rh is not None
                                                       else ""))
    running = st.get("running") or []
    if running:
        lines.append("running: " + ", ".join(running))
    return "\n".join(x for x in lines if x) + "\n"
