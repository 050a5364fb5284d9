"""Tags stored with labels: ``key=value`` arguments and each structure's own tags."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ase import Atoms

from alflow.errors import InputError


def parse_tags(tags: Sequence[str]) -> dict[str, Any]:
    """``key=value`` strings -> dict (integers and floats converted)."""
    out: dict[str, Any] = {}
    for t in tags:
        k, sep, v = t.partition("=")
        if not sep or not k:
            raise InputError(f"--tag expects key=value, got {t!r}")
        for conv in (int, float):
            try:
                out[k] = conv(v)
                break
            except ValueError:
                continue
        else:
            out[k] = v
    return out


def image_tags(images: Sequence[Atoms], tags: dict[str, Any]) -> list[dict[str, Any]]:
    """One tag dict per structure: its own (``info["alflow_tags"]``, JSON, and
    ``info["state"]``) overridden by ``tags``."""
    out = []
    for i, a in enumerate(images):
        try:
            own = json.loads(a.info["alflow_tags"]) if "alflow_tags" in a.info else {}
        except (TypeError, ValueError):
            raise InputError(f"structure {i}: info['alflow_tags'] must be a JSON object, got "
                             f"{a.info['alflow_tags']!r}") from None
        if "state" in a.info:
            own.setdefault("state", a.info["state"])
        out.append({**own, **tags})
    return out
