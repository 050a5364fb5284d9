"""A tiny multi-fidelity lj7 campaign shared by the multi-fidelity tests: a Morse potential
fitted to the argon LJ pair (same well depth and minimum distance; a different curvature and
tail) is the cheap oracle, LJ the expensive one."""

from pathlib import Path

import yaml
from tiny_campaign import SMALL

from alflow.examples import write_example

MORSE = {"method": "ase:morse",
         "options": {"ase_kwargs": {"epsilon": 0.0103, "r0": 3.82, "rho0": 6.0},
                     "min_distance": 2.0, "min_covalent_fraction": 0.0}}


def mf_campaign(tmp: Path, mode: str = "transfer", **pretrain) -> Path:
    """The lj7 example with the tiny settings, one cheap generation, then LJ generations."""
    path = write_example("lj7", tmp)
    data = yaml.safe_load(path.read_text())
    for k, v in SMALL.items():
        data[k] = {**data.get(k, {}), **v} if isinstance(v, dict) else v
    data["exploration"]["sampler"]["mcmc"] = {"enabled": False}
    data["convergence"]["max_generations"] = 2  # expensive generations
    data["pretrain"] = {**MORSE, "generations": 1, "budget": 6, "mode": mode,
                        "finetune": {"lr": 0.001, "epochs": 6}, **pretrain}
    path.write_text(yaml.safe_dump(data))
    return path
