#!/usr/bin/env bash
# Here (no GPU needed): compile everything one GPU session runs into DIR (default out/bundle).
#   sweep/     the attention sweep for sm_90a (the model's tiles), preflighted on the emulator
#   variants/  every examples/*.mlir at its own odd sizes and at a larger size, each with its
#              inputs, the interpretation's float64 and same-dtype results, and the
#              interpretation exported for XLA (napkin bench FILE --target gpu --prepare)
#   grad/      the forward-with-residuals and backward kernels of two examples (--grad)
#   jaxcache/  the kernels test/python/test_jax_gpu.py calls inside jax.jit
# Then on the GPU machine: bash bench/run_gpu_bundle.sh DIR (see docs/gpu.md).
set -euo pipefail
DIR=${1:-out/bundle}
NAPKIN=${NAPKIN:-.venv/bin/napkin}
PY=${PY:-.venv/bin/python}
if [ -z "${KEEP_SWEEP:-}" ]; then  # KEEP_SWEEP=1: keep a sweep compiled before
  rm -rf "$DIR"
  $NAPKIN bench attention --target gpu --prepare "$DIR/sweep" --arch sm_90a
fi
rm -rf "$DIR/variants" "$DIR/jaxcache" "$DIR/grad"
mkdir -p "$DIR/variants" "$DIR/grad"
# The larger size of each example, and tiles whose shared memory fits one block (the SIMT
# rule keeps a tile's intermediates in shared memory: the model's tiles for these sizes do not).
ATT="b=1,h=4,q=1000,x=1000,d=64 q=32,x=32"
declare -A LARGE=(
  [bias_attention]=$ATT
  [cross_attention]="b=1,h=4,q=1000,x=1000,d=64,e=96 q=32,x=32"
  [gqa_bias_attention]="b=1,h=2,r=2,q=1000,x=1000,d=64 q=16,x=32"
  [sigmoid_attention]=$ATT
  [sink_attention]=$ATT
  [softcap_attention]=$ATT
  [softmax_attention_by_hand]="b=1,h=4,q=1000,x=1000,d=64 q=64,x=32"
  [layernorm_matmul]="m=1000,k=384,n=256 m=16,k=32"
  [rmsnorm_matmul]="m=1000,k=512,n=256 m=16"
  [swiglu_mlp]="m=1000,k=256,f=1024,n=256 m=16,f=32"
)
for f in examples/*.mlir; do
  name=$(basename "$f" .mlir)
  read -r dims tiles <<<"${LARGE[$name]}"
  $NAPKIN bench "$f" --target gpu --prepare "$DIR/variants" --arch sm_90a
  $NAPKIN bench "$f" --target gpu --prepare "$DIR/variants" --arch sm_90a --dims "$dims" --tile "$tiles"
done
for f in examples/softmax_attention_by_hand.mlir examples/softcap_attention.mlir; do
  $NAPKIN bench "$f" --grad --target gpu --prepare "$DIR/grad" --arch sm_90a
  $NAPKIN bench "$f" --grad --target gpu --prepare "$DIR/grad" --arch sm_90a --dims b=1,h=4,q=1000,x=1000,d=64 --tile q=32,x=32
done
$PY test/python/test_jax_gpu.py "$DIR/jaxcache" sm_90a
rm -f "$DIR"/*/*.ptx
du -sh "$DIR"
