"""The layout of a campaign's run directory: every path alflow writes or reads in it.

One owner for these names: the campaign writes through :class:`alflow.campaign.rundir.RunDir`
(a :class:`RunLayout` with the driver's lock and logs), the report, the spectra and the
temperature scan read through :class:`RunLayout`. Documented in docs/campaign.md::

    RUN_DIR/
      .alflow-run          the marker: only alflow writes it, and alflow resumes or writes
                           only a directory holding it (alflow.campaign.rundir.open_run_dir)
      campaign.yaml        the configuration as resolved (absolute paths); resume reads it
      dataset.h5           the label store (alflow.dataset.LabelStore)
      labels/pending/      labels finished by workers but not yet in dataset.h5 (JSON)
      oracle_calls.jsonl   one line per calculation the oracle performed (repeats included)
      results/             checkpointed task results: STEP-KEY.json (+ STEP-KEY.npz arrays)
      models/gen000/       the committee of each generation
      flows/gen001/STATE/  the flow of each generation and state (flow.pt, flow.json) and its
                           estimate's samples (is_samples.npz)
      temperatures/        flow samples redrawn for runs without is_samples.npz (npz cache)
      spectra.h5           TDDFT spectra of the states (``alflow spectra RUN_DIR``)
      events.jsonl         JSON-lines log of everything that happened
      status.json          machine-readable status (``alflow status --json`` prints it)
      status.txt           the same for humans
      lock                 held (fcntl) by the driver writing this directory
      progress/            the running steps' progress bars (JSON, alflow.progress)
      runinfo/             Parsl's logs

This module is science-side (no campaign, no Parsl): observables import it freely.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FLOW_SAMPLES_FILE = "is_samples.npz"
MARKER = ".alflow-run"
_GEN = re.compile(r"^gen(\d+)$")


def generation_dir_name(generation: int) -> str:
    """``genNNN``: the directory name of one generation under ``models/`` and ``flows/``."""
    return f"gen{generation:03d}"


def result_stem(step: str, key: str) -> str:
    """``STEP-KEY``: the file stem of a checkpointed result (``key`` the input hash, hex)."""
    return f"{step}-{key[:24]}"


def parse_generation(name: str) -> int | None:
    """The generation of a ``genNNN`` directory name, or None for any other name."""
    m = _GEN.match(name)
    return int(m.group(1)) if m else None


@dataclass
class StepResult:
    """One checkpointed task result in ``results/``: ``result`` the task's JSON output,
    ``arrays`` the path of its npz arrays (None without arrays); ``generation`` and ``state``
    of a flows step (read from its ``flow_dir``), else None."""

    step: str
    path: Path
    result: dict[str, Any] = field(default_factory=dict)
    arrays: Path | None = None
    generation: int | None = None
    state: str | None = None


class RunLayout:
    """Paths of one campaign's run directory (module doc); nothing is created or read here
    except by the listing methods."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()

    marker = property(lambda self: self.root / MARKER)
    config = property(lambda self: self.root / "campaign.yaml")
    dataset = property(lambda self: self.root / "dataset.h5")
    pending = property(lambda self: self.root / "labels" / "pending")
    oracle_journal = property(lambda self: self.root / "oracle_calls.jsonl")
    results = property(lambda self: self.root / "results")
    events = property(lambda self: self.root / "events.jsonl")
    status_json = property(lambda self: self.root / "status.json")
    status_txt = property(lambda self: self.root / "status.txt")
    lock = property(lambda self: self.root / "lock")
    progress = property(lambda self: self.root / "progress")
    spectra = property(lambda self: self.root / "spectra.h5")
    spectra_site = property(lambda self: self.root / "spectra-runinfo")
    models_root = property(lambda self: self.root / "models")
    flows_root = property(lambda self: self.root / "flows")

    def models(self, generation: int) -> Path:
        """The committee of ``generation``."""
        return self.models_root / generation_dir_name(generation)

    def flows(self, generation: int, state: str) -> Path:
        """The flow of ``state`` in ``generation`` (flow.pt, flow.json, is_samples.npz)."""
        return self.flows_root / generation_dir_name(generation) / state

    def flow_samples(self, generation: int, state: str) -> Path:
        """The samples of the flows step's estimate (alflow.observables.temperatures)."""
        return self.flows(generation, state) / FLOW_SAMPLES_FILE

    def temperature_cache(self, generation: int, state: str) -> Path:
        """Flow samples redrawn for a run without ``is_samples.npz``."""
        return self.root / "temperatures" / f"{generation_dir_name(generation)}-{state}.npz"

    # -- listings --------------------------------------------------------------------------
    def model_generations(self) -> list[int]:
        """Generations with a committee directory, ascending."""
        return _generations(self.models_root)

    def flow_generations(self) -> list[int]:
        """Generations with a flows directory, ascending."""
        return _generations(self.flows_root)

    def step_results(self, step: str) -> list[StepResult]:
        """Every readable checkpointed result of ``step`` (sorted by file name); a flows
        result carries the generation and state of its ``flow_dir``."""
        out = []
        for path in sorted(self.results.glob(f"{step}-*.json")):
            try:
                js = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if not isinstance(js, dict):
                continue
            res = js.get("result") if isinstance(js.get("result"), dict) else {}
            npz = path.with_suffix(".npz")
            r = StepResult(step, path, res, npz if js.get("_has_arrays") and npz.exists()
                           else None)
            if res.get("flow_dir"):
                d = Path(str(res["flow_dir"]))
                r.generation, r.state = parse_generation(d.parent.name), d.name
            out.append(r)
        return out


def _generations(root: Path) -> list[int]:
    if not root.is_dir():
        return []
    return sorted(g for p in root.iterdir() if p.is_dir()
                  and (g := parse_generation(p.name)) is not None)


__all__ = ["FLOW_SAMPLES_FILE", "RunLayout", "StepResult", "generation_dir_name",
           "parse_generation", "result_stem"]
