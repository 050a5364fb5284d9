"""Sampling of configurations on a batched :class:`~alflow.potential.Potential`.

- :mod:`alflow.sampling.langevin`: BAOAB Langevin dynamics of many replicas at once, with
  biases, walls and the committee trust check (a replica whose force deviation exceeds
  ``trust_upper`` is stopped and its frames up to there are kept).
- :mod:`alflow.sampling.cvs`: differentiable collective variables (coordination number, radius
  of gyration, planarity, distance, position, user hooks) and CV regions that define states.
- :mod:`alflow.sampling.metad`: well-tempered metadynamics on one or two CVs, with multiple
  walkers sharing a grid bias, c(t) reweighting and free-energy surfaces with block errors.
- :mod:`alflow.sampling.explore`: one exploration run from validated configs (the CLI and the
  Parsl app call it).
- :mod:`alflow.sampling.mcmc`, :mod:`alflow.sampling.diagnostics`: flow-assisted MCMC and its
  convergence diagnostics.
"""
