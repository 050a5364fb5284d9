#!/usr/bin/env bash
# Set up alflow on a fresh machine: a virtual environment in .venv with the CPU build of torch
# installed first (so no CUDA wheels are pulled), then alflow and its dependencies.
# Usage: bash scripts/setup.sh [--test]   (--test adds the test tools, OpenMPI and a local Slurm)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${ALFLOW_VENV:-$here/.venv}"
log() { echo "[setup] $*" >&2; }

with_test=0
[[ "${1:-}" == "--test" ]] && with_test=1

# System packages: OpenMPI + PMIx (mpi4py links against it); for tests, Chromium. Slurm is
# installed by scripts/start-local-slurm.
if command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; then
  need=()
  pkgs=(openmpi-bin libopenmpi-dev libpmix-dev)
  if ((with_test)); then pkgs+=(chromium); fi   # the report test opens the page in headless Chromium
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
  done
  if ((${#need[@]})); then
    log "installing ${need[*]}"
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
  fi
fi

if [[ ! -x "$venv/bin/python" ]]; then
  log "creating $venv"
  python3 -m venv "$venv"
fi
py="$venv/bin/python"
"$py" -m pip install -q --upgrade pip >&2
# The CPU build of torch first: a later range (torch>=2.4,<2.14) is then already satisfied.
"$py" -c "import torch" 2>/dev/null || "$py" -m pip install -q "torch==2.13.0" >&2
if ((with_test)); then
  "$py" -m pip install -q -e "$here[test]" >&2
else
  "$py" -m pip install -q -e "$here" >&2
fi
log "done: activate with 'source $venv/bin/activate'"
