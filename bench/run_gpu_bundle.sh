#!/usr/bin/env bash
# On the GPU machine, from the repository root: run what bench/prepare_gpu_bundle.sh compiled.
#   bash bench/run_gpu_bundle.sh [DIR [OUT]]      (DIR default out/bundle, OUT default $OUT)
# Order: every kernel's correctness first (no timing), the jax.jit route's tests, then the
# timings (the sweep beside cuDNN, XLA and PyTorch; the variants beside XLA's compilation of
# the same diagram), then compute-sanitizer on two small kernels. Each runner step appends to
# OUT/<step>.jsonl and resumes after a crashed or hung kernel in a fresh process.
set -u
DIR=${1:-out/bundle}
OUT=${2:-${OUT:-/tmp/napkin-gpu}}
PY=${PY:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export XLA_PYTHON_CLIENT_PREALLOCATE=false
exec > >(tee -a "$OUT/session.log") 2>&1
T0=$(date +%s)
stamp() { echo "== $(($(date +%s) - T0)) s: $*"; }

stamp machine
{
  nvidia-smi
  nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,power.draw,temperature.gpu --format=csv
  $PY -c "import torch, jax, cupy; print('torch', torch.__version__, 'jax', jax.__version__, 'cupy', cupy.__version__, jax.devices())"
} > "$OUT/machine.txt" 2>&1
head -20 "$OUT/machine.txt"

# runner STEP SIDECARS REPEATS KERNEL_TIMEOUT TOTAL_TIMEOUT
runner() {
  for try in 1 2 3 4; do
    timeout "$5" $PY -m napkin_mlir.backends.gpu.runner "$2" --jsonl "$OUT/$1.jsonl" --repeats "$3" \
      --warmup 3 --kernel-timeout "$4"
    grep -q all_done "$OUT/$1.jsonl" 2>/dev/null && return 0
    stamp "$1: try $try ended early; going on in a fresh process"
  done
}

stamp "check the variants"; runner check-variants "$DIR/variants" 0 30 120
stamp "check the backward kernels"; runner check-grad "$DIR/grad" 0 30 120
stamp "check the sweep"; runner check-sweep "$DIR/sweep" 0 60 200
stamp "the jax.jit route"
NAPKIN_JAX_CACHE_DIR="$DIR/jaxcache" timeout 120 $PY -m pytest -q -p no:cacheprovider -rs \
  test/python/test_jax_gpu.py > "$OUT/jax-gpu.txt" 2>&1
tail -5 "$OUT/jax-gpu.txt"
stamp "time the sweep"; runner sweep "$DIR/sweep" 10 60 200
stamp "time the variants"; runner variants "$DIR/variants" 10 30 100
stamp "time the backward kernels"; runner grad "$DIR/grad" 10 30 100
stamp "compute-sanitizer"
{
  small_tc=$(ls "$DIR"/variants/softmax_attention_by_hand.cubin.json)
  small_simt=$(ls "$DIR"/variants/softcap_attention.cubin.json)
  for tool in memcheck racecheck; do
    for k in "$small_tc" "$small_simt"; do
      echo "--- $tool $k"
      timeout 60 compute-sanitizer --tool "$tool" \
        $PY -m napkin_mlir.backends.gpu.runner "$k" --repeats 0 2>&1 | tail -6
    done
  done
} > "$OUT/sanitizer.txt" 2>&1
cat "$OUT/sanitizer.txt"
stamp done
