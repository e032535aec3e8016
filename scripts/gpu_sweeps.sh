#!/usr/bin/env bash
# Both batch-size sweeps on a CUDA machine, after scripts/gpu_check.sh has passed there.
#
#   bash scripts/gpu_sweeps.sh [--quick]       (from anywhere; it runs in the source tree)
#
# Timeouts add up to 170 s: pre-flight 45 (scripts/gpu_preflight.py, as gpu_check.sh's:
# if it fails nothing else runs and the script exits 2), the step sweep 50, the training
# sweep 60, packing 15.  Every step runs whatever the one before did (after the pre-flight);
# then one line per step (name, status, exit code, seconds), and exit 1 if any failed.
# Files, in $OUT (default ./gpu-sweeps), 2 in all (the device tool returns at most 8):
#   sweeps.log      everything printed
#   sweeps.tar.gz   the sweeps' CSV and JSON (a plot where matplotlib is there, else draw it
#                   here with: python scripts/sweep_batch_sizes.py --replot DIR/sweep.json)
# --quick: a small net, two batch sizes, one seed, two epochs (the CPU rehearsal's size).
# Environment: PYTHON (default python3), OUT.  Missing pure-Python packages come from
# .gpu-deps, carried along as for gpu_check.sh; nothing is installed here.
set -uo pipefail

. "$(dirname "${BASH_SOURCE[0]}")/gpu_common.sh"
gpu_setup gpu_sweeps.sh gpu-sweeps "$@"
work=$(mktemp -d) || exit 2
trap 'rm -rf "$work"' EXIT
rm -f "$out/sweeps.log" "$out/sweeps.tar.gz" "$out/sweeps.txt"
mkdir -p "$work/results"

if [ "$quick" = 1 ]; then
  mode=quick
  step_args=(--sizes 64,32,10 --batch-sizes 16,64 --rounds 2 --warmup 1)
  train_args=(--hidden 32 --batch-sizes 32,64 --seeds 1 --max-epochs 2)
else
  mode=full
  step_args=(--noise-scale --rounds 5 --batch-sizes 64,256,1024,4096,16384)
  train_args=(--seeds 2 --max-epochs 20)
fi
declare -A limit=([preflight]=45 [step-sweep]=50 [train-sweep]=60 [pack]=15)

names=(); statuses=(); codes=(); secs=()
rc=0
step() {     # NAME COMMAND...: runs it under the step's timeout and records it
  local name=$1 t0 status; shift
  echo
  echo "=== step $name (timeout ${limit[$name]} s): $*"
  t0=$(now)
  timeout -k 10 "${limit[$name]}" "$@" </dev/null 2>&1
  rc=$?
  case $rc in 0) status=ok ;; 124|137) status=timeout; echo "=== step $name: TIMED OUT" ;; *) status=failed ;; esac
  names+=("$name"); statuses+=("$status"); codes+=("$rc")
  secs+=("$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')")
}

main() {
  echo "gpu_sweeps.sh ($mode mode) in $root; results in $out; python: $PY"
  step preflight "$PY" scripts/gpu_preflight.py
  if [ "$rc" != 0 ]; then
    echo "gpu_sweeps: PRE-FLIGHT FAILED (exit $rc): see its last line above; nothing else ran"
    return 2
  fi
  step step-sweep "$PY" scripts/sweep_batch_sizes.py --device gpu "${step_args[@]}" --out "$work/results/step-gpu"
  step train-sweep "$PY" scripts/sweep_batch_sizes.py --device gpu --mode train "${train_args[@]}" \
    --out "$work/results/train-gpu"
  step pack tar -czf "$out/sweeps.tar.gz" -C "$work/results" .
  gpu_summary "$mode"
  echo "files in $out: $(ls -A "$out" | tr '\n' ' ')(the device tool returns at most 8)"
  if [ "${#failed[@]}" -gt 0 ]; then
    echo "gpu_sweeps: FAILED: ${failed[*]}"
    return 1
  fi
  echo "gpu_sweeps: all ${#names[@]} steps ok"
}

main 2>&1 | tee "$out/sweeps.log"
exit "${PIPESTATUS[0]}"
