#!/usr/bin/env bash
# The whole story offline on the CPU with the bundled model, in a few minutes: protect the example
# photos (PhotoGuard's encoder attack, 16/255), detect the protection by its consistency error,
# purify with IMPRESS, then print a table (consistency error, PSNR/SSIM to the clean photo) and write
# a side-by-side image. Extra arguments go to `impress purify` (e.g. --schedule published).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh api,worker
. .venv/bin/activate
out=out/demo
bundled=(--model impress-tiny-vae --device cpu)
impress protect examples/*.png -o "$out/protected" --protection photoguard-16 --perceptual dssim "${bundled[@]}"
impress purify "$out"/protected/*.png -o "$out/purified" --schedule fast --iters 100 --perceptual dssim "${bundled[@]}" "$@"
impress detect examples/*.png "$out"/protected/*.png "$out"/purified/*.png "${bundled[@]}" > "$out/detect.jsonl"
python scripts/demo_summary.py examples "$out"
