"""Validated configuration of the committee MLIP (model, training, committee)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from alflow.config import StrictModel


class BuiltinModelConfig(StrictModel):
    """Hyperparameters of the built-in invariant message-passing model (see model.py)."""

    features: int = Field(16, ge=1, description="node feature channels")
    n_rbf: int = Field(8, ge=1, description="Bessel radial basis functions")
    layers: int = Field(2, ge=1, description="interaction (message-passing) layers")
    radial_hidden: int = Field(32, ge=1, description="hidden width of the radial filter MLP")
    readout_hidden: int = Field(32, ge=1, description="hidden width of the per-atom readout")
    max_l: Literal[1, 2] = Field(2, description="angular order of the invariant products")
    envelope_p: int = Field(6, ge=2, description="exponent of the smooth polynomial cutoff")


class MaceModelConfig(StrictModel):
    """Hyperparameters of the MACE backend (mace-torch ScaleShiftMACE)."""

    hidden_irreps: str = Field("16x0e+16x1o", description="e3nn irreps of node features")
    max_ell: int = Field(2, ge=1, description="spherical harmonics order of edges")
    correlation: int = Field(2, ge=1, description="body order of the product basis minus 1")
    num_interactions: int = Field(2, ge=1)
    num_bessel: int = Field(8, ge=1)
    num_polynomial_cutoff: int = Field(5, ge=2)
    radial_mlp: list[int] = Field(default_factory=lambda: [32, 32])
    mlp_irreps: str = Field("16x0e", description="irreps of the last readout's hidden layer")


class MLIPConfig(StrictModel):
    """Committee MLIP: backend, model, training and committee settings.

    Units: cutoff in Å, energies eV, forces eV/Å. Loss per configuration is
    ``energy_weight * ρ(ΔE/N) + forces_weight * mean_atoms,xyz ρ(ΔF)`` with ρ(x) = x² (``mse``)
    or the Huber function ρ(x) = x² for |x| ≤ δ, δ(2|x| − δ) above (``huber``, δ =
    ``huber_delta``; both equal x² for small errors).
    """

    backend: Literal["builtin", "mace"] = "builtin"
    committee_size: int = Field(4, ge=1, le=64)
    cutoff: float = Field(5.0, gt=0.5, le=20.0, description="radial cutoff, Å")
    builtin: BuiltinModelConfig = Field(default_factory=BuiltinModelConfig)
    mace: MaceModelConfig = Field(default_factory=MaceModelConfig)
    dtype: Literal["float32", "float64"] = "float32"
    inference_dtype: Literal["float32", "float64"] | None = Field(
        None, description="dtype of the trained committee when it is loaded to be evaluated "
                          "(MD, MCMC, quenches, estimates; None: dtype). A committee trained "
                          "in float64 evaluates 1.3-2x faster in float32 on CPU; it does not "
                          "change the trained weights")

    energy_weight: float = Field(10.0, ge=0.0)
    forces_weight: float = Field(1.0, ge=0.0)
    loss: Literal["mse", "huber"] = Field(
        "mse", description="squared errors, or Huber (squared below huber_delta, linear "
                           "above: a few far-from-equilibrium labels do not swamp the rest)")
    huber_delta: float = Field(0.01, gt=0.0,
                               description="Huber threshold: eV/atom for energies, eV/Å for "
                                           "force components")
    lr: float = Field(1e-2, gt=0.0, le=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    clip_grad: float | None = Field(10.0, gt=0.0,
                                    description="max gradient norm (None: no clipping)")
    schedule: Literal["plateau", "cosine", "none"] = "plateau"
    lr_factor: float = Field(0.5, gt=0.0, lt=1.0, description="plateau decay factor")
    lr_patience: int = Field(15, ge=1, description="plateau epochs before decay")
    min_lr: float = Field(1e-5, ge=0.0)
    epochs: int = Field(400, ge=1)
    batch_size: int = Field(16, ge=1, description="global batch (split over DDP ranks)")
    valid_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    patience: int = Field(60, ge=1, description="early stopping: epochs without val gain")
    subset_fraction: float = Field(
        0.9, gt=0.0, le=1.0,
        description="fraction of the training set each member draws (different per member)")
    polish_steps: int = Field(
        0, ge=0, description="full-batch L-BFGS iterations after the Adam epochs (0: none); "
                             "kept only if the validation loss falls")
    seed: int = 0
    device: str = Field("cpu", description='"cpu", "cuda", "cuda:1" or "auto"')
    parallel: Literal["auto", "members", "ddp"] = Field(
        "auto", description="with nproc > 1: train members in parallel processes or each "
                            "member with DDP over nproc ranks (auto: members if enough, "
                            "else DDP if a probe of a few steps measures it faster than one "
                            "process)")

    rollback_lr_factor: float = Field(0.5, gt=0.0, lt=1.0)
    max_rollbacks: int = Field(5, ge=0)
    explode_factor: float = Field(100.0, gt=1.0,
                                  description="validation loss above this x the best = "
                                              "exploding (rolled back)")
    checkpoint_every: int = Field(1, ge=1, description="epochs between resume checkpoints")


__all__ = ["BuiltinModelConfig", "MLIPConfig", "MaceModelConfig"]
