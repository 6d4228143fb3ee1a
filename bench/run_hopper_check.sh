#!/usr/bin/env bash
# On the GPU machine (an H100 or H200), from the repository root: run what
# bench/prepare_hopper_check.sh compiled (the wgmma kernels of issue 13).
#   bash bench/run_hopper_check.sh [DIR [OUT]]      (DIR default out/hopper, OUT default $OUT)
# Order: the SASS (HGMMA count per cubin, when cuobjdump is found), every kernel's correctness
# (no timing: OUT/hopper-check.jsonl), then the timings (OUT/hopper-time.jsonl: the matmuls
# beside XLA's compilation of the same diagram, the attention kernels beside cuDNN, XLA and
# PyTorch), compute-sanitizer on two small kernels, and a summary line per kernel. A crashed
# or hung kernel ends its process; a fresh one goes on with the rest (the runner's --jsonl
# resumes). Typically a few minutes (each step ends within its timeouts below).
set -u
DIR=${1:-out/hopper}
OUT=${2:-${OUT:-/tmp/napkin-hopper}}
PY=${PY:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export XLA_PYTHON_CLIENT_PREALLOCATE=false
exec > >(tee -a "$OUT/hopper-session.log") 2>&1
T0=$(date +%s)
stamp() { echo "== $(($(date +%s) - T0)) s: $*"; }

stamp machine
{
  nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,driver_version --format=csv
  $PY -c "import jax, cupy; print('jax', jax.__version__, 'cupy', cupy.__version__, jax.devices())"
} > "$OUT/hopper-machine.txt" 2>&1
cat "$OUT/hopper-machine.txt"

stamp sass
CUOBJDUMP=$(command -v cuobjdump || ls /usr/local/cuda*/bin/cuobjdump 2>/dev/null | head -1 || true)
if [ -n "$CUOBJDUMP" ]; then
  for c in "$DIR"/*.cubin; do
    "$CUOBJDUMP" --dump-sass "$c" > "$OUT/$(basename "$c" .cubin).sass" 2>&1
    echo "$(basename "$c"): HGMMA $(grep -c HGMMA "$OUT/$(basename "$c" .cubin).sass")"
  done | tee "$OUT/hopper-hgmma.txt"
else
  echo "cuobjdump not found: no SASS"
fi

# runner STEP REPEATS KERNEL_TIMEOUT TOTAL_TIMEOUT
runner() {
  for try in 1 2 3 4 5 6 7 8; do
    timeout "$4" $PY -m napkin_mlir.backends.gpu.runner "$DIR" --jsonl "$OUT/$1.jsonl" --repeats "$2" \
      --warmup 3 --kernel-timeout "$3"
    grep -q all_done "$OUT/$1.jsonl" 2>/dev/null && return 0
    stamp "$1: try $try ended early; going on in a fresh process"
  done
}

stamp "check (no timing)"; runner hopper-check 0 30 240
stamp "time"; runner hopper-time 10 60 300
stamp "compute-sanitizer (memcheck, racecheck) on two small kernels"
if command -v compute-sanitizer > /dev/null; then
  for k in "$DIR"/att-f16-d128-causal-q130x70.cubin.json "$DIR"/mm-f32-n128-m128n256k256.cubin.json; do
    [ -e "$k" ] || continue
    for tool in memcheck racecheck; do
      echo "--- $tool $k"
      timeout 90 compute-sanitizer --tool "$tool" $PY -m napkin_mlir.backends.gpu.runner "$k" --repeats 0 2>&1 | tail -4
    done
  done > "$OUT/hopper-sanitizer.txt" 2>&1
  cat "$OUT/hopper-sanitizer.txt"
else
  echo "compute-sanitizer not found"
fi
stamp "summary"
$PY - "$OUT" <<'PYEOF'
import json
import sys
from pathlib import Path

for step in ("hopper-check", "hopper-time"):
    path = Path(sys.argv[1]) / f"{step}.jsonl"
    if not path.exists():
        continue
    for line in path.read_text().splitlines():
        r = json.loads(line)
        if "passed" not in r:
            continue
        name = Path(r.get("sidecar", "?")).name
        verdict = "PASS" if r["passed"] else ("CRASH" if r.get("crashed") else "FAIL")
        errors = r.get("errors", {})
        flat = {k: v for e in errors.values() if isinstance(e, dict) for k, v in e.items()}
        extra = r.get("error") or flat or errors
        tf = {k: round(v, 1) for k, v in r.get("tflops", {}).items()}
        ratio = {k: round(v, 2) for k, v in r.items() if k.startswith("ratio_to_")}
        print(f"{step:13} {verdict:5} {name:42} {extra} {'TFLOP/s ' + str(tf) if tf else ''} {ratio or ''}")
PYEOF
stamp done
