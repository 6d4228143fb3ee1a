// napkin-cost-analysis: the performance model of a partitioned program, attached to the
// function as napkin.cost (the IR is otherwise unchanged).
// RUN: %napkin-opt %s --split-input-file --napkin-cost-analysis='gpu=a100 warps=4' | filecheck %s
// RUN: %napkin-opt %s --split-input-file --napkin-cost-analysis='gpu=h100 dtype=fp8 print=true' | filecheck %s --check-prefix=PRINT
// RUN: not %napkin-opt %s --split-input-file --napkin-cost-analysis='gpu=b200' 2>&1 | filecheck %s --check-prefix=BAD

// A 256x192 matmul (k=128, f16) in 64x64 groups, k streamed by 32: 12 CTAs.
// SMEM per CTA: (64*32 + 32*64) * 2 B = 8192; H = k*m*n/g_m + k*m*n/g_n + m*n elements:
// (3 + 4) * 32768 + 49152 = 278528 elements = 491520 B; 2*256*192*128 tensor FLOPs.
// CHECK-LABEL: func.func @matmul
// CHECK-SAME:    napkin.cost = {H_L2_elements = "k*m*n/g_m + k*m*n/g_n + m*n", bound = "{{[A-Za-z0-9]+}}"
// CHECK-SAME:    gpu = "a100"
// CHECK-SAME:    l2_bytes = 4.915200e+05 : f64
// CHECK-SAME:    smem_per_cta = 8192 : i64
// CHECK-SAME:    tensor_flops = 0x4168000000000000 : f64
// CHECK:         "napkin.group"
// CHECK:         "napkin.stream"

// PRINT:       gpu h100  dtype fp8
// PRINT:       occupancy: 12 CTAs x 2 warps
// PRINT:       func.func @matmul
// PRINT-SAME:    gpu = "h100"

// BAD: error: {{.*}}unknown GPU 'b200'
func.func @matmul(%A: tensor<256x128xf16, {axes = ["m", "k"], level = "gmem"}>, %B: tensor<128x192xf16, {axes = ["k", "n"], level = "gmem"}>) -> tensor<256x192xf16, {axes = ["m", "n"], level = "gmem"}> {
  %0 = "napkin.group"(%A, %B) ({
  ^bb0(%a: tensor<64x128xf16, {axes = ["m", "k"], level = "gmem"}>, %b: tensor<128x64xf16, {axes = ["k", "n"], level = "gmem"}>, %i: index, %j: index):
    %1 = "napkin.stream"(%a, %b) ({
      %z = "napkin.fill"() {value = 0.0 : f64} : () -> tensor<64x64xf32, {axes = ["m", "n"], level = "reg"}>
      gpu.yield %z : tensor<64x64xf32, {axes = ["m", "n"], level = "reg"}>
    }, {
    ^bb0(%ac: tensor<64x32xf16, {axes = ["m", "k"], level = "gmem"}>, %bc: tensor<32x64xf16, {axes = ["k", "n"], level = "gmem"}>, %k0: index, %acc: tensor<64x64xf32, {axes = ["m", "n"], level = "reg"}>):
      %as = "napkin.transfer"(%ac) : (tensor<64x32xf16, {axes = ["m", "k"], level = "gmem"}>) -> tensor<64x32xf16, {axes = ["m", "k"], level = "smem"}>
      %bs = "napkin.transfer"(%bc) : (tensor<32x64xf16, {axes = ["k", "n"], level = "gmem"}>) -> tensor<32x64xf16, {axes = ["k", "n"], level = "smem"}>
      %p = "napkin.contract"(%as, %bs) : (tensor<64x32xf16, {axes = ["m", "k"], level = "smem"}>, tensor<32x64xf16, {axes = ["k", "n"], level = "smem"}>) -> tensor<64x64xf32, {axes = ["m", "n"], level = "reg"}>
      %s = "napkin.add"(%acc, %p) : (tensor<64x64xf32, {axes = ["m", "n"], level = "reg"}>, tensor<64x64xf32, {axes = ["m", "n"], level = "reg"}>) -> tensor<64x64xf32, {axes = ["m", "n"], level = "reg"}>
      gpu.yield %s : tensor<64x64xf32, {axes = ["m", "n"], level = "reg"}>
    }, {
    ^bb0(%acc: tensor<64x64xf32, {axes = ["m", "n"], level = "reg"}>):
      gpu.yield %acc : tensor<64x64xf32, {axes = ["m", "n"], level = "reg"}>
    }) {axis = "k", size = 32 : i64, operandSegmentSizes = array<i32: 1, 1, 0, 0, 0, 0, 0, 0>, resultSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0, 0, 0>} : (tensor<64x128xf16, {axes = ["m", "k"], level = "gmem"}>, tensor<128x64xf16, {axes = ["k", "n"], level = "gmem"}>) -> tensor<64x64xf32, {axes = ["m", "n"], level = "reg"}>
    %c = "napkin.cast"(%1) : (tensor<64x64xf32, {axes = ["m", "n"], level = "reg"}>) -> tensor<64x64xf16, {axes = ["m", "n"], level = "reg"}>
    %o = "napkin.transfer"(%c) : (tensor<64x64xf16, {axes = ["m", "n"], level = "reg"}>) -> tensor<64x64xf16, {axes = ["m", "n"], level = "gmem"}>
    gpu.yield %o : tensor<64x64xf16, {axes = ["m", "n"], level = "gmem"}>
  }) {axes = ["m", "n"], sizes = array<i64: 64, 64>, level = "grid", operandSegmentSizes = array<i32: 1, 1, 0, 0, 0, 0, 0, 0>, resultSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0, 0, 0>} : (tensor<256x128xf16, {axes = ["m", "k"], level = "gmem"}>, tensor<128x192xf16, {axes = ["k", "n"], level = "gmem"}>) -> tensor<256x192xf16, {axes = ["m", "n"], level = "gmem"}>
  return %0 : tensor<256x192xf16, {axes = ["m", "n"], level = "gmem"}>
}
