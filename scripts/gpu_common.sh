# Sourced by scripts/gpu_check.sh and scripts/gpu_sweeps.sh: what the two one-shot GPU
# scripts share.  `gpu_setup NAME DEFAULT_OUT "$@"` reads --quick and --help (the caller's
# header comment is its help), then sets PY (${PYTHON:-python3}), root (the source tree, made
# the working folder), out (${OUT:-DEFAULT_OUT}, made and absolute), quick (0 or 1), and the
# environment: the tree and .gpu-deps (when present) on PYTHONPATH, unbuffered output, TF32
# off.  `now` is a timestamp in seconds; `gpu_summary MODE` prints one line per recorded step
# (the arrays names, statuses, codes, secs) and sets `failed` to the steps not ok.

gpu_setup() {
  local name=$1 default_out=$2 arg script=${BASH_SOURCE[1]}
  shift 2
  quick=0
  for arg in "$@"; do
    case $arg in
      --quick) quick=1 ;;
      -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$script"; exit 0 ;;
      *) echo "$name: unknown argument '$arg' (try --help)" >&2; exit 64 ;;
    esac
  done
  PY=${PYTHON:-python3}
  root=$(cd "$(dirname "$script")/.." && pwd)
  out=${OUT:-$default_out}
  mkdir -p "$out" && out=$(cd "$out" && pwd) || { echo "$name: cannot make $out" >&2; exit 2; }
  cd "$root" || exit 2
  local deps=""; [ -d .gpu-deps ] && deps=":$PWD/.gpu-deps"
  export PYTHONPATH="$PWD$deps${PYTHONPATH:+:$PYTHONPATH}" CUPY_TF32=0 PYTHONUNBUFFERED=1
}

now() { echo "${EPOCHREALTIME:-$(date +%s.%N)}"; }

gpu_summary() {
  local i
  failed=()
  echo
  echo "=== summary ($1 mode)"
  for i in "${!names[@]}"; do
    printf '%-12s %-8s exit %-4s %8s s\n' "${names[$i]}" "${statuses[$i]}" "${codes[$i]}" "${secs[$i]}"
    [ "${statuses[$i]}" = ok ] || failed+=("${names[$i]}")
  done
}
