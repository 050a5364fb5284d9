"""Observables of a campaign: TDDFT absorption spectra, their Boltzmann averages, the report.

Modules: :mod:`.tddft` (PySCF linear response), :mod:`.spectra` (broadening, weighted averages,
bands, convergence; pure numpy), :mod:`.store` (HDF5 store of spectra keyed by content hash),
:mod:`.batch` (many configurations through an injected executor), :mod:`.spectra_campaign`
(samples per state from a run directory, averaged spectra per state), :mod:`.report_data`
(the typed report model), :mod:`.report` (matplotlib figures, HTML and JSON). A run
directory is read into the report model by :mod:`alflow.campaign.report_loader`.
"""
