#!/usr/bin/env bash
# Create .venv and install the project with the pinned torch build (never an unpinned CUDA torch).
# Usage: scripts/setup.sh [EXTRAS]   (default extras: api,worker,dev)
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-api,worker,dev}"
[ -x .venv/bin/python ] || python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# torch first, exactly pinned: lpips/torchvision/diffusers then find it satisfied.
python -m pip install -q -c constraints.txt torch torchvision
python -m pip install -q -c constraints.txt -e ".[${extras}]"
