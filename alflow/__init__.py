"""alflow: active learning of machine-learned potentials and Boltzmann generators on HPC.

The science lives in small modules (labelling, mlip, sampling, flows, select, estimate,
observables) that never import Parsl; the campaign package runs them as Parsl task graphs.
Units throughout: eV, Å, K, fs, amu.
"""

__version__ = "0.1.0"
