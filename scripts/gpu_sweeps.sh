#!/usr/bin/env bash
# Both batch-size sweeps on a CUDA machine, under 2 minutes (timeouts add up to 110 s).
# Run it after scripts/gpu_check.sh has passed there, from the source tree, with the
# pure-Python dependencies carried as for gpu_check.sh (.gpu-deps: tqdm, threadpoolctl).
# Everything comes back as two files in $OUT (or ./gpu-sweeps): sweeps.txt (what the
# sweeps printed) and sweeps.tar.gz (their CSV and JSON; a plot where matplotlib is
# there, else draw it here with: python scripts/sweep_batch_sizes.py --replot DIR/sweep.json).
set -uo pipefail
out="${OUT:-gpu-sweeps}"
mkdir -p "$out"
deps=""; [ -d .gpu-deps ] && deps=":$PWD/.gpu-deps"
export PYTHONPATH="$PWD$deps${PYTHONPATH:+:$PYTHONPATH}" CUPY_TF32=0 PYTHONUNBUFFERED=1
work=$(mktemp -d)
{
  date -u +"date: %Y-%m-%dT%H:%M:%SZ"
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>&1 | sed 's/^/card: /'
  timeout 50 python scripts/sweep_batch_sizes.py --device gpu --noise-scale --rounds 5 \
    --batch-sizes 64,256,1024,4096,16384 --out "$work/step-gpu" 2>&1
  timeout 60 python scripts/sweep_batch_sizes.py --device gpu --mode train --seeds 2 --max-epochs 20 \
    --out "$work/train-gpu" 2>&1
} | tee "$out/sweeps.txt"
tar -czf "$out/sweeps.tar.gz" -C "$work" .
