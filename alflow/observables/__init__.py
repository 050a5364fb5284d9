"""Observables of a campaign: TDDFT absorption spectra, their Boltzmann averages, the report.

Modules: :mod:`.tddft` (PySCF linear response), :mod:`.spectra` (broadening, weighted averages,
convergence; pure numpy), :mod:`.store` (HDF5 store of spectra keyed by content hash),
:mod:`.batch` (many configurations through an injected executor), :mod:`.report` (HTML + PNG).
"""
