#!/usr/bin/env bash
# On the GPU machine, from the repository root: run the GPU runner over bundles compiled here,
# step by step, each within its own time limit, for a session with little device time left.
#   bash bench/run_gpu_steps.sh OUT STEP=DIR:REPEATS:SECONDS ...
# Each STEP appends one report per kernel to OUT/STEP.jsonl (REPEATS 0: check only) and goes
# on in a fresh process after a crashed or hung kernel, until SECONDS have passed. `sass=DIR`
# counts the HGMMA instructions of DIR's cubins; `sanitize=SIDECAR` runs compute-sanitizer's
# memcheck and racecheck on one kernel (check only).
set -u
OUT=$1
shift
PY=${PY:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export XLA_PYTHON_CLIENT_PREALLOCATE=false
exec > >(tee -a "$OUT/session.log") 2>&1
T0=$(date +%s)
stamp() { echo "== $(($(date +%s) - T0)) s: $*"; }
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,driver_version --format=csv
for spec in "$@"; do
  step=${spec%%=*}
  rest=${spec#*=}
  case $step in
    sass)
      stamp "SASS of $rest"
      for c in "$rest"/*.cubin; do
        echo "$(basename "$c"): HGMMA $(cuobjdump --dump-sass "$c" 2>/dev/null | grep -c HGMMA)"
      done | tee -a "$OUT/sass.txt"
      ;;
    sanitize)
      stamp "compute-sanitizer on $rest"
      for tool in memcheck racecheck; do
        echo "--- $tool $rest"
        timeout 60 compute-sanitizer --tool "$tool" $PY -m napkin_mlir.backends.gpu.runner "$rest" --repeats 0 2>&1 | tail -3
      done | tee -a "$OUT/sanitizer.txt"
      ;;
    *)
      IFS=: read -r dir repeats seconds <<<"$rest"
      stamp "$step: $dir, repeats $repeats, at most $seconds s"
      end=$(($(date +%s) + seconds))
      while [ "$(date +%s)" -lt "$end" ]; do
        timeout $((end - $(date +%s))) $PY -m napkin_mlir.backends.gpu.runner "$dir" --jsonl "$OUT/$step.jsonl" \
          --repeats "$repeats" --warmup 3 --kernel-timeout 30
        grep -q all_done "$OUT/$step.jsonl" 2>/dev/null && break
        stamp "$step ended early; going on in a fresh process"
      done
      ;;
  esac
done
stamp done
