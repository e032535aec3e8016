#!/usr/bin/env bash
# The one prepared GPU check: run it on a CUDA machine from the source tree, e.g. through
# the device tool:  bash scripts/gpu_check.sh  (results land in $OUT, or ./gpu-check).
# A GPU machine that reaches no package registry may lack gpumlp's pure-Python
# dependencies (tqdm): prepare them here with
#   pip install --no-deps --target .gpu-deps tqdm array-api-strict
# and carry .gpu-deps along; this script puts it on PYTHONPATH when present.
# It runs the GPU oracle tests, the full suite, the digits training on the GPU, and the
# benchmark sweep, and records the card, versions and date beside the figures.
set -uo pipefail
out="${OUT:-gpu-check}"
mkdir -p "$out"
deps=""; [ -d .gpu-deps ] && deps=":$PWD/.gpu-deps"
export PYTHONPATH="$PWD$deps${PYTHONPATH:+:$PYTHONPATH}" CUPY_TF32=0
{
  date -u +"date: %Y-%m-%dT%H:%M:%SZ"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | sed 's/^/card: /'
  python -c "import numpy, cupy; print('numpy', numpy.__version__, 'cupy', cupy.__version__)" 2>&1
  python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" 2>&1
} | tee "$out/env.txt"
timeout 240 python -m pytest -m gpu -v -rs tests/test_gpu.py 2>&1 | tee "$out/pytest-gpu.txt"
timeout 240 python -m pytest -q -rs -p no:cacheprovider 2>&1 | tail -5 | tee "$out/pytest-all.txt"
timeout 120 python -m gpumlp train --device gpu --no-progress --out "$out/digits" 2>&1 | tail -3 | tee "$out/train-gpu.txt"
timeout 240 python scripts/bench.py --device gpu --repeats 20 --json "$out/bench-gpu.json" 2>&1 | tee "$out/bench-gpu.txt"
