"""Label-store speed: the time of one commit and of opening a store of many records.

Builds a store of ``--records`` labelled 6-atom configurations (one bulk append), then times
``--commits`` single-record appends (each one durable commit: what the labelling drivers do
after every label) and the opening of the store (``LabelStore(path)`` and one lookup, in a
fresh process, best of three).

    python benchmarks/store.py            # 100,000 records, 7,000 commits (one fold)
    python benchmarks/store.py --quick    # 100,000 records, 300 commits (under 2 minutes)

Ends with one JSON line: records, commit_ms_median, commit_ms_p99, open_s (and the CPU time
of the opening, the commits' mean and max, their number, the median time of a bare append +
fdatasync of 700 bytes on the same disk, which bounds a durable commit from below, and the
1-minute load average).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

OPEN = """
import sys, time
from alflow.dataset import LabelStore
t0, c0 = time.perf_counter(), time.process_time()
s = LabelStore(sys.argv[1], create=False)
assert s.has(sys.argv[2])
print(time.perf_counter() - t0, time.process_time() - c0)
"""


def records(start: int, n: int, rng: np.random.Generator) -> list:
    from alflow.dataset import LabelRecord

    out = []
    for i in range(start, start + n):
        out.append(LabelRecord(
            key=f"{i:064x}", numbers=[47] * 6, positions=rng.normal(0, 2, (6, 3)), status="ok",
            energy=float(-i), forces=rng.normal(size=(6, 3)),
            method={"name": "pyscf:pbe/def2-svp", "basis": "def2-svp", "xc": "pbe"},
            provenance={"wall_s": 12.5, "host": "node01", "scf_cycles": 14},
            tags={"state": "a", "generation": i % 10}))
    return out


def open_time(path: Path, key: str) -> tuple[float, float]:
    """Wall and CPU seconds to open the store and look one key up in a new process (best of
    three)."""
    best = (float("inf"), float("inf"))
    for _ in range(3):
        out = subprocess.run([sys.executable, "-c", OPEN, str(path), key], check=True,
                             capture_output=True, text=True).stdout.split()
        best = min(best, (float(out[-2]), float(out[-1])))
    return best


def fdatasync_ms(directory: Path, n: int = 200) -> float:
    """Median time (ms) of appending 700 bytes and ``fdatasync`` on this file system: the
    floor of a durable commit."""
    fd = os.open(directory / "fdatasync-probe", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    times = []
    try:
        for _ in range(n):
            os.write(fd, b"x" * 700)
            t = time.perf_counter()
            os.fdatasync(fd)
            times.append(time.perf_counter() - t)
    finally:
        os.close(fd)
    return float(np.median(times) * 1e3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer commits (under 2 minutes)")
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--commits", type=int, default=None)
    ap.add_argument("--dir", type=Path, default=None, help="where to write (default: a tmp dir)")
    a = ap.parse_args()
    commits = a.commits or (300 if a.quick else 7000)
    from alflow.dataset import LabelStore

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(dir=a.dir) as tmp:
        path = Path(tmp) / "labels.h5"
        t = time.perf_counter()
        store = LabelStore(path)
        store.append_many(records(0, a.records, rng))
        print(f"built {a.records} records in {time.perf_counter() - t:.1f} s "
              f"({path.stat().st_size / 1e6:.1f} MB)", flush=True)
        os.sync()  # the build's writeback is not the commits' to wait for
        new = records(a.records, commits, rng)
        times = []
        for rec in new:
            t = time.perf_counter()
            assert store.append(rec)
            times.append(time.perf_counter() - t)
        ms = np.array(times) * 1e3
        print(f"{commits} commits: median {np.median(ms):.2f} ms, p99 "
              f"{np.percentile(ms, 99):.2f} ms, max {ms.max():.1f} ms", flush=True)
        sync_ms = fdatasync_ms(Path(tmp))
        print(f"append + fdatasync of 700 bytes on this disk: median {sync_ms:.2f} ms",
              flush=True)
        del store  # the writer is done: nothing of it stays open
        gc.collect()
        open_s, open_cpu_s = open_time(path, new[-1].key)
        print(f"open {open_s:.3f} s, {open_cpu_s:.3f} s CPU ({path.stat().st_size / 1e6:.1f} MB)",
              flush=True)
    print(json.dumps({
        "records": a.records, "commit_ms_median": round(float(np.median(ms)), 3),
        "commit_ms_p99": round(float(np.percentile(ms, 99)), 3), "open_s": round(open_s, 3),
        "open_cpu_s": round(open_cpu_s, 3),
        "commit_ms_mean": round(float(ms.mean()), 3), "commit_ms_max": round(float(ms.max()), 1),
        "commits": commits, "fdatasync_ms_median": round(sync_ms, 3),
        "load_1min": round(os.getloadavg()[0], 2)}))


if __name__ == "__main__":
    main()
