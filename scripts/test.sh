#!/usr/bin/env bash
# Set up everything on a fresh machine and run the test suite (this is what .ci/run calls).
# Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
bash scripts/setup.sh --test
# shellcheck disable=SC1091
source .venv/bin/activate
# A real one-node Slurm (munge, slurmctld, slurmd; OpenMPI + PMIx; apt-get installs what is
# missing) for the tests marked `slurm`. If it cannot start, those tests are skipped with the reason.
slurm_log="$(mktemp)"
if slurm_env="$(bash scripts/start-local-slurm 2>"$slurm_log")"; then
  cat "$slurm_log" >&2
  eval "$slurm_env"
else
  cat "$slurm_log" >&2
  export ALFLOW_SLURM_UNAVAILABLE="local Slurm could not be started: $(tail -n 1 "$slurm_log")"
  echo "[test] WARNING: $ALFLOW_SLURM_UNAVAILABLE -- Slurm tests will be SKIPPED" >&2
fi
rm -f "$slurm_log"
ruff check alflow apps site_configs scripts tests benchmarks
python -m pytest -q "$@"
