#!/usr/bin/env bash
# Quick start: set up, then purify the example photos offline on the CPU with the bundled model.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh api,worker
. .venv/bin/activate
impress purify examples/*.png -o out/demo --model impress-tiny-vae --perceptual dssim --device cpu --schedule fast --iters 100 "$@"
echo "purified images: out/demo/ (details in out/demo/purify.json)"
