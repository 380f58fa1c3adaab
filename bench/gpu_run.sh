#!/usr/bin/env bash
# The one GPU check, as a lent device machine runs it (no network there; its image has torch,
# torchvision, huggingface_hub, safetensors, scikit-image and matplotlib, but not diffusers, lpips or
# pydantic, which travel as wheels in .whl/).
#   bench/gpu_run.sh fetch      # here, with the package index: download the wheels into .whl/
#   bench/gpu_run.sh            # there (device tool: carry [".whl"]): install them, run gpu_check.py,
#                               # and amortised_speed.py (the amortised purifier's ms per 512x512 image),
#                               # copy bench/results/{gpu-check.json,speed-cuda.*,amortised-speed-cuda.*} to $OUT
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS="diffusers==0.42.1 lpips==0.1.4 pydantic==2.14.4 pydantic_core==2.50.5 pydantic-settings==2.16.3
  python-dotenv==1.2.4 annotated-types==0.8.0 typing-inspection==0.4.5 typing_extensions==4.16.0
  importlib_metadata==10.2.0"
if [ "${1:-}" = fetch ]; then
  exclude="$(git rev-parse --git-path info/exclude)"   # also right in a worktree
  mkdir -p "$(dirname "$exclude")"
  grep -qx '/.whl/' "$exclude" 2>/dev/null || echo /.whl/ >> "$exclude"
  # The device's python3 is 3.12.
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl $WHEELS
  ls .whl
  exit 0
fi
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
python3 -m bench.gpu_check
python3 -m bench.amortised_speed
cp bench/results/gpu-check.json bench/results/speed-cuda.* bench/results/amortised-speed-cuda.* \
  "${OUT:?OUT is the device tool's output folder}/"
