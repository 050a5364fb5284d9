"""Task of a crystal campaign: G/N of one phase at one state point, by TI or by a flow.

Runs on a worker through the campaign's executor map (alflow.campaign.submit): a plain
function of a JSON-able spec returning ``(json_dict, arrays)``, checkpointed by the driver
under the hash of the spec (alflow.campaign.crystal).
"""

from __future__ import annotations

import time
from typing import Any


def phase_point(spec: dict[str, Any]) -> tuple[dict[str, Any], dict]:
    """``spec``: method ("ti" or "flow"), potential (alflow.solids.polymorphs.Potential
    fields), phase, n_atoms, temperature, pressure (the potential's input units), settings
    (TISettings or FlowSettings fields), seed. Returns PhasePoint's fields plus the spec's
    temperature and pressure, ``cpu_seconds`` (this process's CPU time) and ``_t0``/``_t1``
    (epoch s)."""
    from alflow.solids.polymorphs import (
        FlowSettings,
        Potential,
        TISettings,
        flow_point,
        ti_point,
    )

    t0, cpu0 = time.time(), time.process_time()
    pot = Potential(**spec["potential"])
    args = (pot, spec["phase"], int(spec["n_atoms"]), float(spec["temperature"]),
            float(spec["pressure"]))
    if spec["method"] == "ti":
        r = ti_point(*args, TISettings(**spec["settings"]), seed=int(spec["seed"]))
    elif spec["method"] == "flow":
        r = flow_point(*args, FlowSettings(**spec["settings"]), seed=int(spec["seed"]))
    else:
        raise ValueError(f"method must be 'ti' or 'flow', got {spec['method']!r}")
    out = r.to_dict()
    out.update(temperature=spec["temperature"], pressure_input=spec["pressure"],
               cpu_seconds=time.process_time() - cpu0, _t0=t0, _t1=time.time())
    return out, {}
