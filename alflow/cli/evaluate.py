"""``alflow evaluate``: committee errors against a dataset's labels, per state."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.table import Table


def errors_by_state(model_dir: Path, atoms: list, device: str = "cpu") -> dict[str, dict]:
    """Energy (eV/atom) and force (eV/Å) MAE/RMSE and force_dev per ``state`` tag (records
    without one count as 'all'); plus 'total' over everything when there are several."""
    from alflow.mlip.committee import Committee
    from alflow.mlip.data import from_atoms

    committee = Committee.load(model_dir, device)
    data, _ = from_atoms(atoms)
    states = [str(t.get("state", "all")) for t in data.tags]
    out = {}
    names = sorted(set(states))
    for s in names:
        idx = [k for k, v in enumerate(states) if v == s]
        out[s] = committee.metrics(data.subset(idx))
    if len(names) > 1:
        out["total"] = committee.metrics(data)
    return out


def register(app: typer.Typer) -> None:
    @app.command("evaluate")
    def evaluate(
        model: Annotated[Path, typer.Argument(help="model directory from alflow train")],
        data: Annotated[Path, typer.Argument(help="label store (DATA.h5)")],
        json_out: Annotated[Path | None, typer.Option("--json", help="also write JSON")] = None,
        device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N or auto")] = "cpu",
    ) -> None:
        """Print energy and force MAE/RMSE of the committee mean per state."""
        from alflow.dataset import LabelStore
        from alflow.errors import InputError

        if not data.exists():
            raise InputError(f"{data}: no such label store")
        atoms = LabelStore(data, create=False).read_atoms()
        if not atoms:
            raise InputError(f"{data}: no ok labels to evaluate on")
        res = errors_by_state(model, atoms, device)
        table = Table(title=f"{model} on {data}")
        for col in ("state", "n", "E MAE meV/atom", "E RMSE meV/atom", "F MAE eV/Å",
                    "F RMSE eV/Å", "mean force_dev eV/Å"):
            table.add_column(col, justify="left" if col == "state" else "right")
        for s, m in res.items():
            table.add_row(s, str(m["n"]), f"{1000 * m['e_mae_per_atom']:.2f}",
                          f"{1000 * m['e_rmse_per_atom']:.2f}", f"{m['f_mae']:.4f}",
                          f"{m['f_rmse']:.4f}", f"{m['force_dev_mean']:.4f}")
        Console().print(table)
        if json_out is not None:
            json_out.write_text(json.dumps(res, indent=1, default=float))
        if not all(np.isfinite(m["f_mae"]) for m in res.values()):
            raise typer.Exit(1)
