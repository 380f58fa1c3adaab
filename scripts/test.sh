#!/usr/bin/env bash
# The test command: set up (idempotent) and run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh api,worker,dev
. .venv/bin/activate
python -m pytest -q "$@"
