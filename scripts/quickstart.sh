#!/usr/bin/env bash
# Set up alflow on a fresh machine and run the main job: the built-in lj7 campaign (7-atom
# Lennard-Jones argon cluster, two isomers at 18 K) on the local thread executor until it
# converges or reaches its last generation, then print the free-energy difference with its
# error bar.
# Usage: bash scripts/quickstart.sh [RUN_DIR]   (default: runs/lj7)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
run_dir="${1:-runs/lj7}"
# setup once per version of the dependencies (pyproject.toml): a set-up environment starts at once
stamp="${ALFLOW_VENV:-.venv}/.alflow-setup-$(sha256sum pyproject.toml | cut -c1-16)"
if [[ ! -f "$stamp" ]]; then
  bash scripts/setup.sh
  touch "$stamp"
fi
# shellcheck disable=SC1091
source "${ALFLOW_VENV:-.venv}/bin/activate"
if [[ -f "$run_dir/run/campaign.yaml" ]]; then
  alflow resume "$run_dir/run"
else
  alflow example lj7 "$run_dir"
  alflow run "$run_dir/campaign.yaml" --dir "$run_dir/run" --site local-threads
fi
# run and resume end by printing the status (alflow status RUN_DIR prints it again at any time)
