#!/usr/bin/env bash
# The one prepared GPU check: a pre-flight, then every step whatever the ones before did.
#
#   bash scripts/gpu_check.sh [--quick]        (from anywhere; it runs in the source tree)
#
# Full mode's timeouts add up to 330 s (5.5 min): pre-flight 45, gpu tests 110, digits
# 30, benchmark with the compiled kernels 50 and with the twins 50, TF32 30, report 15.
# That leaves room for a cold CuPy kernel cache (~100 element-wise kernels at ~0.2 s and
# NVRTC's ~5 s) inside a 15-minute device lease that also pays for the machine's start.
#
# Steps, in order:
#   preflight    scripts/gpu_preflight.py: date, card and driver (nvidia-smi), CUDA runtime
#                and driver, CuPy, NumPy; missing Python packages named, with the exact
#                'pip install --no-deps --target .gpu-deps NAME' to run on a machine that
#                reaches a registry; one GEMM; gpumlp's CUDA module built with NVRTC; one
#                compiled kernel against its twin.  If it fails, nothing else runs: the
#                reason is its last line, and the script exits 2.
#   tests        pytest tests/test_gpu.py (CuPy float32 against the NumPy float64 oracle,
#                compiled kernels against their twins, no memory taken in a steady step).
#                A skipped test counts as a failure: on the GPU machine nothing may skip.
#   train        gpumlp train --device gpu on the digits.
#   bench-fused  scripts/bench.py with the compiled kernels (GPUMLP_FUSED=1)
#   bench-twins  scripts/bench.py with the twins (GPUMLP_FUSED=0)
#   bench-tf32   scripts/bench.py --tf32 (compiled kernels): TF32's speed and gradient error
#   report       scripts/gpu_check_report.py writes gpu-check.json
# Then one line per step (name, status, exit code, seconds) and the exit status: 0 when
# every step passed, 2 when the pre-flight failed, 1 when any later step failed or timed out.
#
# Files, in $OUT (default ./gpu-check), 5 in all (the device tool returns at most 8):
#   gpu-check.log   everything printed, every step in full
#   gpu-check.json  date, card, versions, each step's status and seconds, each gpu test's
#                   outcome (node id, passed/failed/skipped/error, the message), the digits'
#                   test accuracy, the benchmark's ratios (gpumlp/torch, gpumlp/floor,
#                   compiled/twins, TF32/float32)
#   bench-fused.json, bench-twins.json, bench-tf32.json   scripts/bench.py's records
#
# --quick: small nets and batches, 2 epochs, a subset of the gpu tests: the same protocol in
# well under a minute; tests/test_gpu_check_script.py rehearses it on a CPU with a stand-in
# CuPy (tests/standin) and a fake nvidia-smi (tests/fakebin).
#
# Environment: PYTHON (default python3), OUT.  Never installs anything: a GPU machine that
# reaches no registry gets its missing pure-Python packages from .gpu-deps, made beside the
# source tree with 'pip install --no-deps --target .gpu-deps array-api-strict' (and whatever
# else the pre-flight names) and carried along; it goes on PYTHONPATH when present.
set -uo pipefail

. "$(dirname "${BASH_SOURCE[0]}")/gpu_common.sh"
gpu_setup gpu_check.sh gpu-check "$@"
tmp=$(mktemp -d) || exit 2
trap 'rm -rf "$tmp"' EXIT
rm -f "$out/gpu-check.log" "$out/gpu-check.json" "$out/bench-fused.json" "$out/bench-twins.json" \
  "$out/bench-tf32.json"
: >"$tmp/steps.tsv"

if [ "$quick" = 1 ]; then
  mode=quick
  nets='64,32,10'; batches=16,64; rounds=(--rounds 2 --warmup 1)
  tf32_nets='64,32,10'; tf32_batches=64; tf32_rounds=(--rounds 2 --warmup 1)
  train_args=(--epochs 2 --hidden 32)
  # one step test per kernel form, the compiled kernels against their twins, a steady step
  test_args=(-k 'relu-ce or compiled_kernel_matches or checkpoint or host_arrays')
else
  mode=full
  nets='784,1024,1024,10;64,256,10'; batches=64,256,1024,16384; rounds=()
  tf32_nets='784,1024,1024,10'; tf32_batches=1024,16384; tf32_rounds=(--rounds 10)
  train_args=()
  test_args=()
fi

# each step's timeout in seconds; full mode's add up to 330
declare -A limit=([preflight]=45 [tests]=110 [train]=30 [bench-fused]=50 [bench-twins]=50 [bench-tf32]=30 [report]=15)


names=(); statuses=(); codes=(); secs=()
record() {   # NAME STATUS CODE SECONDS LIMIT
  names+=("$1"); statuses+=("$2"); codes+=("$3"); secs+=("$4")
  printf '%s\t%s\t%s\t%s\t%s\n' "$@" >>"$tmp/steps.tsv"
}

rc=0; dt=0
step() {     # NAME LIMIT COMMAND...: runs it under timeout; its output to stdout and $tmp/NAME.out
  local name=$1 limit=$2 t0; shift 2
  echo
  echo "=== step $name (timeout ${limit} s): $*"
  t0=$(now)
  timeout -k 10 "$limit" "$@" </dev/null 2>&1 | tee "$tmp/$name.out"
  rc=${PIPESTATUS[0]}
  dt=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')
}

status_of() { case $1 in 0) echo ok ;; 124|137) echo timeout ;; *) echo failed ;; esac; }

finish() {   # NAME: records the step that just ran
  local status; status=$(status_of "$rc")
  [ "$status" = timeout ] && echo "=== step $1: TIMED OUT after ${limit[$1]} s"
  record "$1" "$status" "$rc" "$dt" "${limit[$1]}"
}

main() {
  echo "gpu_check.sh ($mode mode) in $root; results in $out; python: $PY"
  local later=(tests train bench-fused bench-twins bench-tf32) reason="" i

  step preflight "${limit[preflight]}" "$PY" scripts/gpu_preflight.py --json "$tmp/preflight.json"
  finish preflight
  if [ "$rc" != 0 ]; then
    reason=$(sed -n 's/^gpu_preflight: FAILED: //p' "$tmp/preflight.out" | tail -1)
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then reason="the pre-flight did not finish in ${limit[preflight]} s"
    elif [ "$rc" = 127 ]; then reason="'$PY' was not found: set PYTHON to a Python with CuPy"
    elif [ -z "$reason" ]; then reason="exit $rc: $(grep -v '^[[:space:]]*$' "$tmp/preflight.out" | tail -1)"
    fi
    for i in "${later[@]}"; do record "$i" "not run" - - "${limit[$i]}"; done
  else
    step tests "${limit[tests]}" "$PY" -m pytest tests/test_gpu.py -rfEs --tb=short -p no:cacheprovider \
      -o junit_family=xunit1 --junitxml="$tmp/junit.xml" ${test_args[@]+"${test_args[@]}"}
    if [ "$rc" = 0 ] || [ -s "$tmp/junit.xml" ]; then      # nothing may skip on the GPU machine
      "$PY" scripts/gpu_check_report.py --verdict "$tmp/junit.xml" | tee -a "$tmp/tests.out"
      [ "${PIPESTATUS[0]}" = 0 ] || { [ "$rc" = 0 ] && rc=1; }
    fi
    finish tests

    step train "${limit[train]}" "$PY" -m gpumlp train --device gpu --no-progress --out "$tmp/train" \
      ${train_args[@]+"${train_args[@]}"}
    finish train

    step bench-fused "${limit[bench-fused]}" env GPUMLP_FUSED=1 "$PY" scripts/bench.py --device gpu --nets "$nets" \
      --batch-sizes "$batches" ${rounds[@]+"${rounds[@]}"} --json "$out/bench-fused.json"
    finish bench-fused

    step bench-twins "${limit[bench-twins]}" env GPUMLP_FUSED=0 "$PY" scripts/bench.py --device gpu --nets "$nets" \
      --batch-sizes "$batches" ${rounds[@]+"${rounds[@]}"} --json "$out/bench-twins.json"
    finish bench-twins

    step bench-tf32 "${limit[bench-tf32]}" env GPUMLP_FUSED=1 CUPY_TF32=1 "$PY" scripts/bench.py --device gpu --tf32 \
      --nets "$tf32_nets" --batch-sizes "$tf32_batches" "${tf32_rounds[@]}" --json "$out/bench-tf32.json"
    finish bench-tf32
  fi

  step report "${limit[report]}" "$PY" scripts/gpu_check_report.py --out "$out" --steps "$tmp/steps.tsv" --mode "$mode" \
    --preflight "$tmp/preflight.json" --junit "$tmp/junit.xml" --train-metrics "$tmp/train/metrics.json" \
    --bench fused="$out/bench-fused.json" --bench twins="$out/bench-twins.json" --bench tf32="$out/bench-tf32.json"
  finish report

  gpu_summary "$mode"
  if [ -f "$tmp/tests.out" ] && grep -qE '^(FAILED|ERROR) ' "$tmp/tests.out"; then
    echo "failing gpu tests:"
    grep -E '^(FAILED|ERROR) ' "$tmp/tests.out" | head -40
  fi
  local files; files=$(ls -A "$out" | wc -l)
  echo "files in $out: $files (the device tool returns at most 8): $(ls -A "$out" | tr '\n' ' ')"
  [ "$files" -le 8 ] || echo "gpu_check: WARNING: more than 8 files in $out; empty it first"
  if [ -n "$reason" ]; then
    echo "gpu_check: PRE-FLIGHT FAILED: $reason"
    return 2
  elif [ "${#failed[@]}" -gt 0 ]; then
    echo "gpu_check: FAILED: ${failed[*]}"
    return 1
  fi
  echo "gpu_check: all ${#names[@]} steps ok"
  return 0
}

main 2>&1 | tee "$out/gpu-check.log"
exit "${PIPESTATUS[0]}"
