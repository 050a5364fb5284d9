"""alflow: active learning of machine-learned potentials and Boltzmann generators on HPC.

The science lives in small modules (labelling, mlip, sampling, flows, select, estimate,
observables) that never import Parsl; the campaign package runs them as Parsl task graphs.
Units throughout: eV, Å, K, fs, amu.
"""

__version__ = "0.1.0"

import logging as _logging

# pymbar announces at import, as WARNINGs, that JAX is absent (it works without) and that
# its timeseries module has caveats: nothing a user of alflow should act on.
_logging.getLogger("pymbar").setLevel(_logging.ERROR)
