"""Results of finished tasks, keyed by the hash of their inputs, written atomically.

A task's key is the SHA-256 of its name and a canonical JSON of its inputs (configs, seeds,
generation, the keys of upstream results or files). ``results/<name>-<key>.json`` holds the
JSON part of the result and ``results/<name>-<key>.npz`` its arrays (``numpy`` only, loaded with
``allow_pickle=False``); model weights live in their own directories written by the training
code and are referenced by path. The npz is written before the JSON and each file goes through
``tmp + fsync + os.replace``, so a JSON file on disk means the whole result is there: a driver
killed at any moment leaves either a complete result or none. Nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from alflow.runlayout import result_stem
from alflow.structures import canonical_json


def task_key(name: str, inputs: Any) -> str:
    """Hex SHA-256 of ``name`` and the canonical JSON of ``inputs``."""
    return hashlib.sha256(f"{name}\n{canonical_json(inputs)}".encode()).hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file, fsync and rename (atomic on POSIX)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{id(data)}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def to_jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


class Checkpoint:
    """Store of task results under ``root`` (``RUN_DIR/results``)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _paths(self, name: str, key: str) -> tuple[Path, Path]:
        stem = result_stem(name, key)
        return self.root / f"{stem}.json", self.root / f"{stem}.npz"

    def has(self, name: str, key: str) -> bool:
        return self._paths(name, key)[0].exists()

    def load(self, name: str, key: str) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
        """(JSON part, arrays) of a stored result, or None."""
        jpath, npath = self._paths(name, key)
        if not jpath.exists():
            return None
        data = json.loads(jpath.read_text())
        arrays: dict[str, np.ndarray] = {}
        if data.get("_has_arrays"):
            with np.load(npath, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        return data["result"], arrays

    def save(self, name: str, key: str, result: dict[str, Any],
             arrays: dict[str, np.ndarray] | None = None) -> None:
        """Store a result: arrays first, then the JSON that marks it complete."""
        import io

        jpath, npath = self._paths(name, key)
        if arrays:
            buf = io.BytesIO()
            np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
            atomic_write_bytes(npath, buf.getvalue())
        payload = {"name": name, "key": key, "_has_arrays": bool(arrays),
                   "result": to_jsonable(result)}
        atomic_write_text(jpath, json.dumps(payload, indent=1, sort_keys=True))
