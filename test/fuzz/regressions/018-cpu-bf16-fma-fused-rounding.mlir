// fuzz failure [wrong-result]: output #0 [p=16, a=8, x=2] bf16: rel. Frobenius 8.478e-03 (JAX 3.694e-03), max |err| 8.168e-01 (JAX 2.627e-01); rule: max |err| <= 2 x max(JAX's, half an ulp of max |ref|) + 1e-6 = 5.254e-01
// inputs: napkin_mlir.check.reference.random_inputs(<argument types>, seed=53000443)
// pipeline: builtin.module(napkin-verify,napkin-verify)
// replay: python -m napkin_mlir.fuzz --replay 018-cpu-bf16-fma-fused-rounding.json
module {
  func.func @fuzz53000443(%arg0: tensor<16xbf16, {axes = ["p"]}>, %arg1: tensor<2x8xbf16, {axes = ["x", "a"]}>) -> tensor<16x8x2xbf16, {axes = ["p", "a", "x"]}> attributes {arg_names = ["A0", "A1"]} {
    %0 = "napkin.map"(%arg1) ({
    ^bb0(%arg2: bf16):
      %5 = arith.mulf %arg2, %arg2 : bf16
      %cst = arith.constant 1.000000e+00 : bf16
      %6 = arith.addf %5, %cst : bf16
      %7 = math.rsqrt %6 : bf16
      %8 = math.erf %7 : bf16
      %9 = arith.minimumf %5, %arg2 : bf16
      %10 = math.fma %arg2, %5, %8 : bf16
      gpu.yield %10 : bf16
    }) {operandSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0, 0, 0>} : (tensor<2x8xbf16, {axes = ["x", "a"]}>) -> tensor<2x8xbf16, {axes = ["x", "a"]}>
    %1 = "napkin.contract"(%arg0, %0) : (tensor<16xbf16, {axes = ["p"]}>, tensor<2x8xbf16, {axes = ["x", "a"]}>) -> tensor<16x2x8xf32, {axes = ["p", "x", "a"]}>
    %2 = "napkin.cast"(%1) : (tensor<16x2x8xf32, {axes = ["p", "x", "a"]}>) -> tensor<16x2x8xbf16, {axes = ["p", "x", "a"]}>
    %3 = "napkin.contract"(%2, %0) : (tensor<16x2x8xbf16, {axes = ["p", "x", "a"]}>, tensor<2x8xbf16, {axes = ["x", "a"]}>) -> tensor<16x8x2xf32, {axes = ["p", "a", "x"]}>
    %4 = "napkin.cast"(%3) : (tensor<16x8x2xf32, {axes = ["p", "a", "x"]}>) -> tensor<16x8x2xbf16, {axes = ["p", "a", "x"]}>
    return %4 : tensor<16x8x2xbf16, {axes = ["p", "a", "x"]}>
  }
}
