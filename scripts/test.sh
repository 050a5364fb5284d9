#!/usr/bin/env bash
# Set up everything on a fresh machine and run the test suite (this is what .ci/run calls).
# Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
bash scripts/setup.sh --test
# shellcheck disable=SC1091
source .venv/bin/activate
ruff check alflow apps site_configs scripts tests benchmarks
python -m pytest -q "$@"
