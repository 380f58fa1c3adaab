#!/usr/bin/env bash
# The whole story offline on the CPU with the bundled autoencoder taef2 (FLUX.2's tiny autoencoder),
# in about five minutes from a clean clone on 2 cores, install included:
#   1. protect the example photos with PhotoGuard's encoder attack against taef2 (16/255, 50 of
#      PhotoGuard's 1000 steps, to keep the demo short);
#   2. detect: score clean, protected and purified photos with `impress detect`;
#   3. purify the protected photos with IMPRESS (fast schedule, 30 iterations, offline 1 - SSIM hinge);
#   4. show what purification is for: what the autoencoder (and so an editing model built on it)
#      makes of each picture, next to the pixels (scripts/demo_summary.py: table, claims, image).
# Extra arguments go to `impress purify` (e.g. --iters 60).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh api,worker
. .venv/bin/activate
out=out/demo
offline=(--model taef2 --device cpu)
rm -rf "$out"
impress protect examples/*.png -o "$out/protected" --protection photoguard-16:steps=50 --perceptual dssim "${offline[@]}"
impress purify "$out"/protected/*.png -o "$out/purified" --schedule fast --iters 30 --perceptual dssim "${offline[@]}" "$@"
impress detect examples/*.png "$out"/protected/*.png "$out"/purified/*.png "${offline[@]}" > "$out/detect.jsonl"
python scripts/demo_summary.py examples "$out"
