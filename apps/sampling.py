"""Parsl apps: exploration MD (Langevin, optionally well-tempered metadynamics).

Thin wrappers over :func:`alflow.exploration.run_exploration`; they need a loaded Parsl
config whose executors include the label ``cpu`` (``md_app``) or ``gpu`` (``md_app_gpu``, set
``config.device="cuda"``), see :mod:`alflow.campaign.sites`. The potential travels as a spec
(model directory, ``ase:emt``, ``torch:lj``) and is loaded inside the task. The task returns
the :class:`~alflow.sampling.langevin.Trajectory` (numpy arrays only) and, if ``out`` is given,
also writes it there (``.extxyz`` or ``.h5``); ``bias_in``/``bias_out`` continue and save the
shared metadynamics bias (``.npz``).
"""

from __future__ import annotations

from parsl import python_app


def _run(potential, structures, config, out=None, bias_in=None, bias_out=None):
    from alflow.exploration import run_exploration
    from alflow.threads import size_thread_pools

    size_thread_pools()

    return run_exploration(potential, structures, config, out, bias_in, bias_out)


md_app = python_app(_run, executors=["cpu"])
md_app_gpu = python_app(_run, executors=["gpu"])
