#!/usr/bin/env bash
# The one prepared GPU check, under 6 minutes in all (its timeouts add up to 330 s).
# Run it on a CUDA machine from the source tree, e.g. through the device tool:
#   bash scripts/gpu_check.sh            (results land in $OUT, or ./gpu-check)
# A GPU machine that reaches no package registry may lack gpumlp's pure-Python
# dependencies: prepare them here with
#   pip install --no-deps --target .gpu-deps tqdm threadpoolctl array-api-strict
# and carry .gpu-deps along; this script puts it on PYTHONPATH when present.
# Steps: the gpu tests (CuPy float32 against the NumPy float64 oracle, the compiled
# kernels against their twins, no memory taken in a steady step), the CPU suite, the
# digits on the GPU, the benchmark with the twins (the default) and with the compiled
# kernels (GPUMLP_FUSED=1), and TF32's speed and error.  Card, versions and date first.
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
  python -c "import tqdm, threadpoolctl, array_api_strict" 2>/dev/null && echo "pure-Python deps: present" ||
    echo "MISSING pure-Python deps: run here 'pip install --no-deps --target .gpu-deps tqdm threadpoolctl array-api-strict' and carry .gpu-deps"
} | tee "$out/env.txt"
# (7 files come back in $OUT: the device tool returns at most 8)
{
  timeout 70 python -m pytest -m gpu -q -rs -p no:cacheprovider tests/test_gpu.py 2>&1 | tail -25
  timeout 70 python -m pytest -q -rs -p no:cacheprovider -m "not gpu" 2>&1 | tail -4
  timeout 30 python -m gpumlp train --device gpu --no-progress --out "$(mktemp -d)" 2>&1 | tail -2
} | tee "$out/tests.txt"
nets='784,1024,1024,10;64,256,10'
timeout 70 python scripts/bench.py --device gpu --nets "$nets" --batch-sizes 64,256,1024,16384 \
  --json "$out/bench-gpu-twins.json" 2>&1 | tee "$out/bench-gpu-twins.txt"
GPUMLP_FUSED=1 timeout 60 python scripts/bench.py --device gpu --nets "$nets" --batch-sizes 64,256,1024,16384 \
  --json "$out/bench-gpu-fused.json" 2>&1 | tee "$out/bench-gpu-fused.txt"
GPUMLP_FUSED=1 timeout 30 python scripts/bench.py --device gpu --tf32 --nets "784,1024,1024,10" \
  --batch-sizes 1024,16384 --rounds 10 2>&1 | tee "$out/bench-gpu-tf32.txt"
