"""Settings of a tiny lj7 campaign (seconds per generation) shared by the end-to-end tests:
they test orchestration (resume, kill, Slurm), not accuracy."""

# A committee trained 8 epochs has minima of its own 0.1-0.5 Å (RMS of sorted pair distances)
# from both reference minima (which lie 0.43 Å apart): a wider match tolerance keeps the
# states populated.
_BASIN = {"kind": "basin", "match_tolerance": 0.2}

SMALL = {
    "system": {"states": {"pbp": {"structures": "structures/pbp.xyz", "definition": _BASIN},
                          "coh": {"structures": "structures/coh.xyz", "definition": _BASIN}}},
    "mlip": {"cutoff": 9.0, "committee_size": 2, "epochs": 8, "dtype": "float64",
             "explode_factor": 1e6, "polish_steps": 0, "energy_weight": 10.0,  # not the example's
             "builtin": {"features": 8, "layers": 1, "radial_hidden": 8, "readout_hidden": 8,
                         "n_rbf": 6}},
    "exploration": {"bootstrap": {"displaced": 3, "displacement": 0.08},
                    "md": {"replicas": 2, "steps": 60, "dt_fs": 10.0, "record_every": 10},
                    # these committees' states are small: 1-5 % of a rough flow's samples
                    # land inside, so 2000 samples (200 left a state empty in one of ~15
                    # campaigns: no ΔF that generation, and the rule waits for one)
                    "sampler": {"md_replicas": 2, "md_steps": 100, "md_record_every": 10,
                                "samples": 2000, "flow": {"layers": 2, "hidden": 8},
                                "train": {"steps": 100}}},
    "selection": {"trust_lower": 0.0, "trust_upper": 10.0, "min_distance": 2.5, "budget": 4},
    "estimate": {"reweight_samples": 3, "bootstrap": 20},
    # orchestration, not accuracy: the rule accepts any estimate of these rough committees
    "convergence": {"tolerance_kt": 1e3, "max_error_kt": 1e3, "generations": 1, "rhat": 1e3,
                    "max_move_sigma": None, "max_correction_bias": None,
                    "max_generations": 3},
}
