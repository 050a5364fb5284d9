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
from alflow.errors import AlflowError, ConfigError
from alflow.runlayout import MARKER, RunLayout

MARKER_FORMAT = 1  # version of the run directory's layout
CONFIG_HEADER = "# resolved campaign configuration (alflow resume reads it)"
LAUNCHER_ENTRIES = {"logs"}  # scripts/campaign.sbatch writes logs/driver-<jobid>.out first


class RunDir(RunLayout):
    """Paths of one campaign's run directory (alflow.runlayout.RunLayout)."""


def _marker_format(run: RunDir) -> int | None:
    """The layout version the marker records; None without a marker."""
    if not run.marker.is_file():
        return None
    try:
        return int(json.loads(run.marker.read_text())["alflow_run_format"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise AlflowError(f"{run.marker}: damaged run-directory marker ({err}); it should "
                          f'hold {{"alflow_run_format": {MARKER_FORMAT}}}') from None


def _write_marker(run: RunDir) -> None:
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    atomic_write_text(run.marker, json.dumps({"alflow_run_format": MARKER_FORMAT,
                                              "created": created}) + "\n")


def _made_before_marker(run: RunDir) -> bool:
    """A run directory of an alflow without the marker: its campaign.yaml is alflow's resolved
    dump (first line), the event log records a run start and checkpoints exist. A user's
    campaign folder has none of the three."""
    try:
        with open(run.config) as fh:
            first = fh.readline().rstrip("\n")
    except (OSError, UnicodeDecodeError):
        return False
    return (first == CONFIG_HEADER and any(run.results.glob("*.json"))
            and any(e.get("event") == "run_start" for e in read_lines(run.events)))


def _only_launcher_files(root: Path) -> bool:
    """Empty, or holding only what scripts/campaign.sbatch writes before alflow starts."""
    for p in root.iterdir():
        if p.name not in LAUNCHER_ENTRIES or not p.is_dir():
            return False
        if any(not (f.name.startswith("driver-") and f.name.endswith(".out"))
               for f in p.iterdir()):
            return False
    return True


def is_run_dir(root: str | Path) -> bool:
    """Whether ``root`` is a run directory alflow created (it holds the marker)."""
    return _marker_format(RunDir(root)) is not None


def open_run_dir(root: str | Path) -> RunDir:
    """An existing run directory, for resuming or adding to it; AlflowError (nothing written)
    if ``root`` is not one. A run directory made before the marker existed is recognised
    (``_made_before_marker``) and given its marker."""
    run = RunDir(root)
    fmt = _marker_format(run)
    if fmt is not None:
        if fmt > MARKER_FORMAT:
            raise AlflowError(f"{run.root} was written by a newer alflow (run-directory "
                              f"format {fmt}, this one reads {MARKER_FORMAT}): upgrade alflow")
        return run
    if not run.root.is_dir():
        raise AlflowError(f"run directory not found: {run.root}")
    if _made_before_marker(run):
        _write_marker(run)
        return run
    hint = (f"To start the campaign it describes: alflow run {run.config} --dir NEW_RUN_DIR"
            if run.config.exists() else
            "`alflow run CAMPAIGN.yaml --dir RUN_DIR` creates a run directory")
    raise AlflowError(f"{run.root} is not an alflow run directory (it has no {MARKER} "
                      f"marker), so alflow writes nothing there. {hint}")


def create_run_dir(root: str | Path) -> RunDir:
    """The run directory of ``alflow run``: a new or empty directory gets the marker; an
    existing run directory is returned as it is; any other directory is refused (AlflowError,
    nothing written)."""
    run = RunDir(root)
    if run.root.exists() and not run.root.is_dir():
        raise AlflowError(f"--dir {run.root}: exists and is not a directory")
    if run.root.is_dir() and (is_run_dir(run.root) or _made_before_marker(run)):
        return open_run_dir(run.root)
    if run.root.is_dir() and not _only_launcher_files(run.root):
        raise AlflowError(f"--dir {run.root}: the directory exists and is not an alflow run "
                          f"directory (no {MARKER} marker); alflow writes only into a new or "
                          "empty directory: choose another --dir")
    run.root.mkdir(parents=True, exist_ok=True)
    _write_marker(run)
    return run


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
        if d.get("corrected_to"):
            s += f"  [{d['corrected_to']}]"
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
        several = len({h.get("oracle") for h in hist}) > 1  # a cheap oracle's stage first
        for h in hist:
            val = _fmt_history_value(h.get("value_ev"), h.get("error_ev"), kt)
            cor = h.get("corrected_ev")
            cor = ("" if cor is None else "  corrected " + _fmt_history_value(
                cor, h.get("corrected_error_ev"), kt))
            rh = h.get("rhat")
            lines.append(f"  gen {h['generation']:>3}: ΔF {val}{cor}  labels "
                         f"{h.get('labels_total')}" + (f"  R-hat {rh:.3f}" if rh is not None
                                                       else "")
                         + (f"  [{h.get('oracle')}]" if several else ""))
    running = st.get("running") or []
    if running:
        lines.append("running: " + ", ".join(running))
    lines += [f"warning: {w}" for w in st.get("warnings") or []]
    return "\n".join(x for x in lines if x) + "\n"


def refuse_other_campaign(root: Path, old_name: str | None, same: bool) -> None:
    """Refuse to start a campaign in the run directory of another one (``same``: the stored
    configuration hashes like the new one; ``old_name``: the stored campaign's name, None if
    its configuration cannot be read)."""
    if same:
        return
    which = f" ({old_name!r}, configured differently)" if old_name else ""
    raise ConfigError(f"--dir {root} is the run directory of another campaign{which}: choose "
                      f"another --dir (`alflow resume {root}` continues that campaign)")
