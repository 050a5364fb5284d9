"""``python -m alflow.mlip DATA.h5 OUT_DIR [--config CFG.yaml] [--init-from DIR]``.

The entry point torchrun launches (``torchrun --standalone --nproc-per-node N -m alflow.mlip
...``): every rank calls :func:`train_committee`, which sees ``WORLD_SIZE`` and trains each
member with DDP over the torchrun world; rank 0 writes the model directory.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    from alflow.config import load_yaml_model
    from alflow.dataset import LabelStore
    from alflow.distributed import finish
    from alflow.mlip import MLIPConfig, train_committee

    p = argparse.ArgumentParser(prog="python -m alflow.mlip", description=__doc__)
    p.add_argument("data", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--config", type=Path, default=None)
    p.add_argument("--init-from", type=Path, default=None)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    cfg = load_yaml_model(MLIPConfig, a.config) if a.config else MLIPConfig()
    atoms = LabelStore(a.data, create=False).read_atoms()
    train_committee(atoms, a.out, cfg, init_from=a.init_from)
    finish()  # rank 0 writes the committee meanwhile; no rank exits before the others


if __name__ == "__main__":
    main()
