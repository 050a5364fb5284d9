"""Refining a potential against dynamical and structural data by differentiable MD.

- :mod:`alflow.refine.config`: the ``alflow refine`` YAML (system, potential, md, targets,
  optimiser).
- :mod:`alflow.refine.targets`: reading the tabulated targets (CSV).
- :mod:`alflow.refine.potential`: trainable periodic Lennard-Jones (log ε, log σ).
- :mod:`alflow.refine.mlip`: the built-in committee MLIP as a trainable potential, anchored
  to its labels.
- :mod:`alflow.refine.dynamics`: NVT Langevin and NVE velocity Verlet of replicas in a box.
- :mod:`alflow.refine.observables`: g(r), MSD and VACF self-diffusion, VDOS, error bars.
- :mod:`alflow.refine.gradients`: trajectory gradients, adjoint and direct, with truncation.
- :mod:`alflow.refine.reweight`: DiffTRe reweighting of static averages, effective sample size.
- :mod:`alflow.refine.fit`: the Adam / Levenberg–Marquardt loop and the result document.
- :mod:`alflow.refine.report`: result.json and the plots.
"""
