"""The random seed of every step of a campaign: one recipe for the campaign, the flows
pipeline and the observables that redraw a step's samples (alflow.observables.temperatures).

A seed is a pure function of the campaign's ``seed``, the generation and the state's index in
``system.states``, so a resumed campaign draws what it drew before and the report reproduces
a step's draw. Change the recipe here and every user follows.
"""

from __future__ import annotations

from typing import Literal

# steps seeded per generation: seed + generation
_GENERATION_STEPS = ("bootstrap", "select", "train")
# steps seeded per generation and state: 1000 seed + 10 generation + state index + offset
_STATE_STEPS = {"explore": 0, "flows": 5}
# stages inside one state's flows step (alflow.flows.pipeline): flows step seed + offset
_FLOW_STAGES = {"train": 0, "mcmc": 0, "retrain": 1, "polish": 2, "estimate": 7, "bar": 11}

Step = Literal["bootstrap", "select", "train", "explore", "flows"]
FlowStage = Literal["train", "mcmc", "retrain", "polish", "estimate", "bar"]


def step_seed(seed: int, step: Step, generation: int = 0, state: int = 0) -> int:
    """The seed of campaign ``step`` in ``generation`` for the state of index ``state``
    (ignored by the per-generation steps ``bootstrap``, ``select`` and ``train``)."""
    if step in _GENERATION_STEPS:
        return seed + generation
    if step in _STATE_STEPS:
        return seed * 1000 + generation * 10 + state + _STATE_STEPS[step]
    raise ValueError(f"unknown step {step!r}: expected one of "
                     f"{[*_GENERATION_STEPS, *_STATE_STEPS]}")


def flow_stage_seed(flows_seed: int, stage: FlowStage) -> int:
    """The seed of ``stage`` of one state's flows step whose seed is ``flows_seed``
    (:func:`step_seed` of ``flows``): train and MCMC, retrain, polish, the importance-sampling
    estimate, BAR."""
    if stage not in _FLOW_STAGES:
        raise ValueError(f"unknown flow stage {stage!r}: expected one of {list(_FLOW_STAGES)}")
    return flows_seed + _FLOW_STAGES[stage]


def flow_estimate_seed(flows_seed: int, mcmc: bool) -> int:
    """The seed of a state's free-energy estimate (the draw of its flow samples): the
    ``estimate`` stage after MCMC; the flows step's seed itself for a flow trained on the MD
    seeds alone (``mcmc`` False), as every stage of that path uses it."""
    return flow_stage_seed(flows_seed, "estimate") if mcmc else flows_seed


__all__ = ["FlowStage", "Step", "flow_estimate_seed", "flow_stage_seed", "step_seed"]
